"""MUSIQ (Ke et al., ICCV 2021) with the KonIQ-10k weights, as pyiqa 0.1.10 computes it
(`pyiqa/archs/musiq_arch.py`, `pyiqa/data/multiscale_trans_util.py`).

Input handling, on the host: x -> (x - 0.5) * 2; the image at its own size plus two
aspect-preserving resizes (longer side 224 and 384; torch's bicubic, A = -0.75, no antialias);
each cut into 32x32 patches with TF "SAME" zero padding, each patch tagged with its hashed
spatial position (the patch grid mapped onto 10x10 by nearest neighbour) and its scale; the two
resized scales padded with masked patches to 7x7 and 12x12 patches. The network: a weight-
standardised ResNet stem per patch, a linear embedding, the hashed spatial and scale embeddings,
a class token, 14 pre-norm transformer blocks (padding masked with -1e3, as pyiqa does), the
score head on the class token."""

from __future__ import annotations

import math
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.metrics.weights import load_params, weight_path
from osediff_jax.models.layers import gelu

WEIGHTS_FILE = "musiq_koniq_ckpt-e95806b9.pth"
PATCH = 32
GRID = 10  # hashed spatial positions: GRID x GRID
LONGER_SIDES = (224, 384)
HIGHEST = "highest"


# ---- input handling (host) ------------------------------------------------------------------

def _cubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] matrix of torch's bicubic interpolation (align_corners=False, A = -0.75; taps
    clamped at the border; source index not clamped, as torch's cubic mode)."""
    a = -0.75
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    i0 = np.floor(src)
    t = (src - i0).astype(np.float64)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
    w = np.zeros((out_size, in_size), np.float64)
    for k in range(4):
        idx = np.clip(i0.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(w, (np.arange(out_size), idx), taps[:, k])
    return w.astype(np.float32)


def resize_bicubic(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWxC float32 -> size (h, w), as torch's F.interpolate(mode='bicubic', align_corners=False)."""
    wh = _cubic_weights(x.shape[0], size[0])
    ww = _cubic_weights(x.shape[1], size[1])
    return np.einsum("ih,hwc,jw->ijc", wh, x, ww, optimize=True).astype(np.float32)


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """torch's 'nearest' source indices (float32 scale, floor)."""
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64), in_size - 1)


def _patches(x: np.ndarray, scale_id: int, max_len: int | None) -> tuple[np.ndarray, ...]:
    """(patches [L, 32, 32, 3], spatial [L], scale [L], mask [L]) of one scale, padded or cut to
    `max_len` (None: all patches)."""
    h, w, _ = x.shape
    ch, cw = math.ceil(h / PATCH), math.ceil(w / PATCH)
    ph, pw = ch * PATCH - h, cw * PATCH - w
    x = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    p = x.reshape(ch, PATCH, cw, PATCH, 3).transpose(0, 2, 1, 3, 4).reshape(ch * cw, PATCH, PATCH, 3)
    spatial = (_nearest_index(GRID, ch)[:, None] * GRID + _nearest_index(GRID, cw)[None, :]).reshape(-1)
    scale = np.full(len(p), scale_id, np.int32)
    mask = np.ones(len(p), np.float32)
    if max_len is not None:
        n = min(len(p), max_len)
        pad = max_len - n
        p = np.concatenate([p[:n], np.zeros((pad,) + p.shape[1:], np.float32)])
        spatial, scale, mask = (np.concatenate([a[:n], np.zeros(pad, a.dtype)]) for a in (spatial, scale, mask))
    return p, spatial.astype(np.int32), scale, mask


def preprocess(img: np.ndarray) -> tuple[np.ndarray, ...]:
    """HxWx3 uint8 -> (patches [L, 32, 32, 3], spatial [L], scale [L], mask [L]): the two resized
    scales (smallest first), then the original resolution."""
    x = (img.astype(np.float32) / np.float32(255) - np.float32(0.5)) * np.float32(2)
    h, w, _ = x.shape
    parts = []
    for scale_id, side in enumerate(sorted(LONGER_SIDES)):
        ratio = side / max(h, w)
        resized = resize_bicubic(x, (round(h * ratio), round(w * ratio)))
        parts.append(_patches(resized, scale_id, math.ceil(side / PATCH) ** 2))
    parts.append(_patches(x, len(LONGER_SIDES), None))
    return tuple(np.concatenate(a) for a in zip(*parts))


# ---- network ------------------------------------------------------------------------------

def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class StdConv(nn.Module):
    """Weight-standardised conv with TF 'SAME' zero padding; `weight` kept in torch's layout."""

    features: int
    kernel: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("weight", nn.initializers.lecun_normal(in_axis=(1, 2, 3), out_axis=0),
                       (self.features, x.shape[-1], self.kernel, self.kernel))
        w = w - w.mean(axis=(1, 2, 3), keepdims=True)
        w = w / (jnp.std(w, axis=(1, 2, 3), keepdims=True, ddof=1) + 1e-5)
        pads = (_same_pad(x.shape[1], self.kernel, self.stride), _same_pad(x.shape[2], self.kernel, self.stride))
        return jax.lax.conv_general_dilated(x, w.transpose(2, 3, 1, 0), (self.stride, self.stride), pads,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST)


def _group_norm(eps: float, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(32, epsilon=eps, use_fast_variance=False, name=name)


class Bottleneck(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        identity = _group_norm(1e-4, "gn_proj")(StdConv(self.features, 1, name="conv_proj")(x))
        x = nn.relu(_group_norm(1e-4, "gn1")(StdConv(width, 1, name="conv1")(x)))
        x = nn.relu(_group_norm(1e-4, "gn2")(StdConv(width, 3, name="conv2")(x)))
        x = _group_norm(1e-4, "gn3")(StdConv(self.features, 1, name="conv3")(x))
        return nn.relu(x + identity)


class Attention(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, n, d = x.shape
        hd = d // self.heads

        def proj(name):
            return nn.Dense(d, precision=HIGHEST, name=name)(x).reshape(b, n, self.heads, hd)

        s = jnp.einsum("bqhd,bkhd->bhqk", proj("query"), proj("key"), precision=HIGHEST) * hd ** -0.5
        s = jnp.where((mask[:, None, :, None] * mask[:, None, None, :]) == 0, -1e3, s)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), proj("value"), precision=HIGHEST)
        return nn.Dense(d, precision=HIGHEST, name="out")(out.reshape(b, n, d))


class Block(nn.Module):
    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        ln = lambda name: nn.LayerNorm(1e-6, use_fast_variance=False, name=name)  # noqa: E731
        x = x + Attention(self.heads, name="attention")(ln("norm1")(x), mask)
        return x + Mlp(self.mlp_dim, name="mlp")(ln("norm2")(x))


class Mlp(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = gelu(nn.Dense(self.hidden, precision=HIGHEST, name="fc1")(x))
        return nn.Dense(x.shape[-1], precision=HIGHEST, name="fc2")(y)


class Encoder(nn.Module):
    """pyiqa's TransformerEncoder: embeddings, class token, blocks, final norm."""

    layers: int = 14
    heads: int = 6
    mlp_dim: int = 1152
    scales: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, spatial: jax.Array, scale: jax.Array, mask: jax.Array) -> jax.Array:
        d = x.shape[-1]
        init = nn.initializers.normal(0.02)
        pos = self.param("posembed_input_position_emb", init, (1, GRID * GRID, d))
        scale_emb = self.param("scaleembed_input_scale_emb", init, (self.scales, d))
        x = x + pos[0][spatial] + scale_emb[scale]
        cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, d)), x], axis=1)
        mask = jnp.concatenate([jnp.ones((x.shape[0], 1), mask.dtype), mask], axis=1)
        for i in range(self.layers):
            x = Block(self.heads, self.mlp_dim, name=f"transformer_encoderblock_{i}")(x, mask)
        return nn.LayerNorm(1e-6, use_fast_variance=False, name="encoder_norm")(x)


class MUSIQ(nn.Module):
    """Patches [B, L, 32, 32, 3] (scaled to [-1, 1]) with their spatial/scale indices and mask
    [B, L] -> score [B]."""

    hidden: int = 384

    @nn.compact
    def __call__(self, patches: jax.Array, spatial: jax.Array, scale: jax.Array, mask: jax.Array) -> jax.Array:
        b, n = patches.shape[:2]
        x = patches.reshape((b * n,) + patches.shape[2:])
        x = nn.GroupNorm(32, epsilon=1e-6, use_fast_variance=False, name="gn_root")(
            StdConv(64, 7, 2, name="conv_root")(x))
        x = nn.relu(x)
        pads = (_same_pad(x.shape[1], 3, 2), _same_pad(x.shape[2], 3, 2))
        x = nn.max_pool(jnp.pad(x, ((0, 0),) + pads + ((0, 0),)), (3, 3), (2, 2))  # zeros: after the ReLU
        x = Bottleneck(256, name="block1")(x)
        x = nn.Dense(self.hidden, precision=HIGHEST, name="embedding")(x.reshape(b, n, -1))
        x = Encoder(name="transformer_encoder")(x, spatial, scale, mask)
        return nn.Dense(1, precision=HIGHEST, name="head")(x[:, 0])[:, 0]


@jax.jit
def musiq_score(params: dict, patches: jax.Array, spatial: jax.Array, scale: jax.Array, mask: jax.Array) -> jax.Array:
    """Jitted MUSIQ of `preprocess` outputs stacked to a batch (one image size per call) -> [B]."""
    return MUSIQ().apply({"params": params}, patches, spatial, scale, mask)


def torch_key(names: tuple[str, ...]) -> str:
    """Flax path -> key in pyiqa's MUSIQ state dict."""
    *mods, leaf = names
    leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    leaf = leaf.replace("posembed_input_", "posembed_input.").replace("scaleembed_input_", "scaleembed_input.")
    mods = [m.replace("transformer_encoderblock_", "transformer.encoderblock_") for m in mods]
    return ".".join(mods + [leaf])


def musiq_params(weights_dir: str | os.PathLike | None) -> dict:
    """Flax params of MUSIQ from pyiqa's KonIQ checkpoint."""
    n = 1 + 4
    shapes = (jax.ShapeDtypeStruct((1, n, PATCH, PATCH, 3), jnp.float32),
              jax.ShapeDtypeStruct((1, n), jnp.int32), jax.ShapeDtypeStruct((1, n), jnp.int32),
              jax.ShapeDtypeStruct((1, n), jnp.float32))
    template = jax.eval_shape(MUSIQ().init, jax.random.key(0), *shapes)["params"]
    return load_params(template, weight_path(weights_dir, WEIGHTS_FILE), torch_key)


def musiq_scorer(params: dict) -> Callable[[np.ndarray, np.ndarray | None], float]:
    """(pred HxWx3 uint8, ignored) -> MUSIQ score (KonIQ MOS scale)."""
    params = jax.device_put(params)
    return lambda img, _: float(musiq_score(params, *(a[None] for a in preprocess(img)))[0])
