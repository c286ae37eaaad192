"""MANIQA (Yang et al., CVPRW 2022) with the PIPAL weights, as pyiqa 0.1.10's `maniqa-pipal`
computes it (`pyiqa/archs/maniqa_arch.py`, `maniqa_swin.py`, `arch_util.random_crop`).

The image, normalised to [-1, 1], is cut into 20 random 224x224 crops (an image whose shorter
side is <= 224 is first enlarged bilinearly by (224 + 1) / shorter side). pyiqa draws the crop
corners with `np.random.randint` from NumPy's global generator, seeded with 123 once when the
metric is built, so an image's crops depend on the images scored before it: the scorer keeps one
`RandomState(123)` and `evaluate` scores in sorted file order. Per crop: the outputs of ViT-B/8
blocks 6-9 (timm's `vit_base_patch8_224`, class token dropped), two transposed-attention blocks
over the 28x28 positions, a 1x1 conv, a two-stage Swin transformer (window 4, residual scale
0.13), again two transposed-attention blocks, a 1x1 conv and a second Swin; the score is the
weighted mean of the per-position scores over all positions of all crops together."""

from __future__ import annotations

import math
import os
import re
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.metrics.weights import load_params, weight_path
from osediff_jax.models.layers import gelu

WEIGHTS_FILE = "MANIQA_PIPAL-ae6d356b.pth"
CROP = 224
N_CROPS = 20
SEED = 123
GRID = CROP // 8
EMBED = 768
HIGHEST = "highest"


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, precision=HIGHEST, name=name)


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """q, k, v [B, heads, N, d] -> [B, heads, N, d]; q already scaled."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=HIGHEST)
    if bias is not None:
        s = s + bias
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v, precision=HIGHEST)


class ViTBlock(nn.Module):
    """timm's ViT block (pre-norm, LayerNorm eps 1e-6, exact GELU)."""

    heads: int = 12

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, d = x.shape
        y = nn.LayerNorm(1e-6, use_fast_variance=False, name="norm1")(x)
        qkv = _dense(3 * d, "attn_qkv")(y).reshape(b, n, 3, self.heads, d // self.heads).transpose(2, 0, 3, 1, 4)
        y = _attention(qkv[0] * (d // self.heads) ** -0.5, qkv[1], qkv[2]).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = x + _dense(d, "attn_proj")(y)
        y = nn.LayerNorm(1e-6, use_fast_variance=False, name="norm2")(x)
        y = _dense(d, "mlp_fc2")(gelu(_dense(4 * d, "mlp_fc1")(y)))
        return x + y


class ViTFeatures(nn.Module):
    """vit_base_patch8_224 up to block 9: the concatenated outputs of blocks 6-9 without the class
    token, [B, 784, 3072] (the later blocks, norm and head do not affect MANIQA)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(EMBED, (8, 8), (8, 8), padding="VALID", precision=HIGHEST, name="patch_embed_proj")(x)
        b = x.shape[0]
        x = x.reshape(b, -1, EMBED)
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, EMBED))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, EMBED)), x], axis=1)
        x = x + self.param("pos_embed", nn.initializers.normal(0.02), (1, GRID * GRID + 1, EMBED))
        outs = []
        for i in range(10):
            x = ViTBlock(name=f"blocks_{i}")(x)
            if i >= 6:
                outs.append(x[:, 1:])
        return jnp.concatenate(outs, axis=-1)


class TABlock(nn.Module):
    """Transposed attention over channels; x [B, C, N]. pyiqa reshapes (attn @ v)^T [B, N, C]
    straight to [B, C, N] (a reinterpretation, not a transpose), kept as it is."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, c, n = x.shape
        q, k, v = (_dense(n, name)(x) for name in ("c_q", "c_k", "c_v"))
        attn = jax.nn.softmax(jnp.einsum("bcn,bdn->bcd", q, k, precision=HIGHEST) * n ** -0.5, axis=-1)
        y = jnp.einsum("bcd,bdn->bcn", attn, v, precision=HIGHEST)
        return jnp.swapaxes(y, 1, 2).reshape(b, c, n) + x


def _relative_index(w: int) -> np.ndarray:
    coords = np.stack(np.meshgrid(np.arange(w), np.arange(w), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (w - 1)
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def _shift_mask(size: int, w: int, shift: int) -> np.ndarray:
    """[nW, w*w, w*w] additive mask (0 / -100) of the shifted windows, as Swin builds it."""
    img = np.zeros((size, size), np.float32)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
        for ws in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = img.reshape(size // w, w, size // w, w).transpose(0, 2, 1, 3).reshape(-1, w * w)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


class SwinBlock(nn.Module):
    heads: int
    shift: int
    window: int = 4
    mlp: int = 768

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        size, w = int(math.isqrt(n)), self.window
        y = nn.LayerNorm(1e-5, use_fast_variance=False, name="norm1")(x).reshape(b, size, size, c)
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
        nw = (size // w) ** 2
        y = y.reshape(b, size // w, w, size // w, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(b * nw, w * w, c)
        qkv = _dense(3 * c, "attn_qkv")(y).reshape(b * nw, w * w, 3, self.heads, c // self.heads)
        qkv = qkv.transpose(2, 0, 3, 1, 4)
        table = self.param("attn_relative_position_bias_table", nn.initializers.normal(0.02),
                           ((2 * w - 1) ** 2, self.heads))
        bias = table[_relative_index(w).reshape(-1)].reshape(w * w, w * w, self.heads).transpose(2, 0, 1)[None]
        if self.shift:
            mask = jnp.asarray(_shift_mask(size, w, self.shift))
            bias = (bias[None] + jnp.tile(mask[None, :, None], (b, 1, 1, 1, 1))).reshape(b * nw, self.heads, w * w, w * w)
        y = _attention(qkv[0] * (c // self.heads) ** -0.5, qkv[1], qkv[2], bias)
        y = _dense(c, "attn_proj")(y.transpose(0, 2, 1, 3).reshape(b * nw, w * w, c))
        y = y.reshape(b, size // w, size // w, w, w, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, size, size, c)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        x = x + y.reshape(b, n, c)
        y = nn.LayerNorm(1e-5, use_fast_variance=False, name="norm2")(x)
        return x + _dense(c, "mlp_fc2")(gelu(_dense(self.mlp, "mlp_fc1")(y)))


class Swin(nn.Module):
    """pyiqa's MANIQA SwinTransformer: stages of (blocks, 3x3 conv, ReLU), each added back scaled
    by `scale`; NHWC in and out."""

    heads: int = 4
    depths: tuple[int, ...] = (2, 2)
    scale: float = 0.13

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        for i, depth in enumerate(self.depths):
            y = x
            for j in range(depth):
                y = SwinBlock(self.heads, 0 if j % 2 == 0 else 2, name=f"layers_{i}_blocks_{j}")(y)
            y = nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)), precision=HIGHEST, name=f"layers_{i}_conv")(
                y.reshape(b, h, w, c))
            x = self.scale * nn.relu(y).reshape(b, h * w, c) + x
        return x.reshape(b, h, w, c)


class MANIQA(nn.Module):
    """Crops [K, 224, 224, 3] normalised to [-1, 1] -> (per-position scores, weights), [K, 784]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = x.shape[0]
        f = ViTFeatures(name="vit")(x).transpose(0, 2, 1)  # [K, 3072, 784]
        for i in range(2):
            f = TABlock(name=f"tablock1_{i}")(f)
        f = f.transpose(0, 2, 1).reshape(k, GRID, GRID, -1)
        f = Swin(name="swintransformer1")(nn.Conv(EMBED, (1, 1), precision=HIGHEST, name="conv1")(f))
        f = f.reshape(k, GRID * GRID, EMBED).transpose(0, 2, 1)
        for i in range(2):
            f = TABlock(name=f"tablock2_{i}")(f)
        f = f.transpose(0, 2, 1).reshape(k, GRID, GRID, EMBED)
        f = Swin(name="swintransformer2")(nn.Conv(EMBED // 2, (1, 1), precision=HIGHEST, name="conv2")(f))
        f = f.reshape(k, GRID * GRID, EMBED // 2)

        def head(name, out):
            y = nn.relu(_dense(EMBED // 2, f"{name}_0")(f))
            return out(_dense(1, f"{name}_3")(y))[..., 0]

        return head("fc_score", nn.relu), head("fc_weight", nn.sigmoid)


@jax.jit
def maniqa_parts(params: dict, crops: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Jitted per-position scores and weights of normalised crops [K, 224, 224, 3]."""
    return MANIQA().apply({"params": params}, crops)


def combine(scores: jax.Array, weights: jax.Array) -> float:
    """pyiqa's score: the weighted mean over every position of every crop of one image."""
    s, w = np.asarray(scores, np.float32).reshape(-1), np.asarray(weights, np.float32).reshape(-1)
    return float(np.asarray(jnp.sum(w * s) / (jnp.sum(w) + 1e-8)))


def _resize_bilinear(x: np.ndarray, factor: float) -> np.ndarray:
    """torch's F.interpolate(scale_factor=factor, mode='bilinear', align_corners=False) of HxWxC:
    output size floor(size * factor), source coordinates mapped with float32(1 / factor)."""
    inv = np.float32(1.0 / factor)

    def weights(n):
        out = int(math.floor(n * factor))
        src = np.maximum(inv * (np.arange(out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        t = src - i0
        m = np.zeros((out, n), np.float32)
        np.add.at(m, (np.arange(out), i0), 1 - t)
        np.add.at(m, (np.arange(out), i1), t)
        return m

    return np.einsum("ih,hwc,jw->ijc", weights(x.shape[0]), x, weights(x.shape[1]), optimize=True).astype(np.float32)


def crops(img: np.ndarray, rng: np.random.RandomState, n: int = N_CROPS) -> np.ndarray:
    """pyiqa's `random_crop` of HxWx3 uint8 after its normalisation: [n, 224, 224, 3] in
    [-1, 1]; corners drawn from `rng` (row, then column, per crop)."""
    x = (img.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    h, w, _ = x.shape
    if min(h, w) <= CROP:
        x = _resize_bilinear(x, (CROP + 1) / min(h, w))
        h, w, _ = x.shape
    out = []
    for _ in range(n):
        sh = rng.randint(0, h - CROP + 1)
        sw = rng.randint(0, w - CROP + 1)
        out.append(x[sh:sh + CROP, sw:sw + CROP])
    return np.stack(out)


_INDEXED = re.compile(r"^(tablock[12]|layers|blocks|fc_score|fc_weight)_(\d+)$")


def torch_key(names: tuple[str, ...]) -> str:
    """Flax path -> key in pyiqa's MANIQA state dict ('vit', 'blocks_3', 'attn_qkv', 'kernel') ->
    'vit.blocks.3.attn.qkv.weight'."""
    *mods, leaf = names
    parts = []
    for m in mods:
        m = re.sub(r"^(layers_\d+)_(blocks_\d+|conv)$", r"\1.\2", m)
        m = re.sub(r"^(patch_embed)_(proj)$|^(attn|mlp)_(.+)$", lambda g: ".".join(p for p in g.groups() if p), m)
        parts += [_INDEXED.sub(r"\1.\2", p) for p in m.split(".")]
    if leaf.startswith("attn_"):
        parts.append("attn")
        leaf = leaf[len("attn_"):]
    leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(parts + [leaf])


def maniqa_params(weights_dir: str | os.PathLike | None) -> dict:
    """Flax params of MANIQA from pyiqa's PIPAL checkpoint (the ViT's weights are in it too)."""
    x = jax.ShapeDtypeStruct((1, CROP, CROP, 3), jnp.float32)
    template = jax.eval_shape(MANIQA().init, jax.random.key(0), x)["params"]
    return load_params(template, weight_path(weights_dir, WEIGHTS_FILE), torch_key)


def maniqa_scorer(params: dict, n_crops: int = N_CROPS, batch: int = 4) -> Callable[[np.ndarray, np.ndarray | None], float]:
    """(pred HxWx3 uint8, ignored) -> MANIQA; the crop generator is seeded once here, so calls
    must come in pyiqa's image order to give its values. Crops go through the network `batch` at
    a time (the result does not depend on it)."""
    params = jax.device_put(params)
    rng = np.random.RandomState(SEED)

    def score(img: np.ndarray, _: np.ndarray | None) -> float:
        c = crops(img, rng, n_crops)
        parts = [maniqa_parts(params, c[i:i + batch]) for i in range(0, len(c), batch)]
        return combine(jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts]))

    return score
