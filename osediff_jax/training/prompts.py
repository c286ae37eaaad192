"""Prompt embeddings for training: a fixed prompt encoded once (the default, empty), or a function of
the GT batch that gives per-sample embeddings inside the step (the authors tag the GT crop with RAM
in `train_osediff.py`); the negative prompt of the real score's unconditional branch is encoded once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from osediff_jax.models.tokenizer import load_tokenizer, tokenize

# The negative prompt of the authors' training launch command (README of their release).
NEGATIVE_PROMPT = ("painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, "
                   "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
                   "signature, jpeg artifacts, deformed, lowres, over-smooth")

# (frozen, gt) -> [B, 77, C]: `frozen` is the step's frozen tree (any parameters the source needs can be
# stored there), `gt` the GT batch NHWC in [-1, 1]. Traced inside the jitted step.
PromptSource = Callable[[dict, jax.Array], jax.Array]


def fixed_prompt(frozen: dict, gt: jax.Array) -> jax.Array:
    """The same embeddings for every sample: `frozen["prompt_embeds"]` [1, 77, C], encoded once."""
    emb = frozen["prompt_embeds"]
    return jnp.broadcast_to(emb, (gt.shape[0], *emb.shape[1:]))


def encode(text_encoder: nn.Module, params: Any, tokenizer_dir: str | Path, prompts: list[str]) -> jax.Array:
    """Token ids to embeddings [N, 77, C] in float32, as the authors' `encode_prompt`."""
    ids = tokenize(load_tokenizer(tokenizer_dir), prompts)
    return jax.jit(text_encoder.apply)({"params": params}, jnp.asarray(ids)).astype(jnp.float32)
