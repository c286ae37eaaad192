"""diffusers' UNet2DConditionModel for SD-2.x-base shaped configurations, NHWC."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from osediff_jax.models.layers import (
    Attention,
    Downsample2D,
    ResnetBlock2D,
    Upsample2D,
    check_config,
    conv,
    gelu,
    group_norm,
)

Dtype = Any


def timestep_embedding(t: jax.Array, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0) -> jax.Array:
    """diffusers' `get_timestep_embedding` (float32)."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    emb = t.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GEGLU(nn.Module):
    dim_out: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(2 * self.dim_out, name="proj", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        h, gate = jnp.split(h, 2, axis=-1)
        return h * gelu(gate)


class BasicTransformerBlock(nn.Module):
    dim: int
    heads: int
    dim_head: int
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        ln = lambda name: nn.LayerNorm(epsilon=1e-5, name=name, dtype=d, param_dtype=p)
        attn = lambda name: Attention(self.heads, self.dim_head, self.dim, attention_impl=self.attention_impl,
                                      name=name, dtype=d, param_dtype=p)
        x = attn("attn1")(ln("norm1")(x)) + x
        x = attn("attn2")(ln("norm2")(x), context) + x
        return FeedForward(self.dim, name="ff", dtype=d, param_dtype=p)(ln("norm3")(x)) + x


class FeedForward(nn.Module):
    dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = GEGLU(4 * self.dim, name="net_0", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.Dense(self.dim, name="net_2", dtype=self.dtype, param_dtype=self.param_dtype)(h)


class Transformer2DModel(nn.Module):
    channels: int
    heads: int
    depth: int = 1
    groups: int = 32
    linear_projection: bool = True
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        b, h, w, c = x.shape
        # A 1x1 conv on NHWC is the same map as a Linear over channels: only the kernel shape differs.
        proj = lambda name: (nn.Dense(c, name=name, dtype=d, param_dtype=p) if self.linear_projection
                             else conv(c, 1, name, d, p, padding=0))
        y = group_norm(self.groups, 1e-6, "norm", d, p)(x)
        if not self.linear_projection:
            y = proj("proj_in")(y)
        y = y.reshape(b, h * w, c)
        if self.linear_projection:
            y = proj("proj_in")(y)
        for i in range(self.depth):
            y = BasicTransformerBlock(c, self.heads, c // self.heads, self.attention_impl,
                                      name=f"transformer_blocks_{i}", dtype=d, param_dtype=p)(y, context)
        if self.linear_projection:
            y = proj("proj_out")(y)
        y = y.reshape(b, h, w, c)
        if not self.linear_projection:
            y = proj("proj_out")(y)
        return y + x


class UNet2DConditionModel(nn.Module):
    """Takes NHWC latents of any integer size, a timestep per sample and [B, L, cross_dim] context."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: Sequence[int] = (320, 640, 1280, 1280)
    down_block_types: Sequence[str] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: Sequence[str] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: int = 2
    cross_attention_dim: int = 1024  # the context's width; the weights' shapes depend on it
    heads: Sequence[int] = (5, 10, 20, 20)
    transformer_depth: Sequence[int] = (1, 1, 1, 1)
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    use_linear_projection: bool = True
    center_input_sample: bool = False
    mid_block_scale_factor: float = 1.0
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        g, eps = self.norm_num_groups, self.norm_eps
        chans = list(self.block_out_channels)
        n = len(chans)
        sample = sample.astype(d)
        context = context.astype(d)
        if self.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (sample.shape[0],))
        temb = timestep_embedding(timesteps, chans[0], self.flip_sin_to_cos, self.freq_shift).astype(d)
        temb = TimestepEmbedding(4 * chans[0], name="time_embedding", dtype=d, param_dtype=p)(temb)

        x = conv(chans[0], 3, "conv_in", d, p)(sample)
        skips = [x]
        common = dict(groups=g, eps=eps, linear_projection=self.use_linear_projection,
                      attention_impl=self.attention_impl, dtype=d, param_dtype=p)
        for i, kind in enumerate(self.down_block_types):
            x, states = DownBlock(chans[i], self.layers_per_block, kind == "CrossAttnDownBlock2D",
                                  self.heads[i], self.transformer_depth[i], downsample=i < n - 1,
                                  downsample_padding=self.downsample_padding, name=f"down_blocks_{i}",
                                  **common)(x, temb, context)
            skips.extend(states)
        x = MidBlock(chans[-1], self.heads[-1], self.transformer_depth[-1], self.mid_block_scale_factor,
                     name="mid_block", **common)(x, temb, context)
        heads, depth = list(self.heads)[::-1], list(self.transformer_depth)[::-1]
        for i, kind in enumerate(self.up_block_types):
            k = self.layers_per_block + 1
            states, skips = skips[-k:], skips[:-k]
            # Upsample to the next skip connection's size, which is not 2x when a size was odd.
            size = skips[-1].shape[1:3] if i < n - 1 else None
            x = UpBlock(chans[::-1][i], k, kind == "CrossAttnUpBlock2D", heads[i], depth[i], upsample=i < n - 1,
                        name=f"up_blocks_{i}", **common)(x, states, temb, context, size)

        x = nn.silu(group_norm(g, eps, "conv_norm_out", d, p)(x))
        return conv(self.out_channels, 3, "conv_out", d, p)(x)


class _Block(nn.Module):
    channels: int
    layers: int
    with_attention: bool
    heads: int
    depth: int
    groups: int = 32
    eps: float = 1e-5
    linear_projection: bool = True
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def resnet(self, name: str, scale: float = 1.0) -> ResnetBlock2D:
        return ResnetBlock2D(self.channels, self.groups, self.eps, scale, name=name, dtype=self.dtype,
                             param_dtype=self.param_dtype)

    def transformer(self, name: str) -> Transformer2DModel:
        return Transformer2DModel(self.channels, self.heads, self.depth, self.groups, self.linear_projection,
                                  self.attention_impl, name=name, dtype=self.dtype, param_dtype=self.param_dtype)


class DownBlock(_Block):
    """CrossAttnDownBlock2D (with_attention) or DownBlock2D; returns the output and its skip states."""

    downsample: bool = True
    downsample_padding: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> tuple[jax.Array, list]:
        states = []
        for j in range(self.layers):
            x = self.resnet(f"resnets_{j}")(x, temb)
            if self.with_attention:
                x = self.transformer(f"attentions_{j}")(x, context)
            states.append(x)
        if self.downsample:
            x = Downsample2D(self.channels, self.downsample_padding, name="downsamplers_0", dtype=self.dtype,
                             param_dtype=self.param_dtype)(x)
            states.append(x)
        return x, states


class UpBlock(_Block):
    """CrossAttnUpBlock2D (with_attention) or UpBlock2D: one resnet per skip state, last skip first."""

    upsample: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, states: list, temb: jax.Array, context: jax.Array,
                 size: Sequence[int] | None) -> jax.Array:
        for j in range(self.layers):
            x = jnp.concatenate([x, states[-1 - j]], axis=-1)
            x = self.resnet(f"resnets_{j}")(x, temb)
            if self.with_attention:
                x = self.transformer(f"attentions_{j}")(x, context)
        if self.upsample:
            x = Upsample2D(self.channels, name="upsamplers_0", dtype=self.dtype, param_dtype=self.param_dtype)(x, size)
        return x


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, transformer, resnet."""

    channels: int
    heads: int
    depth: int
    output_scale_factor: float = 1.0
    groups: int = 32
    eps: float = 1e-5
    linear_projection: bool = True
    attention_impl: str = "xla"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array) -> jax.Array:
        x = ResnetBlock2D(self.channels, self.groups, self.eps, self.output_scale_factor, name="resnets_0",
                          dtype=self.dtype, param_dtype=self.param_dtype)(x, temb)
        x = Transformer2DModel(self.channels, self.heads, self.depth, self.groups, self.linear_projection,
                               self.attention_impl, name="attentions_0", dtype=self.dtype,
                               param_dtype=self.param_dtype)(x, context)
        return ResnetBlock2D(self.channels, self.groups, self.eps, self.output_scale_factor, name="resnets_1",
                             dtype=self.dtype, param_dtype=self.param_dtype)(x, temb)


class TimestepEmbedding(nn.Module):
    dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.dim, name="linear_1", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.Dense(self.dim, name="linear_2", dtype=self.dtype, param_dtype=self.param_dtype)(nn.silu(x))


# Keys diffusers writes; each maps to the values we support (None: any value, read below).
_CONFIG = {
    "in_channels": None, "out_channels": None, "block_out_channels": None, "layers_per_block": None,
    "attention_head_dim": None, "num_attention_heads": None, "cross_attention_dim": None,
    "norm_num_groups": None, "norm_eps": None, "flip_sin_to_cos": None, "freq_shift": None,
    "downsample_padding": None, "use_linear_projection": None, "center_input_sample": None,
    "mid_block_scale_factor": None, "transformer_layers_per_block": None, "sample_size": None,
    "upcast_attention": None,  # only changes fp16 softmax precision; ours is always float32
    "down_block_types": None, "up_block_types": None,
    "act_fn": ("silu",), "mid_block_type": ("UNetMidBlock2DCrossAttn",), "dropout": (0.0,),
    "dual_cross_attention": (False,), "only_cross_attention": (False,),
    "class_embed_type": (None,), "num_class_embeds": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "encoder_hid_dim": (None,), "encoder_hid_dim_type": (None,),
    "resnet_time_scale_shift": ("default",), "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0,), "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,), "time_embedding_act_fn": (None,), "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,), "conv_in_kernel": (3,), "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,), "attention_type": ("default",),
    "class_embeddings_concat": (False,), "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,), "reverse_transformer_layers_per_block": (None,),
    "addition_embed_type_num_heads": (64,),
}
_BLOCKS = {"down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
           "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}


def _per_level(value: Any, n: int, key: str, source: str) -> list[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise ValueError(f"{source}: {key}={value!r} needs one value per block ({n})")
    return [int(v) for v in values]


def unet_from_config(config: Mapping[str, Any], *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
                     attention_impl: str = "xla", source: str = "unet config") -> UNet2DConditionModel:
    """Builds the module from a diffusers `unet/config.json` dict; unsupported values are errors."""
    check_config(config, _CONFIG, source, "UNet")
    for key, allowed in _BLOCKS.items():
        for block in config.get(key, ()):
            if block not in allowed:
                raise ValueError(f"{source}: {key} contains {block!r}; supported block types are {allowed}")
    chans = [int(c) for c in config["block_out_channels"]]
    n = len(chans)
    if len(config["down_block_types"]) != n or len(config["up_block_types"]) != n:
        raise ValueError(f"{source}: down_block_types and up_block_types need {n} entries (block_out_channels)")
    if isinstance(config.get("cross_attention_dim", 1024), (list, tuple)):
        raise ValueError(f"{source}: cross_attention_dim={config['cross_attention_dim']!r}: expected one int")
    if not isinstance(config.get("layers_per_block", 2), int):
        raise ValueError(f"{source}: layers_per_block={config['layers_per_block']!r}: expected one int")
    # diffusers' naming quirk: without num_attention_heads, attention_head_dim is the number of heads.
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    heads = _per_level(heads, n, "num_attention_heads/attention_head_dim", source)
    for c, h in zip(chans, heads):
        if c % h:
            raise ValueError(f"{source}: {c} channels do not split into {h} attention heads")
    return UNet2DConditionModel(
        in_channels=int(config.get("in_channels", 4)),
        out_channels=int(config.get("out_channels", 4)),
        block_out_channels=tuple(chans),
        down_block_types=tuple(config["down_block_types"]),
        up_block_types=tuple(config["up_block_types"]),
        layers_per_block=int(config.get("layers_per_block", 2)),
        cross_attention_dim=int(config.get("cross_attention_dim", 1280)),
        heads=tuple(heads),
        transformer_depth=tuple(_per_level(config.get("transformer_layers_per_block", 1), n,
                                           "transformer_layers_per_block", source)),
        norm_num_groups=int(config.get("norm_num_groups", 32)),
        norm_eps=float(config.get("norm_eps", 1e-5)),
        flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
        freq_shift=float(config.get("freq_shift", 0)),
        downsample_padding=int(config.get("downsample_padding", 1)),
        use_linear_projection=bool(config.get("use_linear_projection", False)),
        center_input_sample=bool(config.get("center_input_sample", False)),
        mid_block_scale_factor=float(config.get("mid_block_scale_factor", 1.0)),
        attention_impl=attention_impl, dtype=dtype, param_dtype=param_dtype,
    )
