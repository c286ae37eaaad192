"""NIQE (Mittal et al. 2012) as pyiqa 0.1.10 computes it (its `niqe` metric, the OSEDiff authors'
setting), vectorised over the 96x96 blocks of an image.

Conventions of the reference kept here: luma = YIQ's Y (0.299/0.587/0.114) in float32, times 255,
rounded, then float64; crop to a multiple of 96; local normalisation with a 7x7 Gaussian
(sigma 7/6, replicate padding); AGGD fits on a float32 grid of shape parameters; the second scale
is MATLAB `imresize(x/255, 0.5)` computed in float32; the pristine parameters are rounded to
float32; pseudo-inverse of the pooled covariance.

`niqe_pris_params.npz` holds the pristine multivariate-Gaussian model of the original NIQE release
(Mittal et al., http://live.ece.utexas.edu/research/quality/niqe_release.zip); the file is taken
unchanged from basicsr 1.4.2's source distribution (basicsr/metrics/niqe_pris_params.npz)."""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from scipy.special import gammaln

from osediff_jax.data.resize import imresize_matlab
from osediff_jax.metrics.psnr_ssim import (
    filter_valid,
    gaussian_window,
    weighted_channel_sum,
)

BLOCK = 96
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)
# The reference builds this grid with torch.arange in float32, then uses it in float64 (a few of
# torch's values differ from these by one float32 ulp: immaterial to the features).
_GAM = np.arange(0.2, 10.001, 0.001).astype(np.float32).astype(np.float64)
_R_GAM = np.exp(2 * gammaln(2.0 / _GAM) - (gammaln(1.0 / _GAM) + gammaln(3.0 / _GAM)))
_NORM_WINDOW = gaussian_window(7, 7.0 / 6.0)


@functools.cache
def pristine_params() -> tuple[np.ndarray, np.ndarray]:
    """(mu [36], cov [36, 36]) of the pristine model shipped with the package, rounded to
    float32 as pyiqa does (it casts them to the dtype of the float32 input image)."""
    with resources.files("osediff_jax.metrics").joinpath("niqe_pris_params.npz").open("rb") as f:
        d = np.load(f)
        mu, cov = d["mu_pris_param"].reshape(-1), d["cov_pris_param"]
    return mu.astype(np.float32).astype(np.float64), cov.astype(np.float32).astype(np.float64)


def rgb_to_gray255(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW float64 luma in [0, 255], rounded to integers."""
    return np.round(weighted_channel_sum(img, _GRAY_WEIGHTS) * np.float32(255.0)).astype(np.float64)


def _normalize(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (Eq. 1 of the paper), replicate padding."""
    p = _NORM_WINDOW.shape[0] // 2
    padded = np.pad(img, p, mode="edge")
    mu, sq = filter_valid(np.stack([padded, padded * padded]), _NORM_WINDOW)
    sigma = np.sqrt(np.abs(sq - mu * mu))
    return (img - mu) / (sigma + 1.0)


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    nh, nw = x.shape[0] // size, x.shape[1] // size
    return x[:nh * size, :nw * size].reshape(nh, size, nw, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def _aggd(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fit (alpha, beta_l, beta_r) of each block in b [N, h, w]."""
    sq = b * b
    left, right = b < 0, b > 0
    left_std = np.sqrt((sq * left).sum(axis=(1, 2)) / left.sum(axis=(1, 2)))
    right_std = np.sqrt((sq * right).sum(axis=(1, 2)) / right.sum(axis=(1, 2)))
    g = left_std / right_std
    rhat = np.abs(b).mean(axis=(1, 2)) ** 2 / sq.mean(axis=(1, 2))
    rhatnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    alpha = _GAM[np.abs(_R_GAM[None, :] - rhatnorm[:, None]).argmin(axis=1)]
    ratio = np.sqrt(np.exp(gammaln(1 / alpha) - gammaln(3 / alpha)))
    return alpha, left_std * ratio, right_std * ratio


def _features(b: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of each block in b [N, h, w]."""
    alpha, bl, br = _aggd(b)
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = _aggd(b * np.roll(b, shift, axis=(1, 2)))
        mean = (br - bl) * np.exp(gammaln(2 / alpha) - gammaln(1 / alpha))
        feats += [alpha, mean, bl, br]
    return np.stack(feats, axis=1)


def niqe_gray(gray: np.ndarray) -> float:
    """NIQE of an HxW float64 luma image in [0, 255] holding at least two 96x96 blocks."""
    h, w = gray.shape
    if (h // BLOCK) * (w // BLOCK) < 2:
        # One block gives no covariance (the reference returns NaN).
        raise ValueError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks (e.g. {BLOCK}x{2 * BLOCK} pixels), "
                         f"got {w}x{h} (width x height)")
    img = gray[:h // BLOCK * BLOCK, :w // BLOCK * BLOCK]
    scales = []
    for scale in (1, 2):
        scales.append(_features(_blocks(_normalize(img), BLOCK // scale)))
        if scale == 1:
            img = imresize_matlab(img / 255.0, 0.5).astype(np.float64) * 255.0
    feats = np.concatenate(scales, axis=1)
    mu_p, cov_p = pristine_params()
    mu_d = np.nanmean(feats, axis=0)
    cov_d = np.cov(feats[~np.isnan(feats).any(axis=1)], rowvar=False)
    diff = mu_p - mu_d
    return float(np.sqrt(diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff))


def niqe(img: np.ndarray) -> float:
    """NIQE of an HxWx3 uint8 RGB image (lower is better)."""
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    return niqe_gray(rgb_to_gray255(img))
