"""OSEDiff's latent variational score distillation and its regulariser, as in the
authors' `osediff.py` (`OSEDiff_reg.distribution_matching_loss`, `diff_loss`, `eps_to_mu`).

Scores are epsilon predictions of UNets; these functions only do the arithmetic around them, in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_sample(values: jax.Array, t: jax.Array) -> jax.Array:
    return values[t].astype(jnp.float32)[:, None, None, None]


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array, alphas_cumprod: jax.Array) -> jax.Array:
    """diffusers' DDPMScheduler.add_noise: sqrt(a_t) x0 + sqrt(1 - a_t) noise, t per sample."""
    a = _per_sample(alphas_cumprod, t)
    return a**0.5 * x0 + (1.0 - a) ** 0.5 * noise


def eps_to_x0(noisy: jax.Array, eps: jax.Array, t: jax.Array, alphas_cumprod: jax.Array) -> jax.Array:
    """The x0 estimate of an epsilon prediction, (noisy - sqrt(1 - a_t) eps) / sqrt(a_t) (`eps_to_mu`)."""
    a = _per_sample(alphas_cumprod, t)
    return (noisy.astype(jnp.float32) - (1.0 - a) ** 0.5 * eps.astype(jnp.float32)) / a**0.5


def cfg(eps_uncond: jax.Array, eps_cond: jax.Array, scale: float) -> jax.Array:
    """Classifier-free guidance; the unconditional branch is the negative prompt's."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def vsd_loss(x0: jax.Array, x0_fake: jax.Array, x0_real: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(loss, per-sample normaliser w) of the generator's latent x0 [B, h, w, C].

    g = (x0_fake - x0_real) / w with w = mean(|x0 - x0_real|) per sample; the loss is
    mean((x0 - stop_gradient(x0 - g))**2), the authors' expression: its value is mean(g**2) and its
    gradient with respect to x0 is 2 g / x0.size, up to the rounding of x0 - (x0 - g). Neither score
    nor w is differentiated.
    """
    x0_fake, x0_real = jax.lax.stop_gradient(x0_fake), jax.lax.stop_gradient(x0_real)
    w = jnp.mean(jnp.abs(jax.lax.stop_gradient(x0) - x0_real), axis=(1, 2, 3), keepdims=True)
    g = (x0_fake - x0_real) / w
    return jnp.mean((x0 - jax.lax.stop_gradient(x0 - g)) ** 2), w[:, 0, 0, 0]


def regularizer_loss(eps_pred: jax.Array, noise: jax.Array) -> jax.Array:
    """The fake score's denoising loss, mean((eps_pred - noise)**2) in float32 (`diff_loss`)."""
    return jnp.mean((eps_pred.astype(jnp.float32) - noise.astype(jnp.float32)) ** 2)
