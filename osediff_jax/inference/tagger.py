"""Prompts from images on the device: RAM/DAPE tags -> CLIP ids -> prompt embeddings, one jittable
function (the authors' `test_osediff.py` tags the upsampled LQ with DAPE; `train_osediff.py` tags
the GT crop with RAM).

    prompt_fn = make_prompt_fn(RAM(), text_encoder, tag_table(tokenizer, tags), thresholds)
    emb = jax.jit(prompt_fn)({"ram": ram_params, "text_encoder": te_params}, images)   # [B, 77, C]

Preprocessing as the reference's `ToTensor -> Resize((384, 384)) -> Normalize(ImageNet)`: with the
torch 2.0.1 / torchvision 0.15 the authors pinned, `Resize` on a tensor is bilinear without
antialiasing, i.e. `F.interpolate(..., mode="bilinear", align_corners=False)`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.data.resize import bilinear_antialiased, interpolate
from osediff_jax.models.ram import RAM
from osediff_jax.models.tag_prompts import TagTable, prompt_ids

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(images: jax.Array, size: int = 384, antialias: bool = False) -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> [B, size, size, 3] resized (bilinear; antialiased only if asked, as
    newer torchvision does by default) and normalised."""
    x = images.astype(jnp.float32)
    x = bilinear_antialiased(x, (size, size)) if antialias else interpolate(x, size=(size, size), mode="bilinear")
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def tag_logits(ram: RAM, params: Any, images: jax.Array, antialias: bool = False) -> jax.Array:
    """RAM logits [B, num_classes] of images in [0, 1] (any size)."""
    return ram.apply({"params": params}, preprocess(images, ram.config.image_size, antialias))


def tags(ram: RAM, params: Any, images: jax.Array, thresholds: np.ndarray, antialias: bool = False) -> jax.Array:
    """bool [B, num_classes]: sigmoid(logit) > the tag's threshold, as the authors' `generate_tag`."""
    return jax.nn.sigmoid(tag_logits(ram, params, images, antialias)) > jnp.asarray(thresholds)


def make_prompt_fn(ram: RAM, text_encoder: nn.Module, table: TagTable, thresholds: np.ndarray,
                   suffix: np.ndarray | None = None, *, return_tags: bool = False, antialias: bool = False
                   ) -> Callable[[Any, jax.Array], Any]:
    """prompt_fn(params, images) -> prompt embeddings [B, 77, C] of the images' tags (and the bool
    tags [B, N] with return_tags, to show the prompts); params = {"ram": ..., "text_encoder": ...}.
    suffix None: the training prompt ", ".join(tags); else (`tag_prompts.user_suffix`) the inference
    prompt f"{tags}, {user},"."""

    def prompt_fn(params: Any, images: jax.Array) -> Any:
        present = tags(ram, params["ram"], images, thresholds, antialias)
        emb = text_encoder.apply({"params": params["text_encoder"]}, prompt_ids(table, present, suffix))
        return (emb, present) if return_tags else emb

    return prompt_fn
