"""Colour correction of the SR output against the upsampled LQ (NHWC, values in [0, 1])."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("adain", "wavelet", "none")
# NumPy, not jnp: a jnp array at import would start the XLA backend before the train command can call
# jax.distributed.initialize().
_BLUR = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], np.float32) / 16.0


def adain(sr: jax.Array, lq: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Per image and channel: (sr - mean_sr) / std_sr * std_lq + mean_lq, std = sqrt(unbiased var + eps)."""
    def stats(x):
        mean = x.mean(axis=(1, 2), keepdims=True)
        var = x.var(axis=(1, 2), keepdims=True, ddof=1)
        return mean, jnp.sqrt(var + eps)

    m_sr, s_sr = stats(sr.astype(jnp.float32))
    m_lq, s_lq = stats(lq.astype(jnp.float32))
    return jnp.clip((sr - m_sr) / s_sr * s_lq + m_lq, 0.0, 1.0)


def _blur(x: jax.Array, radius: int) -> jax.Array:
    """3x3 binomial blur with dilation `radius` and replicate padding, per channel."""
    c = x.shape[-1]
    x = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    kernel = jnp.tile(_BLUR[:, :, None, None], (1, 1, 1, c))
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", rhs_dilation=(radius, radius),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
                                        precision=jax.lax.Precision.HIGHEST)


def _decompose(x: jax.Array, levels: int = 5) -> tuple[jax.Array, jax.Array]:
    high = jnp.zeros_like(x)
    for i in range(levels):
        low = _blur(x, 2**i)
        high = high + (x - low)
        x = low
    return high, x


def wavelet(sr: jax.Array, lq: jax.Array) -> jax.Array:
    """High frequencies (5 dilated-blur levels) of SR plus the final low frequency of the LQ."""
    high, _ = _decompose(sr.astype(jnp.float32))
    _, low = _decompose(lq.astype(jnp.float32))
    return jnp.clip(high + low, 0.0, 1.0)


def check(method: str) -> None:
    """ValueError unless `method` is one of METHODS."""
    if method not in METHODS:
        raise ValueError(f"color fix {method!r} is not supported; expected one of {METHODS}")


def apply(method: str, sr: jax.Array, lq: jax.Array) -> jax.Array:
    check(method)
    if method == "adain":
        return adain(sr, lq)
    if method == "wavelet":
        return wavelet(sr, lq)
    return sr
