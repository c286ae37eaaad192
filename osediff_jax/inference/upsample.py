"""The generator's input: the LQ image upsampled to the output size, as the authors' release makes
it (`OSEDiff_test.py`: PIL bicubic on the 8-bit image)."""

from __future__ import annotations

import numpy as np

from osediff_jax.data import resize
from osediff_jax.files.images import to_float


def upsample(pixels: np.ndarray, scale: int) -> np.ndarray:
    """HxWxC (C = 1 or 3) uint8/uint16 -> (scale H)x(scale W)xC float32 in [0, 1], PIL bicubic: on
    the 8-bit image itself as the authors do, in float ('F' mode, per channel) for 16-bit.

    Inside jit, from float pixels, `osediff_jax.data.resize.pil_bicubic` computes the float path."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    size = (pixels.shape[0] * scale, pixels.shape[1] * scale)
    if pixels.dtype == np.uint8:
        return to_float(resize.pil_bicubic_8bit(pixels, size))
    if pixels.dtype != np.uint16:
        raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    return np.clip(resize.pil_bicubic_float(pixels.astype(np.float32), size) / np.float32(65535.0), 0.0, 1.0)
