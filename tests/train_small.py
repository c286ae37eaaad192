"""The small SD-shaped model of the training tests (`weights.random_sd`'s configuration) and its
jitted step, built once per configuration for the whole test session: compiling the step is most of
these tests' time, and the parity and option tests run the same plain step on the same shapes."""

import functools
from typing import Callable

import jax

from osediff_jax.models import schedule, sd
from osediff_jax.training.state import TrainConfig
from osediff_jax.training.step import make_step_fn
from osediff_jax.weights import random_sd

B, SIZE = 2, 64  # the batch of the step tests: two 64x64 images, 8x8 latents
UNET = sd.build_module("unet", random_sd.UNET)
VAE = sd.build_module("vae", random_sd.VAE)


@functools.cache
def step_fn(config: TrainConfig) -> Callable:
    """jax.jit(make_step_fn(...)) of the small model (any `random_sd` weights) for `config`."""
    return jax.jit(make_step_fn(UNET, VAE, schedule.alphas_cumprod(), config))
