"""diffusers' AutoencoderKL, NHWC: the encoder (to mean/logvar) and the decoder, usable separately."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from osediff_jax.models.attention import dot_product_attention
from osediff_jax.models.layers import (
    Downsample2D,
    ResnetBlock2D,
    Upsample2D,
    check_config,
    conv,
    group_norm,
)

Dtype = Any
SCALING_FACTOR = 0.18215  # SD-2.x; the config has no scaling_factor key


class VAEAttention(nn.Module):
    """The mid-block self-attention: GroupNorm, one head over all channels, residual."""

    groups: int = 32
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        dense = lambda name: nn.Dense(c, name=name, dtype=self.dtype, param_dtype=self.param_dtype)
        y = group_norm(self.groups, 1e-6, "group_norm", self.dtype, self.param_dtype)(x).reshape(b, h * w, 1, c)
        q, k, v = dense("to_q")(y), dense("to_k")(y), dense("to_v")(y)
        o = dot_product_attention(q, k, v, impl=self.attention_impl).reshape(b, h * w, c)
        return dense("to_out_0")(o).reshape(b, h, w, c) + x


class VAEMidBlock(nn.Module):
    channels: int
    groups: int = 32
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        res = lambda name: ResnetBlock2D(self.channels, self.groups, 1e-6, name=name, dtype=self.dtype,
                                         param_dtype=self.param_dtype)
        x = res("resnets_0")(x)
        x = VAEAttention(self.groups, self.attention_impl, name="attentions_0", dtype=self.dtype,
                         param_dtype=self.param_dtype)(x)
        return res("resnets_1")(x)


class Encoder(nn.Module):
    block_out_channels: Sequence[int]
    layers_per_block: int = 2
    latent_channels: int = 4
    groups: int = 32
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d, p, g = self.dtype, self.param_dtype, self.groups
        chans = list(self.block_out_channels)
        x = conv(chans[0], 3, "conv_in", d, p)(x.astype(d))
        for i, c in enumerate(chans):
            x = _ResnetStack(c, self.layers_per_block, g, "down" if i < len(chans) - 1 else None,
                             name=f"down_blocks_{i}", dtype=d, param_dtype=p)(x)
        x = VAEMidBlock(chans[-1], g, self.attention_impl, name="mid_block", dtype=d, param_dtype=p)(x)
        x = nn.silu(group_norm(g, 1e-6, "conv_norm_out", d, p)(x))
        return conv(2 * self.latent_channels, 3, "conv_out", d, p)(x)


class _ResnetStack(nn.Module):
    """DownEncoderBlock2D (resample="down") or UpDecoderBlock2D (resample="up"): resnets, then a sampler."""

    channels: int
    layers: int
    groups: int
    resample: str | None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(self.layers):
            x = ResnetBlock2D(self.channels, self.groups, 1e-6, name=f"resnets_{j}", **kw)(x)
        if self.resample == "down":
            x = Downsample2D(self.channels, 0, name="downsamplers_0", **kw)(x)
        elif self.resample == "up":
            x = Upsample2D(self.channels, name="upsamplers_0", **kw)(x)
        return x


class Decoder(nn.Module):
    block_out_channels: Sequence[int]
    layers_per_block: int = 2
    out_channels: int = 3
    groups: int = 32
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        d, p, g = self.dtype, self.param_dtype, self.groups
        chans = list(self.block_out_channels)[::-1]
        x = conv(chans[0], 3, "conv_in", d, p)(z.astype(d))
        x = VAEMidBlock(chans[0], g, self.attention_impl, name="mid_block", dtype=d, param_dtype=p)(x)
        for i, c in enumerate(chans):
            x = _ResnetStack(c, self.layers_per_block + 1, g, "up" if i < len(chans) - 1 else None,
                             name=f"up_blocks_{i}", dtype=d, param_dtype=p)(x)
        x = nn.silu(group_norm(g, 1e-6, "conv_norm_out", d, p)(x))
        return conv(self.out_channels, 3, "conv_out", d, p)(x)


class AutoencoderKL(nn.Module):
    """`encode` gives (mean, logvar) of the latent posterior, `decode` the image; `__call__` both."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: Sequence[int] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = SCALING_FACTOR
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        kw = dict(groups=self.norm_num_groups, attention_impl=self.attention_impl, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        self.encoder = Encoder(self.block_out_channels, self.layers_per_block, self.latent_channels, **kw)
        self.decoder = Decoder(self.block_out_channels, self.layers_per_block, self.out_channels, **kw)
        self.quant_conv = conv(2 * self.latent_channels, 1, "quant_conv", self.dtype, self.param_dtype, padding=0)
        self.post_quant_conv = conv(self.latent_channels, 1, "post_quant_conv", self.dtype, self.param_dtype,
                                    padding=0)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Image in [-1, 1], NHWC -> (mean, logvar) of the unscaled latent, logvar clipped as diffusers."""
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latent -> image (about [-1, 1], not clamped)."""
        return self.decoder(self.post_quant_conv(z.astype(self.dtype)))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean, _ = self.encode(x)
        return self.decode(mean)


_CONFIG = {
    "in_channels": None, "out_channels": None, "block_out_channels": None, "layers_per_block": None,
    "latent_channels": None, "norm_num_groups": None, "sample_size": None, "scaling_factor": None,
    "force_upcast": None,  # fp16 advice for diffusers pipelines; our norms already run in float32
    "act_fn": ("silu",), "shift_factor": (None,), "latents_mean": (None,), "latents_std": (None,),
    "use_quant_conv": (True,), "use_post_quant_conv": (True,), "mid_block_add_attention": (True,),
    "down_block_types": None, "up_block_types": None,
}


def vae_from_config(config: Mapping[str, Any], *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                    attention_impl: str = "xla", source: str = "vae config") -> AutoencoderKL:
    """Builds the module from a diffusers `vae/config.json` dict; unsupported values are errors."""
    check_config(config, _CONFIG, source, "VAE")
    chans = tuple(int(c) for c in config.get("block_out_channels", (64,)))
    for key, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        blocks = config.get(key, (block,) * len(chans))
        if list(blocks) != [block] * len(chans):
            raise ValueError(f"{source}: {key}={list(blocks)!r} is not supported; expected {len(chans)} x {block!r}")
    return AutoencoderKL(
        in_channels=int(config.get("in_channels", 3)),
        out_channels=int(config.get("out_channels", 3)),
        block_out_channels=chans,
        layers_per_block=int(config.get("layers_per_block", 1)),
        latent_channels=int(config.get("latent_channels", 4)),
        norm_num_groups=int(config.get("norm_num_groups", 32)),
        scaling_factor=float(config.get("scaling_factor") or SCALING_FACTOR),
        attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype,
    )
