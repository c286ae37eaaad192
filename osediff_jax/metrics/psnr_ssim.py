"""PSNR and SSIM on the Y channel of YCbCr, as pyiqa 0.1.10's `psnr`/`ssim` with
`test_y_channel=True, color_space='ycbcr'` (the OSEDiff authors' settings).

The colour conversion runs in float32 like the reference (its inputs are float32 tensors), so
that the rounding of Y*255 for SSIM lands on the same integers; the rest is float64."""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], np.float32)


def weighted_channel_sum(img: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_c img[..., c] / 255 * weights[c] in float32, accumulated left to right as torch's
    CPU matmul does: any other order moves some values across the .5 of a later rounding."""
    x = img.astype(np.float32) / np.float32(255.0)
    return (x[..., 0] * weights[0] + x[..., 1] * weights[1]) + x[..., 2] * weights[2]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxW float32 Y of YCbCr (BT.601, MATLAB `rgb2ycbcr`) in [0, 1]."""
    return (weighted_channel_sum(img, _Y_WEIGHTS) + np.float32(16.0)) / np.float32(255.0)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"expected two HxWx3 images of equal size, got {pred.shape} and {gt.shape}")


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB on Y, data range 1, `10 log10(1 / (MSE + 1e-8))`, no border crop."""
    _check_pair(pred, gt)
    d = (rgb_to_y(pred) - rgb_to_y(gt)).astype(np.float64)
    return float(10.0 * np.log10(1.0 / (np.mean(d * d) + 1e-8)))


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """MATLAB `fspecial('gaussian')`, rounded to float32 as the reference stores it."""
    r = (size - 1) / 2.0
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    h /= h.sum()
    return h.astype(np.float32).astype(np.float64)


def filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """'valid' cross-correlation of the last two axes of `x` with a small 2-D window, by FFT in
    float64 (within ~1e-13 relative of the direct sum, 3-6x faster on a 512x512 image)."""
    return fftconvolve(x, win[::-1, ::-1].reshape((1,) * (x.ndim - 2) + win.shape),
                       mode="valid", axes=(-2, -1))


_SSIM_WINDOW = gaussian_window(11, 1.5)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM on round(Y*255) in float64, 11x11 Gaussian (sigma 1.5), valid filtering, no
    downsampling, contrast-structure term clamped at 0 as in pyiqa."""
    _check_pair(pred, gt)
    x = np.round(rgb_to_y(pred) * np.float32(255.0)).astype(np.float64)
    y = np.round(rgb_to_y(gt) * np.float32(255.0)).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2, xx, yy, xy = filter_valid(np.stack([x, y, x * x, y * y, x * y]), _SSIM_WINDOW)
    s1, s2, s12 = xx - mu1 * mu1, yy - mu2 * mu2, xy - mu1 * mu2
    cs = np.maximum((2 * s12 + c2) / (s1 + s2 + c2), 0.0)
    return float(np.mean((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs))
