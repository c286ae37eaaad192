"""Building blocks shared by the UNet and the VAE (diffusers' ResnetBlock2D, samplers, attention).

Submodule names mirror diffusers' state-dict keys with list indices joined by "_"
(`to_out.0` -> `to_out_0`), so that weight conversion is a mechanical mapping (see weights.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.models.attention import dot_product_attention

Dtype = Any


def check_config(config: Mapping[str, Any], spec: Mapping[str, Any], source: str, model: str) -> None:
    """Every key known to `spec` (None: any value, else the tuple of supported values); `_keys` skipped."""
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key not in spec:
            raise ValueError(f"{source}: key {key!r} is not supported by this {model}")
        if spec[key] is not None and value not in spec[key]:
            raise ValueError(f"{source}: {key}={value!r} is not supported; expected one of {spec[key]}")


def conv(features: int, kernel: int, name: str, dtype: Dtype, param_dtype: Dtype, stride: int = 1,
         padding: Any = None) -> nn.Conv:
    pad = kernel // 2 if padding is None else padding
    if isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, name=name,
                   dtype=dtype, param_dtype=param_dtype)


def group_norm(groups: int, eps: float, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.GroupNorm:
    # Statistics are computed in float32 whatever the compute dtype (flax promotes them).
    return nn.GroupNorm(num_groups=groups, epsilon=eps, name=name, dtype=dtype, param_dtype=param_dtype)


class ResnetBlock2D(nn.Module):
    out_channels: int
    groups: int = 32
    eps: float = 1e-5
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        h = nn.silu(group_norm(self.groups, self.eps, "norm1", d, p)(x))
        h = conv(self.out_channels, 3, "conv1", d, p)(h)
        if temb is not None:
            t = nn.Dense(self.out_channels, name="time_emb_proj", dtype=d, param_dtype=p)(nn.silu(temb))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, "norm2", d, p)(h))
        h = conv(self.out_channels, 3, "conv2", d, p)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, "conv_shortcut", d, p, padding=0)(x)
        out = x + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv; `padding=0` is the VAE's asymmetric (0, 1) zero padding."""

    out_channels: int
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((0, 1), (0, 1)) if self.padding == 0 else self.padding
        return conv(self.out_channels, 3, "conv", self.dtype, self.param_dtype, stride=2, padding=pad)(x)


def nearest_resize(x: jax.Array, size: Sequence[int]) -> jax.Array:
    """`F.interpolate(mode="nearest", size=...)` on NHWC: src = min(floor(dst * in/out), in - 1)."""
    out = []
    for axis, n_out in zip((1, 2), size):
        n_in = x.shape[axis]
        if n_out == 2 * n_in:
            idx = np.arange(n_out) // 2
        else:
            scale = np.float32(n_in) / np.float32(n_out)
            idx = np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)
        out.append(idx)
    return x[:, out[0]][:, :, out[1]]


class Upsample2D(nn.Module):
    out_channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, size: Sequence[int] | None = None) -> jax.Array:
        size = (2 * x.shape[1], 2 * x.shape[2]) if size is None else size
        return conv(self.out_channels, 3, "conv", self.dtype, self.param_dtype)(nearest_resize(x, size))


class Attention(nn.Module):
    """diffusers' Attention: to_q/to_k/to_v, multi-head softmax attention, to_out.0."""

    heads: int
    dim_head: int
    out_dim: int
    qkv_bias: bool = False
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        inner = self.heads * self.dim_head
        dense = lambda n, name, bias: nn.Dense(n, use_bias=bias, name=name, dtype=self.dtype,
                                               param_dtype=self.param_dtype)
        b = x.shape[0]
        q = dense(inner, "to_q", self.qkv_bias)(x).reshape(b, -1, self.heads, self.dim_head)
        k = dense(inner, "to_k", self.qkv_bias)(context).reshape(b, -1, self.heads, self.dim_head)
        v = dense(inner, "to_v", self.qkv_bias)(context).reshape(b, -1, self.heads, self.dim_head)
        o = dot_product_attention(q, k, v, impl=self.attention_impl).reshape(b, -1, inner)
        return dense(self.out_dim, "to_out_0", True)(o)
