"""Colour fixes against the formulas of the authors' `my_utils/wavelet_color_fix.py` (adain and
wavelet), computed independently here in float64 NumPy."""

import numpy as np
import pytest

from osediff_jax.inference import color_fix

RNG = np.random.default_rng(0)


def _adain(sr, lq):
    out = np.empty_like(sr)
    for b in range(sr.shape[0]):
        for c in range(3):
            s, t = sr[b, :, :, c], lq[b, :, :, c]
            std_s, std_t = np.sqrt(s.var(ddof=1) + 1e-5), np.sqrt(t.var(ddof=1) + 1e-5)
            out[b, :, :, c] = (s - s.mean()) / std_s * std_t + t.mean()
    return np.clip(out, 0, 1)


def _blur(img, r):
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float64) / 16
    p = np.pad(img, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = img.shape[1:3]
    return sum(k[i, j] * p[:, i * r:i * r + h, j * r:j * r + w] for i in range(3) for j in range(3))


def _wavelet(sr, lq):
    def split(x):
        high = np.zeros_like(x)
        for i in range(5):
            low = _blur(x, 2**i)
            high += x - low
            x = low
        return high, x
    return np.clip(split(sr)[0] + split(lq)[1], 0, 1)


def test_adain():
    sr, lq = RNG.uniform(0, 1, (2, 20, 24, 3)), RNG.uniform(0.2, 0.7, (2, 20, 24, 3))
    got = np.asarray(color_fix.adain(sr.astype(np.float32), lq.astype(np.float32)))
    assert np.abs(got - _adain(sr, lq)).max() <= 2e-6


def test_wavelet():
    sr, lq = RNG.uniform(0, 1, (1, 40, 36, 3)), RNG.uniform(0, 1, (1, 40, 36, 3))
    got = np.asarray(color_fix.wavelet(sr.astype(np.float32), lq.astype(np.float32)))
    assert np.abs(got - _wavelet(sr, lq)).max() <= 2e-6


def test_none_and_unknown():
    sr = RNG.uniform(0, 1, (1, 4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(color_fix.apply("none", sr, sr * 0)), sr)
    with pytest.raises(ValueError, match="'histogram'"):
        color_fix.apply("histogram", sr, sr)
