"""The one-step OSEDiff generator as a pure, jittable function (FACTS section 2).

    sr_fn = make_sr_fn(unet, vae, alphas_cumprod, color_fix="adain")
    sr = jax.jit(sr_fn)(params, lq, prompt_embeds)          # params = {"unet": ..., "vae": ...}

`lq` is the LQ already upsampled to the output size, NHWC in [0, 1]; the result too. `params` are
merged (LoRA folded in: `OSEDiffWeights.merge`). Text encoding is `encode_prompt`, run once per prompt.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax import color_fix as color_fix_lib

TIMESTEP = 999


def one_step_x0(z: jax.Array, eps: jax.Array, alpha_bar: jax.Array) -> jax.Array:
    """x0 = (z - sqrt(1 - a) eps) / sqrt(a), in float32 as diffusers' scheduler step computes it."""
    a = alpha_bar.astype(jnp.float32)
    return (z.astype(jnp.float32) - (1.0 - a) ** 0.5 * eps.astype(jnp.float32)) / a**0.5


def encode_latent(vae: nn.Module, vae_params: Any, image: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """Scaled latent of an NHWC image in [-1, 1]: the posterior mean, or a sample when `key` is given."""
    mean, logvar = vae.apply({"params": vae_params}, image, method="encode")
    z = mean if key is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    return z.astype(jnp.float32) * vae.scaling_factor


def decode_latent(vae: nn.Module, vae_params: Any, z: jax.Array) -> jax.Array:
    """Scaled latent -> NHWC image clamped to [-1, 1]."""
    img = vae.apply({"params": vae_params}, z / vae.scaling_factor, method="decode")
    return jnp.clip(img.astype(jnp.float32), -1.0, 1.0)


def make_sr_fn(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, *, color_fix: str = "adain"
               ) -> Callable[..., jax.Array]:
    """sr_fn(params, lq, prompt_embeds, key=None) -> sr, all NHWC in [0, 1]."""
    if color_fix not in color_fix_lib.METHODS:
        raise ValueError(f"color_fix={color_fix!r} is not supported; expected one of {color_fix_lib.METHODS}")
    alpha_bar = jnp.float32(alphas_cumprod[TIMESTEP])

    def sr_fn(params: Any, lq: jax.Array, prompt_embeds: jax.Array, key: jax.Array | None = None) -> jax.Array:
        lq = lq.astype(jnp.float32)
        z = encode_latent(vae, params["vae"], lq * 2.0 - 1.0, key)
        context = jnp.broadcast_to(prompt_embeds, (z.shape[0], *prompt_embeds.shape[-2:]))
        eps = unet.apply({"params": params["unet"]}, z, jnp.full((z.shape[0],), TIMESTEP), context)
        sr = decode_latent(vae, params["vae"], one_step_x0(z, eps, alpha_bar)) * 0.5 + 0.5
        return color_fix_lib.apply(color_fix, sr, lq)

    return sr_fn


def encode_prompt(text_encoder: nn.Module, params: Any, ids: np.ndarray) -> jax.Array:
    """Token ids [B, 77] -> prompt embeddings [B, 77, C] (the last hidden state)."""
    return text_encoder.apply({"params": params}, jnp.asarray(ids, jnp.int32))
