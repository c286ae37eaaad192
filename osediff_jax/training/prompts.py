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

from osediff_jax.inference.tagger import make_prompt_fn
from osediff_jax.models.ram import RAM
from osediff_jax.models.tag_prompts import load_tag_list, tag_table
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


def ram_prompt(ram: RAM, text_encoder: nn.Module, tokenizer_dir: str | Path) -> PromptSource:
    """The authors' training prompts: RAM's tags of each GT crop joined with ", " (`train_osediff.py`
    tags `x_tgt * 0.5 + 0.5` with RAM), tokenized and encoded inside the step. Reads RAM's and the
    text encoder's parameters from `frozen["ram"]` and `frozen["text_encoder"]` (`with_ram`)."""
    names, thresholds = load_tag_list()
    if ram.config.num_classes != len(names):
        raise ValueError(f"the RAM module has {ram.config.num_classes} classes; RAM's tag list has {len(names)}")
    fn = make_prompt_fn(ram, text_encoder, tag_table(load_tokenizer(tokenizer_dir), names), thresholds)

    def source(frozen: dict, gt: jax.Array) -> jax.Array:
        return fn({"ram": frozen["ram"], "text_encoder": frozen["text_encoder"]}, gt * 0.5 + 0.5).astype(jnp.float32)

    return source


def with_ram(frozen: dict, ram_params: Any, text_encoder_params: Any) -> dict:
    """`frozen` with what `ram_prompt` reads (a new dict)."""
    return {**frozen, "ram": ram_params, "text_encoder": text_encoder_params}
