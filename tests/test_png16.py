"""16-bit PNG reading and writing against OpenCV's libpng, and EXIF orientation against PIL."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from osediff_jax import imageio, png16

RNG = np.random.default_rng(0)
COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def filtered_png(a: np.ndarray, kinds: list[int], exif: bytes | None = None) -> bytes:
    """A 16-bit PNG whose row y uses filter kinds[y] (the forward filters of the PNG spec, computed
    on the original bytes, so independently of the decoder's sequential reconstruction)."""
    h, w, c = a.shape
    bpp = 2 * c
    cur = a.astype(">u2").reshape(h, w * c).view(np.uint8).astype(np.int32)
    up = np.vstack([np.zeros_like(cur[:1]), cur[:-1]])
    left = np.pad(cur, ((0, 0), (bpp, 0)))[:, :-bpp]
    upleft = np.pad(up, ((0, 0), (bpp, 0)))[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    pred = {0: 0 * cur, 1: left, 2: up, 3: (left + up) // 2, 4: paeth}
    body = np.stack([np.concatenate([[k], (cur[y] - pred[k][y]) % 256]) for y, k in enumerate(kinds)])
    ihdr = struct.pack(">IIBBBBB", w, h, 16, COLOUR_TYPE[c], 0, 0, 0)
    return (png16.SIGNATURE + _chunk(b"IHDR", ihdr) + (_chunk(b"eXIf", exif) if exif else b"")
            + _chunk(b"IDAT", zlib.compress(body.astype(np.uint8).tobytes())) + _chunk(b"IEND", b""))


def _cv2_rgb(path) -> np.ndarray:
    b = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return b[..., None] if b.ndim == 2 else np.concatenate([b[..., 2::-1], b[..., 3:]], -1)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_read_every_filter_matches_libpng(tmp_path, channels):
    a = RNG.integers(0, 65536, (11, 9, channels), dtype=np.uint16)
    path = tmp_path / "f.png"
    path.write_bytes(filtered_png(a, [y % 5 for y in range(11)]))
    np.testing.assert_array_equal(png16.read(path), a)
    np.testing.assert_array_equal(_cv2_rgb(path), a)


def test_read_libpng_written_file(tmp_path):
    y, x = np.mgrid[0:40, 0:50]
    a = np.stack([x * 1300, y * 1600, (x * y * 37) % 65536], -1).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "cv.png"), a[..., ::-1])
    np.testing.assert_array_equal(png16.read(tmp_path / "cv.png"), a)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_encode_is_read_by_libpng(tmp_path, channels):
    a = RNG.integers(0, 65536, (7, 13, channels), dtype=np.uint16)
    (tmp_path / "e.png").write_bytes(png16.encode(a))
    np.testing.assert_array_equal(_cv2_rgb(tmp_path / "e.png"), a)


def test_bad_16bit_png_is_named(tmp_path):
    data = bytearray(filtered_png(RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16), [0] * 4))
    data[-20] ^= 0xFF  # inside IDAT: the CRC no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(imageio.ImageReadError, match="bad.png"):
        imageio.decode(tmp_path / "bad.png")


def test_imageio_keeps_16bit_colour_and_alpha(tmp_path):
    a = RNG.integers(0, 65536, (5, 6, 4), dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(filtered_png(a, [4] * 5))
    d = imageio.decode(tmp_path / "a.png")
    assert d.bits == 16 and not d.gray
    np.testing.assert_array_equal(d.rgb, a[..., :3])
    np.testing.assert_array_equal(d.alpha, a[..., 3])
    imageio.write_png(tmp_path / "b.png", d.rgb, d.alpha)
    np.testing.assert_array_equal(_cv2_rgb(tmp_path / "b.png"), a)
    imageio.write_png(tmp_path / "c.png", d.rgb)
    np.testing.assert_array_equal(_cv2_rgb(tmp_path / "c.png"), a[..., :3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]  # no temporary files

    ga = RNG.integers(0, 65536, (3, 4, 2), dtype=np.uint16)
    (tmp_path / "ga.png").write_bytes(filtered_png(ga, [1, 3, 2]))
    d = imageio.decode(tmp_path / "ga.png")
    assert d.gray and d.bits == 16
    np.testing.assert_array_equal(d.rgb, np.repeat(ga[..., :1], 3, -1))
    np.testing.assert_array_equal(d.alpha, ga[..., 1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil(tmp_path, orientation):
    a = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "e.png", exif=exif)
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "e.png")))
    assert want.shape[:2] == ((6, 4) if orientation >= 5 else (4, 6))
    np.testing.assert_array_equal(imageio.orient(a, orientation), want)

    # A 16-bit colour PNG carrying the orientation in its eXIf chunk is turned the same way.
    raw = exif.tobytes()
    raw = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    a16 = a.astype(np.uint16) * 257
    (tmp_path / "o.png").write_bytes(filtered_png(a16, [2] * 4, exif=raw))
    np.testing.assert_array_equal(imageio.decode(tmp_path / "o.png").rgb, want.astype(np.uint16) * 257)

