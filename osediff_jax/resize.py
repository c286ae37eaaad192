"""Resizing, each function matching one reference resampler exactly."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _matlab_cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return (near + far).astype(x.dtype)


def _matlab_taps(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and float32 weights, both [taps, n_out], of MATLAB `imresize` bicubic along
    one axis, built as pyiqa's torch port does it (float32 positions, kernel widened by 1/scale
    when shrinking, weights normalised per output, symmetric edge padding folded into indices)."""
    f32 = np.float32
    aa = scale < 1
    width = (math.ceil(4 / scale) if aa else 4) + 2
    pos = np.linspace(0, n_out - 1, n_out, dtype=f32)
    pos = (pos + f32(0.5)) / f32(scale) - f32(0.5)
    base = np.floor(pos) - f32(width // 2) + f32(1)
    dist = pos - base
    taps = (dist[None, :] - np.arange(width, dtype=f32)[:, None]) * f32(scale if aa else 1.0)
    w = _matlab_cubic(taps)
    w = w / w.sum(axis=0, keepdims=True)
    idx = base.astype(np.int64)[None, :] + np.arange(width)[:, None]
    # MATLAB's symmetric padding repeats the edge sample: [a, a, b, c, d, d].
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
    return idx, w


def _resize_axis(x: np.ndarray, axis: int, scale: float) -> np.ndarray:
    x = np.moveaxis(x, axis, 0)
    idx, w = _matlab_taps(x.shape[0], math.ceil(x.shape[0] * scale), scale)
    w = w.reshape(w.shape + (1,) * (x.ndim - 1))
    # Tap by tap, in the reference's order: the float32 sums then agree bit for bit.
    out = x[idx[0]] * w[0]
    for k in range(1, idx.shape[0]):
        out = out + x[idx[k]] * w[k]
    return np.moveaxis(out, 0, axis)


def imresize_matlab(x: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(x, scale)` (bicubic, antialiased) of [..., H, W] arrays, in float32 like
    pyiqa 0.1.10 (which casts every input to float32); returns float32 of size ceil(H*scale)."""
    x = np.asarray(x, np.float32)
    return _resize_axis(_resize_axis(x, -2, scale), -1, scale)


def pil_bicubic_float(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each channel of an HxWxC array resized as a float32 PIL 'F' image with BICUBIC to
    `size` = (height, width): clean-fid's (and pyiqa's FID) resize."""
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c], np.float32)).resize(
        (size[1], size[0]), resample=Image.BICUBIC)) for c in range(x.shape[-1])]
    return np.stack(out, axis=-1)
