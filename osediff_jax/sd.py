"""Stable Diffusion 2.x-base from a diffusers folder: modules from its configs, parameter trees from
its weights, without running `init` (shapes come from `jax.eval_shape`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax import schedule, weights
from osediff_jax.models.text_encoder import CLIPTextModel
from osediff_jax.models.unet import unet_from_config
from osediff_jax.models.vae import vae_from_config

COMPONENTS = ("unet", "vae", "text_encoder")
# diffusers wrote the VAE mid-block attention under these names before 0.14.
_LEGACY_VAE = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise weights.CheckpointError(f"{path}: missing (expected a diffusers config.json)") from None
    except ValueError as e:
        raise weights.CheckpointError(f"{path}: not valid JSON ({e})") from None


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


def _legacy_vae_names(tensors: Iterator[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    for key, value in tensors:
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in _LEGACY_VAE and "attentions" in parts:
            key = ".".join(parts[:-2] + [_LEGACY_VAE[parts[-2]], parts[-1]])
        yield key, value


def load_component(folder: str | Path, name: str, *, dtype: Any = jnp.float32, attention_impl: str = "xla"
                   ) -> tuple[nn.Module, dict, dict]:
    """(module, params, config) of one component subfolder (`unet`, `vae` or `text_encoder`)."""
    sub = Path(folder) / name
    if not sub.is_dir():
        raise weights.CheckpointError(f"{sub}: missing; a diffusers SD folder has {', '.join(COMPONENTS)}/")
    config = read_config(sub / "config.json")
    module = build_module(name, config, dtype=dtype, attention_impl=attention_impl, source=str(sub / "config.json"))
    tensors = weights.read_model_tensors(sub)
    if name == "vae":
        tensors = _legacy_vae_names(tensors)
    params = weights.torch_to_flax(tensors, param_shapes(name, module), source=str(sub))
    return module, params, config


@dataclasses.dataclass
class StableDiffusion:
    """Modules, their parameter trees (`params[name]`), configs, noise schedule and tokenizer folder."""

    modules: dict[str, nn.Module]
    params: dict[str, dict]
    configs: dict[str, dict]
    alphas_cumprod: np.ndarray
    tokenizer_dir: Path


def load_diffusers(folder: str | Path, components: tuple[str, ...] = COMPONENTS, *, dtype: Any = jnp.float32,
                   attention_impl: str = "xla") -> StableDiffusion:
    folder = Path(folder)
    if not folder.is_dir():
        raise weights.CheckpointError(f"{folder}: not a directory (expected a diffusers SD-2.x folder)")
    modules, params, configs = {}, {}, {}
    for name in components:
        modules[name], params[name], configs[name] = load_component(folder, name, dtype=dtype,
                                                                   attention_impl=attention_impl)
    sched_path = folder / "scheduler" / "scheduler_config.json"
    configs["scheduler"] = read_config(sched_path)
    alphas = schedule.alphas_cumprod_from_config(configs["scheduler"], source=str(sched_path))
    return StableDiffusion(modules, params, configs, alphas, folder / "tokenizer")
