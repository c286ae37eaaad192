"""16-bit PNG and TIFF reading and writing (libpng/libtiff through imagecodecs) against independent
implementations: pypng for PNG, OpenCV's TIFF writer, PIL for EXIF orientation."""

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from osediff_jax.files import images
from tests.references import png as png_ref

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_read_matches_pypng(tmp_path, channels):
    a = RNG.integers(0, 65536, (11, 9, channels), dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(png_ref.encode(a))
    d = images.decode(tmp_path / "a.png")
    assert d.bits == 16 and d.gray == (channels <= 2)
    np.testing.assert_array_equal(d.rgb, np.repeat(a[..., :1], 3, -1) if channels <= 2 else a[..., :3])
    if channels in (2, 4):
        np.testing.assert_array_equal(d.alpha, a[..., -1])
    else:
        assert d.alpha is None


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_written_png_is_read_by_pypng(tmp_path, channels):
    a = RNG.integers(0, 65536, (7, 13, channels), dtype=np.uint16)
    gray = channels <= 2
    rgb = np.repeat(a[..., :1], 3, -1) if gray else a[..., :3]
    images.write_png(tmp_path / "e.png", rgb, a[..., -1] if channels in (2, 4) else None, gray=gray)
    np.testing.assert_array_equal(png_ref.read(tmp_path / "e.png"), a)
    assert [p.name for p in tmp_path.iterdir()] == ["e.png"]  # no temporary file left behind


def test_16bit_rgb_tiff_keeps_16_bits(tmp_path):
    # Pillow reads this file as 8-bit RGB; OpenCV (libtiff, its own wrapper) writes it.
    a = RNG.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "t.tif"), a[..., ::-1])
    d = images.decode(tmp_path / "t.tif")
    assert d.bits == 16 and not d.gray and d.alpha is None
    np.testing.assert_array_equal(d.rgb, a)


def test_bad_16bit_png_is_named(tmp_path):
    data = bytearray(png_ref.encode(RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16)))
    data[-20] ^= 0xFF  # inside IDAT: the CRC no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(images.ImageReadError, match="bad.png"):
        images.decode(tmp_path / "bad.png")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil(tmp_path, orientation):
    a = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "e.png", exif=exif)
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "e.png")))
    assert want.shape[:2] == ((6, 4) if orientation >= 5 else (4, 6))
    np.testing.assert_array_equal(images.orient(a, orientation), want)
    np.testing.assert_array_equal(images.decode(tmp_path / "e.png").rgb, want)

    # A 16-bit colour PNG carrying the orientation in its eXIf chunk is turned the same way.
    raw = exif.tobytes()
    raw = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    (tmp_path / "o.png").write_bytes(png_ref.encode(a.astype(np.uint16) * 257, exif=raw))
    np.testing.assert_array_equal(images.decode(tmp_path / "o.png").rgb, want.astype(np.uint16) * 257)
