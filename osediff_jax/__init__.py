"""OSEDiff in JAX/Flax: one-step diffusion real-world image super-resolution on SD-2.1-base."""

__version__ = "0.1.0"
