"""OSEDiff in JAX/Flax: one-step diffusion real-world image super-resolution on SD-2.1-base.

The top level holds the commands (`python -m osediff_jax.<command>`); the library lives in
subpackages, each importing only those before it in this order (tests/test_layout.py checks it):

    files -> models -> weights -> data -> inference -> metrics -> training -> cli -> commands
"""

__version__ = "0.1.0"
