"""The one-step OSEDiff generator as a pure, jittable function.

    sr_fn = make_sr_fn(unet, vae, alphas_cumprod, color_fix="adain")
    sr = jax.jit(sr_fn)(params, lq, prompt_embeds)          # params = {"unet": ..., "vae": ...}
    sr = jax.jit(sr_fn)(params, lq)                         # params also hold "prompt_embeds" [1, 77, C]

    sr_fn = make_sr_fn(unet, vae, alphas_cumprod, prompt_fn=tagger.make_prompt_fn(...))
    sr = jax.jit(sr_fn)(params, lq)   # params["prompt"] = {"ram": DAPE, "text_encoder": ...}: the authors' whole pipeline

`lq` is the LQ already upsampled to the output size, NHWC in [0, 1]; the result too. `params` are
merged (LoRA folded in: `OSEDiffWeights.merge`). Text encoding is `encode_prompt`, run once per prompt.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.inference import color_fix as color_fix_lib
from osediff_jax.inference.core import TIMESTEP, generate


def make_sr_fn(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, *, color_fix: str = "adain",
               prompt_fn: Callable[[Any, jax.Array], jax.Array] | None = None) -> Callable[..., jax.Array]:
    """sr_fn(params, lq, prompt_embeds=None, key=None) -> sr, all NHWC in [0, 1].

    Without `prompt_embeds`: `params["prompt_embeds"]` if stored there, else the embeddings that
    `prompt_fn(params["prompt"], lq)` writes from the LQ itself (`inference.tagger.make_prompt_fn`:
    DAPE tags of the upsampled LQ, as the authors' `test_osediff.py`)."""
    color_fix_lib.check(color_fix)
    alpha_bar = jnp.float32(alphas_cumprod[TIMESTEP])

    def sr_fn(params: Any, lq: jax.Array, prompt_embeds: jax.Array | None = None,
              key: jax.Array | None = None) -> jax.Array:
        lq = lq.astype(jnp.float32)
        if prompt_embeds is None:
            if "prompt_embeds" in params:
                prompt_embeds = params["prompt_embeds"]
            elif prompt_fn is not None and "prompt" in params:
                prompt_embeds = prompt_fn(params["prompt"], lq)
            else:
                raise ValueError("sr_fn needs prompt embeddings: pass prompt_embeds, store params['prompt_embeds'], "
                                 "or build it with prompt_fn and give params['prompt']")
        context = jnp.broadcast_to(prompt_embeds, (lq.shape[0], *prompt_embeds.shape[-2:]))
        _, out = generate(unet, vae, params, lq * 2.0 - 1.0, context, alpha_bar, key=key)
        return color_fix_lib.apply(color_fix, out * 0.5 + 0.5, lq)

    return sr_fn


def encode_prompt(text_encoder: nn.Module, params: Any, ids: np.ndarray) -> jax.Array:
    """Token ids [B, 77] -> prompt embeddings [B, 77, C] (the last hidden state)."""
    return text_encoder.apply({"params": params}, jnp.asarray(ids, jnp.int32))
