"""16-bit PNG through pypng (pure Python, its own filter and zlib code): the independent reference
for the package's libpng-based reading and writing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import png


def read(path: str | Path) -> np.ndarray:
    """HxWxC uint16 (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) of a 16-bit PNG."""
    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    assert info["bitdepth"] == 16, info
    return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, info["planes"])


def encode(pixels: np.ndarray, exif: bytes | None = None) -> bytes:
    """PNG bytes of HxWxC uint16 pixels; `exif` goes into an eXIf chunk before the image data."""
    h, w, c = pixels.shape
    writer = png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16)
    chunks = list(png.Reader(bytes=_write(writer, pixels)).chunks())
    if exif is not None:
        chunks.insert(1, (b"eXIf", exif))
    buf = io.BytesIO()
    png.write_chunks(buf, chunks)
    return buf.getvalue()


def _write(writer: png.Writer, pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    writer.write(buf, pixels.reshape(pixels.shape[0], -1).tolist())
    return buf.getvalue()
