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


Padding = tuple[tuple[int, int], tuple[int, int]]


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU as torch computes it, x/2 * (1 + erf(x / sqrt(2))). jax.nn.gelu's exact form goes
    through erfc, which XLA:CPU evaluates 2.7x slower (4.0 against 1.5 ms over 4096 x 1280 floats)."""
    return x * 0.5 * (1 + jax.lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype)))


# On the CPU, two kinds of convolution run as patches + one matrix product (`conv_patches`):
# - an image with fewer pixels than the kernel has taps (the 1x1 and 2x2 levels of a small latent):
#   there XLA's simplifier swaps the operands, reversing e.g. the 3x3x1280x1280 weights on every call
#   and running a slow convolution with them as the input (2-20x slower than patches, batch 1 and 4);
# - at least PATCHES_MIN_CHANNELS input channels and at most PATCHES_MAX_PIXELS output pixels over
#   the batch: at 1280 channels, batch 1, this CPU backend's convolution is 1.1-2.5x slower than
#   patches from 4x4 to 24x24 pixels, even at 32x32, faster from 48x48 on; at batch 4 patches lose
#   from 16x16 on; at 320 and 640 channels they do not win (0.6-1.2x).
# Measured with `python -m benchmarks.conv_threshold` at 320/640/1280 channels, sides 1 to 64, batch
# 1 and 4 (BENCHMARKS.md).
PATCHES_MIN_CHANNELS = 1280
PATCHES_MAX_PIXELS = 576


def conv_patches(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """NHWC x HWIO convolution as im2col: each output pixel's kh*kw input pixels side by side, one matmul."""
    kh, kw, cin, cout = kernel.shape
    # In float32 at least, rounded once at the end as the library convolution does: in bf16 the
    # gradient of the overlapping views would be rounded once per tap (twice the library's error).
    dtype, acc = x.dtype, jnp.promote_types(x.dtype, jnp.float32)
    x = jnp.pad(x.astype(acc), ((0, 0), padding[0], padding[1], (0, 0)))
    b, hp, wp, _ = x.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    # One gather of flat pixel indices in (y, x, i, j) order, so that the channels come out in the
    # kernel's [kh * kw * in] row order. Not a concatenation of kh*kw shifted views: that runs up to
    # 1.2x faster, but XLA's CPU compiler takes 20x longer over it (0.12 s per 8x8x64 convolution).
    rows = stride * np.arange(oh)[:, None, None, None] + np.arange(kh)[None, None, :, None]
    cols = stride * np.arange(ow)[None, :, None, None] + np.arange(kw)[None, None, None, :]
    flat = x.reshape(b, hp * wp, cin)
    patches = jnp.take(flat, (rows * wp + cols).reshape(-1), axis=1, mode="clip")  # all in bounds
    return jnp.dot(patches.reshape(b, oh, ow, kh * kw * cin), kernel.astype(acc).reshape(-1, cout)).astype(dtype)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
    """NHWC x HWIO convolution: patches on the CPU where they are faster, else the library convolution."""
    kh, kw = kernel.shape[:2]
    oh = (x.shape[1] + sum(padding[0]) - kh) // stride + 1
    ow = (x.shape[2] + sum(padding[1]) - kw) // stride + 1
    swapped = x.shape[1] * x.shape[2] < kh * kw
    small = x.shape[-1] >= PATCHES_MIN_CHANNELS and x.shape[0] * oh * ow <= PATCHES_MAX_PIXELS
    # Decided at trace time; the GPU keeps the library convolution (XLA's GPU pipeline does not swap).
    if (swapped or small) and jax.default_backend() == "cpu":
        return conv_patches(x, kernel, stride, padding)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """nn.Conv's parameters (`kernel` [k, k, in, out], `bias` [out]), initialisers and dtype
    promotion, square kernel and stride, explicit padding, computed by `conv2d`."""

    features: int
    kernel_size: int
    strides: int = 1
    padding: Padding = ((1, 1), (1, 1))
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv2d(x, kernel, self.strides, self.padding) + bias


def conv(features: int, kernel: int, name: str, dtype: Dtype, param_dtype: Dtype, stride: int = 1,
         padding: Any = None) -> Conv:
    pad = kernel // 2 if padding is None else padding
    if isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
    return Conv(features, kernel, strides=stride, padding=tuple(map(tuple, pad)), name=name, dtype=dtype,
                param_dtype=param_dtype)


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
