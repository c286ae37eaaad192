"""Flax linen models of SD-2.x-base, with parameter names that follow diffusers and transformers."""
