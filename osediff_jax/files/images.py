"""Reading and writing images: the one place that decodes files (8/16-bit, alpha, gray, EXIF).

Pillow decodes 8-bit files (the authors' pipeline is PIL's, bit for bit) and reads every header
and EXIF orientation; 16-bit PNG and TIFF pixels, which Pillow reduces to 8 bits when they have
colour, go through imagecodecs (libpng, libtiff), which also writes every 16-bit PNG.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from osediff_jax.files.atomic import write_bytes

# OpenCV's PNG settings (fast zlib level, RLE strategy, Sub filter): a 2048x2048 16-bit RGB photo
# encodes in about 0.3 s instead of 1.7 s at libpng's defaults, for a file within 1% of the size.
_PNG16_FAST = {"level": 1, "strategy": 3, "filter": 16}
# Pillow's default Image.MAX_IMAGE_PIXELS (a 24-bit image of 256 MiB): larger files are refused from
# their header, so that a decompression bomb never gets decoded.
MAX_PIXELS = 89_478_485
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class ImageReadError(ValueError):
    """A file that is not a readable image; the message names the file."""


@dataclasses.dataclass
class Decoded:
    """An image as stored: `rgb` HxWx3 and `alpha` HxW (or None), uint8 or uint16."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool

    @property
    def bits(self) -> int:
        return 16 if self.rgb.dtype == np.uint16 else 8


def _open(path: Path, max_pixels: int) -> tuple[Image.Image, int]:
    """The image as stored, loaded (decoded) by PIL, and its EXIF orientation (1 to 8). The size
    is checked against `max_pixels` from the header, before anything is decoded."""
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        img = Image.open(path)
        if img.width * img.height > max_pixels:
            img.close()
            raise ImageReadError(f"{path}: {img.width}x{img.height} is {img.width * img.height:,} pixels, more than "
                                 f"the limit of {max_pixels:,} (a larger limit: --max-pixels)")
        img.load()
        return img, int(img.getexif().get(_ORIENTATION, 1))
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except Image.DecompressionBombError as e:  # Pillow refuses twice its limit in open(), before our check
        raise ImageReadError(f"{path}: refused as a possible decompression bomb, more than the limit of "
                             f"{max_pixels:,} pixels (a larger limit: --max-pixels); {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from None


_ORIENTATION = 0x0112
# EXIF orientation -> the numpy equivalent of the transpose `ImageOps.exif_transpose` applies.
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """HxW[xC] pixels as stored -> as displayed under EXIF `orientation` (as PIL's exif_transpose)."""
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda x: x)(a))


def _bit_depth(img: Image.Image, path: Path) -> int:
    """Bits per sample as stored (PNG IHDR, TIFF BitsPerSample); 8 for other formats."""
    if img.format == "PNG":
        with open(path, "rb") as f:
            return f.read(25)[24]
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _decode16(path: Path, img: Image.Image, orientation: int) -> Decoded:
    """A 16-bit PNG or TIFF through libpng/libtiff; PIL's mode says whether it is gray."""
    decode = imagecodecs.png_decode if img.format == "PNG" else imagecodecs.tiff_decode
    try:
        a = decode(path.read_bytes())
    except Exception as e:  # imagecodecs raises its own error types per codec
        raise ImageReadError(f"{path}: not a readable 16-bit {img.format} ({e})") from None
    if a.dtype != np.uint16:
        raise ImageReadError(f"{path}: expected 16-bit samples, the decoder gave {a.dtype}")
    a = orient(a if a.ndim == 3 else a[..., None], orientation)
    gray = img.mode in _GRAY_MODES or a.shape[-1] <= 2
    alpha = a[..., -1].copy() if a.shape[-1] in (2, 4) else None
    rgb = np.repeat(a[..., :1], 3, axis=-1) if gray else a[..., :3].copy()
    return Decoded(rgb, alpha, gray)


_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "L", "LA", "1")


def _as16(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, 65535).astype(np.uint16)


def decode(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decodes any PIL-readable image keeping bit depth (8 or 16) and alpha; ImageReadError for
    unreadable files and for images of more than `max_pixels` (checked before decoding)."""
    path = Path(path)
    img, orientation = _open(path, max_pixels)
    if img.format in ("PNG", "TIFF") and _bit_depth(img, path) == 16:
        return _decode16(path, img, orientation)
    # Orientation is part of the image the user sees; the pixel array must follow it.
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "I":  # 32-bit integer TIFF
        g = _as16(np.asarray(img, dtype=np.int64))
        return Decoded(np.repeat(g[..., None], 3, axis=-1), None, True)
    if mode in ("L", "1"):
        g = np.asarray(img.convert("L"))
        return Decoded(np.repeat(g[..., None], 3, axis=-1), None, True)
    if mode == "LA":
        a = np.asarray(img)
        return Decoded(np.repeat(a[..., :1], 3, axis=-1), a[..., 1].copy(), True)
    if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in img.info):
        a = np.asarray(img.convert("RGBA"))
        return Decoded(a[..., :3].copy(), a[..., 3].copy(), False)
    arr = np.asarray(img)
    if arr.dtype == np.float32 and arr.ndim == 2:  # 'F' TIFF: treat as 16-bit gray in [0, 65535]
        g = _as16(np.rint(arr))
        return Decoded(np.repeat(g[..., None], 3, axis=-1), None, True)
    return Decoded(np.asarray(img.convert("RGB")), None, False)


def read_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """HxWx3 uint8 RGB, as PIL's `convert('RGB')` gives it for 8-bit files; 16-bit is scaled down."""
    d = decode(path, max_pixels)
    if d.bits == 16:
        return np.rint(d.rgb.astype(np.float64) / 257.0).astype(np.uint8)
    return d.rgb


def to_float(a: np.ndarray) -> np.ndarray:
    """uint8/uint16 pixels to float32 in [0, 1]."""
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    return a.astype(np.float32) / np.float32(scale)


def from_float(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """float pixels in [0, 1] to rounded uint8 or uint16."""
    hi = 65535.0 if bits == 16 else 255.0
    return np.rint(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * hi).astype(np.uint16 if bits == 16 else np.uint8)


def write_png(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
              gray: bool = False) -> None:
    """Writes a PNG atomically (temporary file, then rename); uint16 input gives a 16-bit PNG."""
    path = Path(path)
    if rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{path}: expected HxWx3 uint8 or uint16 pixels, got {rgb.dtype} {rgb.shape}")
    if rgb.dtype == np.uint16:
        # PIL has no 16-bit colour PNG writer; libpng writes every 16-bit case.
        planes = [rgb[..., :1] if gray else rgb] + ([] if alpha is None else [alpha[..., None].astype(np.uint16)])
        data = imagecodecs.png_encode(np.concatenate(planes, -1), **_PNG16_FAST)
    else:
        if gray:
            img = Image.fromarray(rgb[..., 0], "L") if alpha is None else Image.fromarray(
                np.stack([rgb[..., 0], alpha], -1), "LA")
        else:
            img = Image.fromarray(rgb, "RGB") if alpha is None else Image.fromarray(
                np.concatenate([rgb, alpha[..., None]], -1), "RGBA")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    write_bytes(path, data)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a directory")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
