"""RAM's tagging path (Recognize Anything; the authors' `ram/models/ram_lora.py`): a Swin
transformer image encoder (`swin_transformer_lora.py`, the original Swin with the mean token
prepended), `image_proj`, the label queries `relu(wordvec_proj(label_embed))`, a tagging head of
cross-attention-only BERT layers (`bert_lora.py` in 'tagging' mode, self-attention deleted) and `fc`.
Parameter paths mirror the checkpoint's keys (`visual_encoder.layers.0.blocks.1.attn.qkv` is
`visual_encoder/layers_0/blocks_1/attn/qkv`). DAPE is the same network with LoRA merged in.

Input: [B, 384, 384, 3] images already resized and normalised (`inference.tagger` does both).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.models.layers import Conv, gelu  # torch's nn.GELU / BERT's "gelu": exact erf


@dataclasses.dataclass(frozen=True)
class RAMConfig:
    """RAM Swin-L at 384 (`ram/configs/swin/config_swinL_384.json`, `q2l_config.json`)."""

    image_size: int = 384
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    mlp_ratio: float = 4.0
    num_classes: int = 4585
    embed_width: int = 512  # image_proj and label_embed width (the head's encoder_width)
    head_layers: int = 2
    head_hidden: int = 768
    head_heads: int = 4
    head_intermediate: int = 3072

    @property
    def vision_width(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


def _windows(x: jax.Array, w: int) -> jax.Array:
    """[B, H, W, C] -> [B, nW, w*w, C] (Swin's window_partition, windows in row-major order)."""
    b, h, wd, c = x.shape
    x = x.reshape(b, h // w, w, wd // w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // w) * (wd // w), w * w, c)


def _unwindows(x: jax.Array, w: int, h: int, wd: int) -> jax.Array:
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, h // w, wd // w, w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def _relative_index(w: int) -> np.ndarray:
    """Swin's relative_position_index [w*w, w*w] into the (2w-1)^2 bias table."""
    coords = np.stack(np.meshgrid(np.arange(w), np.arange(w), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (w - 1)
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def _shift_mask(h: int, wd: int, w: int, s: int) -> np.ndarray:
    """[nW, w*w, w*w]: -100 between tokens that the cyclic shift brought from different regions."""
    img = np.zeros((1, h, wd, 1), np.float32)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[:, hs, ws] = cnt
            cnt += 1
    m = np.asarray(_windows(img, w))[0, ..., 0]
    return np.where(m[:, None, :] != m[:, :, None], -100.0, 0.0).astype(np.float32)


class WindowAttention(nn.Module):
    num_heads: int
    window: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
        b, nw, n, c = x.shape
        hd = c // self.num_heads
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * self.window - 1) ** 2, self.num_heads), self.param_dtype)
        qkv = nn.Dense(3 * c, name="qkv", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        q, k, v = jnp.moveaxis(qkv.reshape(b, nw, n, 3, self.num_heads, hd), 3, 0)
        q = q * jnp.asarray(hd ** -0.5, q.dtype)
        logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q, k, preferred_element_type=jnp.float32)
        bias = table.astype(jnp.float32)[_relative_index(self.window).reshape(-1)].reshape(n, n, -1)
        logits = logits + bias.transpose(2, 0, 1)
        if mask is not None:
            logits = logits + mask[None, :, None]
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bwhqk,bwkhd->bwqhd", probs, v).reshape(b, nw, n, c)
        return nn.Dense(c, name="proj", dtype=self.dtype, param_dtype=self.param_dtype)(out)


class Mlp(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = gelu(nn.Dense(self.hidden, name="fc1", dtype=self.dtype, param_dtype=self.param_dtype)(x))
        return nn.Dense(x.shape[-1], name="fc2", dtype=self.dtype, param_dtype=self.param_dtype)(h)


class SwinBlock(nn.Module):
    num_heads: int
    window: int
    shift: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        b, r, _, c = x.shape
        # Swin: a window as large as a feature map that is not larger, and then no shift.
        w, s = (r, 0) if r <= self.window else (self.window, self.shift)
        h = nn.LayerNorm(1e-5, name="norm1", dtype=d, param_dtype=p)(x)
        if s:
            h = jnp.roll(h, (-s, -s), axis=(1, 2))
        h = WindowAttention(self.num_heads, w, d, p, name="attn")(_windows(h, w), _shift_mask(r, r, w, s) if s else None)
        h = _unwindows(h, w, r, r)
        if s:
            h = jnp.roll(h, (s, s), axis=(1, 2))
        x = x + h
        return x + Mlp(int(c * self.mlp_ratio), d, p, name="mlp")(nn.LayerNorm(1e-5, name="norm2", dtype=d,
                                                                               param_dtype=p)(x))


class PatchMerging(nn.Module):
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # Swin's order: (even, even), (odd, even), (even, odd), (odd, odd) rows/columns.
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        x = nn.LayerNorm(1e-5, name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.Dense(x.shape[-1] // 2, use_bias=False, name="reduction", dtype=self.dtype,
                        param_dtype=self.param_dtype)(x)


class BasicLayer(nn.Module):
    """One Swin stage: blocks alternating plain and shifted windows, then patch merging (not after
    the last stage)."""

    depth: int
    num_heads: int
    window: int
    mlp_ratio: float
    downsample: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.depth):
            x = SwinBlock(self.num_heads, self.window, self.window // 2 if j % 2 else 0, self.mlp_ratio, self.dtype,
                          self.param_dtype, name=f"blocks_{j}")(x)
        return PatchMerging(self.dtype, self.param_dtype, name="downsample")(x) if self.downsample else x


class PatchEmbed(nn.Module):
    features: int
    patch: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv(self.features, self.patch, self.patch, ((0, 0), (0, 0)), self.dtype, self.param_dtype, name="proj")(x)
        return nn.LayerNorm(1e-5, name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)


class SwinEncoder(nn.Module):
    """[B, S, S, 3] -> [B, 1 + (S/32)^2, C]: the final tokens with their mean prepended."""

    config: RAMConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, d, p = self.config, self.dtype, self.param_dtype
        x = PatchEmbed(cfg.embed_dim, cfg.patch_size, d, p, name="patch_embed")(x)
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            x = BasicLayer(depth, heads, cfg.window_size, cfg.mlp_ratio, i < len(cfg.depths) - 1, d, p,
                           name=f"layers_{i}")(x)
        x = nn.LayerNorm(1e-5, name="norm", dtype=d, param_dtype=p)(x.reshape(x.shape[0], -1, x.shape[-1]))
        return jnp.concatenate([jnp.mean(x, axis=1, keepdims=True), x], axis=1)


class DenseNorm(nn.Module):
    """BERT's SelfOutput / Output: LayerNorm(dense(h) + residual), eps 1e-12."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, residual: jax.Array) -> jax.Array:
        h = nn.Dense(residual.shape[-1], name="dense", dtype=self.dtype, param_dtype=self.param_dtype)(h)
        return nn.LayerNorm(1e-12, name="LayerNorm", dtype=self.dtype, param_dtype=self.param_dtype)(h + residual)


class CrossAttentionSelf(nn.Module):
    """BERT's cross-attention scores: queries from the labels, keys and values from the image."""

    heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, image: jax.Array) -> jax.Array:
        c = x.shape[-1]
        dense = lambda name, y: nn.Dense(c, name=name, dtype=self.dtype, param_dtype=self.param_dtype)(y).reshape(
            *y.shape[:2], self.heads, -1)
        q, k, v = dense("query", x), dense("key", image), dense("value", image)
        # BERT divides the logits by sqrt(d); the image mask is all ones and adds nothing.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / np.sqrt(c // self.heads)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)


class CrossAttention(nn.Module):
    heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, image: jax.Array) -> jax.Array:
        h = CrossAttentionSelf(self.heads, self.dtype, self.param_dtype, name="self")(x, image)
        return DenseNorm(self.dtype, self.param_dtype, name="output")(h, x)


class Intermediate(nn.Module):
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu(nn.Dense(self.features, name="dense", dtype=self.dtype, param_dtype=self.param_dtype)(x))


class TaggingLayer(nn.Module):
    """A BertLayer in 'tagging' mode: cross-attention, then the feed-forward block."""

    heads: int
    intermediate: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, image: jax.Array) -> jax.Array:
        d, p = self.dtype, self.param_dtype
        x = CrossAttention(self.heads, d, p, name="crossattention")(x, image)
        return DenseNorm(d, p, name="output")(Intermediate(self.intermediate, d, p, name="intermediate")(x), x)


class TaggingEncoder(nn.Module):
    config: RAMConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, image: jax.Array) -> jax.Array:
        cfg = self.config
        for i in range(cfg.head_layers):
            x = TaggingLayer(cfg.head_heads, cfg.head_intermediate, self.dtype, self.param_dtype, name=f"layer_{i}")(x, image)
        return x


class TaggingHead(nn.Module):
    config: RAMConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, image: jax.Array) -> jax.Array:
        return TaggingEncoder(self.config, self.dtype, self.param_dtype, name="encoder")(x, image)


class RAM(nn.Module):
    """logits [B, num_classes] of normalised [B, S, S, 3] images; tag i is present where
    sigmoid(logit_i) > threshold_i (`tag_prompts.load_tag_list`)."""

    config: RAMConfig = RAMConfig()
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg, d, p = self.config, self.dtype, self.param_dtype
        image = SwinEncoder(cfg, d, p, name="visual_encoder")(images.astype(d))
        image = nn.Dense(cfg.embed_width, name="image_proj", dtype=d, param_dtype=p)(image)
        labels = self.param("label_embed", nn.initializers.zeros_init(), (cfg.num_classes, cfg.embed_width), p)
        labels = jax.nn.relu(nn.Dense(cfg.head_hidden, name="wordvec_proj", dtype=d, param_dtype=p)(labels))
        labels = jnp.broadcast_to(labels.astype(d), (images.shape[0], *labels.shape))
        h = TaggingHead(cfg, d, p, name="tagging_head")(labels, image)
        return nn.Dense(1, name="fc", dtype=d, param_dtype=p)(h)[..., 0].astype(jnp.float32)
