"""Stable Diffusion 2.x-base from a diffusers folder: modules from its configs, parameter trees from
its weights, without running `init` (shapes come from `jax.eval_shape`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from osediff_jax.models import schedule
from osediff_jax.models.sd import COMPONENTS, build_module, param_shapes
from osediff_jax.weights import torch_format
from osediff_jax.weights.torch_format import CheckpointError

# diffusers wrote the VAE mid-block attention under these names before 0.14.
_LEGACY_VAE = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (expected a diffusers config.json)") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _legacy_vae_names(tensors: Iterator[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    for key, value in tensors:
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in _LEGACY_VAE and "attentions" in parts:
            key = ".".join(parts[:-2] + [_LEGACY_VAE[parts[-2]], parts[-1]])
        yield key, value


def _text_model_prefix(tensors: Iterator[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
    # transformers 5 saves CLIPTextModel without the `text_model.` prefix that SD-2.x files have.
    for key, value in tensors:
        yield (key if key.startswith("text_model.") else f"text_model.{key}"), value


def load_component(folder: str | Path, name: str, *, dtype: Any = jnp.float32, attention_impl: str = "xla"
                   ) -> tuple[nn.Module, dict, dict]:
    """(module, params, config) of one component subfolder (`unet`, `vae` or `text_encoder`)."""
    sub = Path(folder) / name
    if not sub.is_dir():
        raise CheckpointError(f"{sub}: missing; a diffusers SD folder has {', '.join(COMPONENTS)}/")
    config = read_config(sub / "config.json")
    module = build_module(name, config, dtype=dtype, attention_impl=attention_impl, source=str(sub / "config.json"))
    tensors = torch_format.read_model_tensors(sub)
    if name == "vae":
        tensors = _legacy_vae_names(tensors)
    elif name == "text_encoder":
        tensors = _text_model_prefix(tensors)
    params = torch_format.torch_to_flax(tensors, param_shapes(name, module), source=str(sub))
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
        raise CheckpointError(f"{folder}: not a directory (expected a diffusers SD-2.x folder)")
    modules, params, configs = {}, {}, {}
    for name in components:
        modules[name], params[name], configs[name] = load_component(folder, name, dtype=dtype,
                                                                   attention_impl=attention_impl)
    sched_path = folder / "scheduler" / "scheduler_config.json"
    configs["scheduler"] = read_config(sched_path)
    alphas = schedule.alphas_cumprod_from_config(configs["scheduler"], source=str(sched_path))
    return StableDiffusion(modules, params, configs, alphas, folder / "tokenizer")
