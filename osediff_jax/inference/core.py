"""The one forward core of the OSEDiff generator, shared by `sr_fn`, the tiled upscaler and the
training step: encode, UNet at t=999, one-step x0, decode, clamp (the forward of `OSEDiff_gen`
in the authors' `osediff.py`)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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


EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def generate(unet: nn.Module, vae: nn.Module, params: Any, image: jax.Array, context: jax.Array,
             alpha_bar: jax.Array, *, key: jax.Array | None = None, eps_fn: EpsFn | None = None
             ) -> tuple[jax.Array, jax.Array]:
    """(x0, output) for NHWC `image` in [-1, 1]: x0 the scaled latent of the one-step prediction,
    output its decoding clamped to [-1, 1]. `params` = {"unet", "vae"}; `context` [B, 77, C];
    `key` draws the VAE posterior sample (the mean without it); `eps_fn(z, context)` replaces the
    UNet call at t=999 (the tiled upscaler passes its tiled UNet)."""
    z = encode_latent(vae, params["vae"], image, key)
    if eps_fn is None:
        eps = unet.apply({"params": params["unet"]}, z, jnp.full((z.shape[0],), TIMESTEP), context)
    else:
        eps = eps_fn(z, context)
    x0 = one_step_x0(z, eps, alpha_bar)
    return x0, decode_latent(vae, params["vae"], x0)
