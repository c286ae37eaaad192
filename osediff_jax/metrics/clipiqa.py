"""CLIP-IQA (Wang et al., AAAI 2023) as pyiqa 0.1.10 computes it (`pyiqa/archs/clipiqa_arch.py`,
`clip_model.py`): OpenAI CLIP RN50, the image normalised with CLIP's mean/std at its own size (no
resize; the attention pool's positional embedding is not added, pyiqa's `pos_embedding=False`),
cosine logits against five antonym prompt pairs, a softmax over each pair, the mean of the
"good" probabilities. The prompts' text features come from the CLIP text tower of the same
weight file, computed once when the scorer is built."""

from __future__ import annotations

import os
import re
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.metrics.weights import load_params, read_torchscript, weight_path

WEIGHTS_FILE = "RN50.pt"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
# pyiqa's prompt pairs ('Good image', 'bad image', 'Sharp image', 'blurry image', 'sharp edges',
# 'blurry edges', 'High resolution image', 'low resolution image', 'Noise-free image',
# 'noisy image') as `clip.tokenize` encodes them (CLIP BPE; start 49406, end 49407, zero padding).
PROMPT_TOKENS = (
    (49406, 886, 2867, 49407), (49406, 2103, 2867, 49407),
    (49406, 8157, 2867, 49407), (49406, 21977, 2867, 49407),
    (49406, 8157, 20938, 49407), (49406, 21977, 20938, 49407),
    (49406, 1400, 9977, 2867, 49407), (49406, 1042, 9977, 2867, 49407),
    (49406, 9307, 268, 1139, 2867, 49407), (49406, 33495, 2867, 49407),
)
CONTEXT = 77
VOCAB = 49408
HIGHEST = "highest"


def prompt_tokens() -> np.ndarray:
    """[10, 77] int32 token ids of the prompts, zero-padded as `clip.tokenize` pads."""
    out = np.zeros((len(PROMPT_TOKENS), CONTEXT), np.int32)
    for i, t in enumerate(PROMPT_TOKENS):
        out[i, :len(t)] = t
    return out


class BatchNorm(nn.Module):
    """Inference BatchNorm with torch's parameter names (eps 1e-5)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        w = self.param("weight", nn.initializers.ones, (c,))
        b = self.param("bias", nn.initializers.zeros, (c,))
        m = self.param("running_mean", nn.initializers.zeros, (c,))
        v = self.param("running_var", nn.initializers.ones, (c,))
        return (x - m) / jnp.sqrt(v + 1e-5) * w + b


def attention(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, mask: jax.Array | None = None) -> jax.Array:
    """Multi-head scaled dot-product attention of [B, L, D] projections (torch's MHA core)."""
    b, lq, d = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, d // heads)  # noqa: E731
    s = jnp.einsum("bqhd,bkhd->bhqk", split(q) * (d // heads) ** -0.5, split(k), precision=HIGHEST)
    if mask is not None:
        s = s + mask
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), split(v), precision=HIGHEST).reshape(b, lq, d)


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
    p = kernel // 2
    return nn.Conv(features, (kernel, kernel), padding=((p, p), (p, p)), use_bias=False, precision=HIGHEST, name=name)


def _avg_pool(x: jax.Array, k: int) -> jax.Array:
    return nn.avg_pool(x, (k, k), (k, k)) if k > 1 else x


class Bottleneck(nn.Module):
    """CLIP's anti-aliased ResNet bottleneck: the stride is an average pool after conv2."""

    planes: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = nn.relu(BatchNorm(name="bn1")(_conv(self.planes, 1, "conv1")(x)))
        out = nn.relu(BatchNorm(name="bn2")(_conv(self.planes, 3, "conv2")(out)))
        out = BatchNorm(name="bn3")(_conv(self.planes * 4, 1, "conv3")(_avg_pool(out, self.stride)))
        if self.stride > 1 or x.shape[-1] != self.planes * 4:
            x = BatchNorm(name="downsample_1")(_conv(self.planes * 4, 1, "downsample_0")(_avg_pool(x, self.stride)))
        return nn.relu(out + x)


class AttentionPool(nn.Module):
    """CLIP's attention pooling: the mean token attends over [mean, all positions] (no positional
    embedding, as pyiqa calls it); only that token's output is used."""

    heads: int
    output_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        dense = lambda f, name: nn.Dense(f, precision=HIGHEST, name=name)  # noqa: E731
        q = dense(c, "q_proj")(x[:, :1])
        out = attention(q, dense(c, "k_proj")(x), dense(c, "v_proj")(x), self.heads)
        return dense(self.output_dim, "c_proj")(out)[:, 0]


class ModifiedResNet(nn.Module):
    """CLIP RN50's image tower on NHWC input normalised with CLIP's mean/std -> [N, 1024]."""

    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    output_dim: int = 1024

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.width
        x = nn.relu(BatchNorm(name="bn1")(nn.Conv(w // 2, (3, 3), (2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                                                  precision=HIGHEST, name="conv1")(x)))
        x = nn.relu(BatchNorm(name="bn2")(_conv(w // 2, 3, "conv2")(x)))
        x = nn.relu(BatchNorm(name="bn3")(_conv(w, 3, "conv3")(x)))
        x = _avg_pool(x, 2)
        for i, n in enumerate(self.layers):
            for j in range(n):
                x = Bottleneck(w * 2 ** i, 2 if i and not j else 1, name=f"layer{i + 1}_{j}")(x)
        return AttentionPool(w * 32 // 64, self.output_dim, name="attnpool")(x)


class ResidualAttentionBlock(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        d = x.shape[-1]
        y = nn.LayerNorm(1e-5, name="ln_1")(x)
        w = self.param("attn_in_proj_weight", nn.initializers.lecun_normal(), (3 * d, d))
        b = self.param("attn_in_proj_bias", nn.initializers.zeros, (3 * d,))
        q, k, v = jnp.split(jnp.einsum("bld,ed->ble", y, w, precision=HIGHEST) + b, 3, axis=-1)
        x = x + nn.Dense(d, precision=HIGHEST, name="attn_out_proj")(attention(q, k, v, self.heads, mask))
        y = nn.Dense(4 * d, precision=HIGHEST, name="mlp_c_fc")(nn.LayerNorm(1e-5, name="ln_2")(x))
        y = y * jax.nn.sigmoid(1.702 * y)  # QuickGELU
        return x + nn.Dense(d, precision=HIGHEST, name="mlp_c_proj")(y)


class CLIPText(nn.Module):
    """CLIP's text tower: token ids [B, 77] -> projected features at the end token [B, 1024]."""

    width: int = 512
    layers: int = 12
    heads: int = 8
    embed_dim: int = 1024

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(VOCAB, self.width, name="token_embedding")(tokens)
        x = x + self.param("positional_embedding", nn.initializers.normal(0.01), (CONTEXT, self.width))
        mask = jnp.triu(jnp.full((CONTEXT, CONTEXT), -jnp.inf, jnp.float32), 1)
        for i in range(self.layers):
            x = ResidualAttentionBlock(self.heads, name=f"transformer_resblocks_{i}")(x, mask)
        x = nn.LayerNorm(1e-5, name="ln_final")(x)
        x = x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=-1)]
        proj = self.param("text_projection", nn.initializers.normal(self.width ** -0.5), (self.width, self.embed_dim))
        return jnp.matmul(x, proj, precision=HIGHEST)


class CLIP(nn.Module):
    """Both towers; `__call__` gives the image features (for init), `text` the text features."""

    def setup(self) -> None:
        self.visual = ModifiedResNet()
        self.text_tower = CLIPText()
        # A scalar in torch; shape (1,) here, as numpy's contiguous copies make 0-d arrays 1-d.
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), (1,))

    def __call__(self, x: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.visual(x), self.text_tower(tokens)

    def text(self, tokens: jax.Array) -> jax.Array:
        return self.text_tower(tokens)


def _normalize(v: jax.Array) -> jax.Array:
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


@jax.jit
def text_features(params: dict, tokens: jax.Array) -> jax.Array:
    """Unit-norm text features of token ids [B, 77] (done once per scorer)."""
    return _normalize(CLIP().apply({"params": params}, tokens, method=CLIP.text))


@jax.jit
def clipiqa_score(params: dict, text: jax.Array, x: jax.Array) -> jax.Array:
    """CLIP-IQA of NHWC images in [0, 1] (one size per call) -> [N]; `text` is `text_features` of
    `prompt_tokens()`."""
    img = _normalize(ModifiedResNet().apply({"params": params["visual"]}, (x - MEAN) / STD))
    logits = jnp.exp(params["logit_scale"][0]) * jnp.matmul(img, text.T, precision=HIGHEST)
    probs = jax.nn.softmax(logits.reshape(x.shape[0], -1, 2), axis=-1)
    return probs[..., 0].mean(axis=1)


_INDEXED = re.compile(r"^(layer\d|resblocks|downsample)_(\d+)$")


def torch_key(names: tuple[str, ...]) -> str:
    """Flax path -> key in CLIP's state dict: ('visual', 'layer1_0', 'conv1', 'kernel') ->
    'visual.layer1.0.conv1.weight'; the text tower's modules sit at the top level."""
    *mods, leaf = names
    mods = [m for m in mods if m != "text_tower"]
    parts = []
    for m in mods:
        for piece in re.sub(r"^(transformer)_(resblocks_\d+)$", r"\1.\2", m).split("."):
            piece = re.sub(r"^(attn|mlp)_(.+)$", r"\1.\2", piece)
            parts.append(_INDEXED.sub(r"\1.\2", piece))
    if leaf.startswith("attn_in_proj"):
        parts.append("attn")
        leaf = leaf[len("attn_"):]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    return ".".join(parts + [leaf])


def template() -> dict:
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    t = jax.ShapeDtypeStruct((1, CONTEXT), jnp.int32)
    return jax.eval_shape(CLIP().init, jax.random.key(0), x, t)["params"]


def clipiqa_params(weights_dir: str | os.PathLike | None) -> dict:
    """Flax params of CLIP RN50 from OpenAI's `RN50.pt` (a TorchScript archive) or a state dict
    of the same keys."""
    path = weight_path(weights_dir, WEIGHTS_FILE)
    return load_params(template(), path, torch_key, tensors=read_torchscript(path))


def clipiqa_scorer(params: dict) -> Callable[[np.ndarray, np.ndarray | None], float]:
    """(pred HxWx3 uint8, ignored) -> CLIP-IQA, with the prompts' text features computed once."""
    params = jax.device_put(params)
    text = text_features(params, prompt_tokens())
    return lambda img, _: float(clipiqa_score(params, text, img[None].astype(np.float32) / np.float32(255))[0])
