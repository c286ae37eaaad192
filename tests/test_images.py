import numpy as np
import pytest
from PIL import Image

from osediff_jax.files import images

RNG = np.random.default_rng(0)


def test_rgb_png_roundtrip(tmp_path):
    a = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    images.write_png(tmp_path / "a.png", a)
    d = images.decode(tmp_path / "a.png")
    np.testing.assert_array_equal(d.rgb, a)
    assert d.alpha is None and not d.gray and d.bits == 8
    assert list(tmp_path.iterdir()) == [tmp_path / "a.png"]  # no temporary file left behind


def test_rgba_keeps_alpha(tmp_path):
    a = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    d = images.decode(tmp_path / "a.png")
    np.testing.assert_array_equal(d.rgb, a[..., :3])
    np.testing.assert_array_equal(d.alpha, a[..., 3])
    images.write_png(tmp_path / "b.png", d.rgb, d.alpha)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), a)


def test_gray_jpeg_and_16bit_png(tmp_path):
    g = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.jpg", quality=95)
    d = images.decode(tmp_path / "g.jpg")
    assert d.gray and d.rgb.shape == (8, 8, 3) and d.bits == 8
    np.testing.assert_array_equal(d.rgb[..., 0], d.rgb[..., 2])

    g16 = RNG.integers(0, 65536, (3, 5), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    d = images.decode(tmp_path / "g16.png")
    assert d.bits == 16 and d.gray
    np.testing.assert_array_equal(d.rgb[..., 1], g16)
    images.write_png(tmp_path / "out16.png", d.rgb, gray=True)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out16.png")), g16)
    np.testing.assert_array_equal(images.read_rgb(tmp_path / "g16.png")[..., 0],
                                  np.rint(g16 / 257.0).astype(np.uint8))


def test_exif_orientation_applied(tmp_path):
    a = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert images.read_rgb(tmp_path / "r.jpg").shape == (6, 4, 3)


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"\x89PNG\r\n\x1a\nbroken", "not a readable image")])
def test_bad_files_are_named(tmp_path, content, match):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(images.ImageReadError, match=match) as e:
        images.read_rgb(p)
    assert str(p) in str(e.value)
    with pytest.raises(images.ImageReadError, match="no such file"):
        images.read_rgb(tmp_path / "missing.png")


def test_float_conversions():
    a = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(images.from_float(images.to_float(a)), a)
    b = np.array([[[0, 1000, 65535]]], np.uint16)
    np.testing.assert_array_equal(images.from_float(images.to_float(b), bits=16), b)
