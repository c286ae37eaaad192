"""The SD-2.x components as modules built from their diffusers configs, and their parameter shapes."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from osediff_jax.models.text_encoder import CLIPTextModel
from osediff_jax.models.unet import unet_from_config
from osediff_jax.models.vae import vae_from_config

COMPONENTS = ("unet", "vae", "text_encoder")


def build_module(name: str, config: dict, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 attention_impl: str = "xla", source: str | None = None) -> nn.Module:
    builders: dict[str, Callable[..., nn.Module]] = {
        "unet": unet_from_config, "vae": vae_from_config, "text_encoder": CLIPTextModel.from_config}
    kw = dict(dtype=dtype, param_dtype=param_dtype, source=source or f"{name} config")
    if name != "text_encoder":
        kw["attention_impl"] = attention_impl
    return builders[name](config, **kw)


def param_shapes(name: str, module: nn.Module) -> Any:
    """Parameter shapes and dtypes, traced on tiny inputs (no weights are materialised)."""
    key = jax.random.key(0)
    if name == "unet":
        args = (jnp.zeros((1, 8, 8, module.in_channels)), jnp.zeros((1,)),
                jnp.zeros((1, 1, module.cross_attention_dim)))
        return jax.eval_shape(module.init, key, *args)["params"]
    if name == "vae":
        return jax.eval_shape(module.init, key, jnp.zeros((1, 8, 8, module.in_channels)))["params"]
    return jax.eval_shape(module.init, key, jnp.zeros((1, 8), jnp.int32))["params"]
