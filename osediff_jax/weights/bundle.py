"""Model bundles, our own format of SD weights: an Orbax parameter tree plus the diffusers configs
as JSON and the tokenizer files, written atomically; loads much faster than a diffusers folder.
(Training checkpoints, with optimiser state and step, are another thing: see `training`.)"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from osediff_jax.files.atomic import atomic_dir, signals_deferred
from osediff_jax.models import schedule
from osediff_jax.models.sd import COMPONENTS, build_module, param_shapes
from osediff_jax.weights import diffusers_format, torch_format
from osediff_jax.weights.torch_format import CheckpointError

CONFIGS = "configs.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CONFIGS).is_file() and (Path(path) / "params").is_dir()


def _this_process_alone() -> ocp.StandardCheckpointer:
    """A checkpointer for host arrays that this process writes or reads on its own: in a job of
    several processes (jax.distributed), Orbax would otherwise wait at barriers for the others, e.g.
    while process 0 alone exports the trained model."""
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"process_{me}"))


def save_tree(path: Path, tree: Any) -> None:
    """An Orbax parameter tree, stored as host numpy arrays (dtypes kept). Ctrl-C and SIGTERM take
    effect when the save is complete, so that the caller can remove the folder cleanly."""
    with signals_deferred(), _this_process_alone() as ckpt:
        ckpt.save(Path(path).absolute(), jax.tree.map(np.asarray, tree))
        ckpt.wait_until_finished()


def restore_tree(path: Path, components: tuple[str, ...] | None = None) -> dict:
    """The tree `save_tree` wrote, checked to hold `components`; CheckpointError for missing or
    corrupt data, in one line."""
    path = Path(path).absolute()
    previous, sys.unraisablehook = sys.unraisablehook, _without_closed_loop_reports(sys.unraisablehook)
    with _this_process_alone() as ckpt:
        try:
            stored = ckpt.metadata(path)
            stored = getattr(stored, "item_metadata", stored)
            absent = [c for c in components or () if c not in stored]
            if absent:
                raise CheckpointError(f"{path}: no parameters for {absent}")
            tree = ckpt.restore(path)
        except CheckpointError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as e:  # Orbax and tensorstore raise all of these
            # The filter stays: the failed restore's other reads keep completing until the process ends.
            raise CheckpointError(f"{path}: unreadable or corrupt checkpoint data ({str(e).splitlines()[0]})") from None
    sys.unraisablehook = previous
    return tree


def _without_closed_loop_reports(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """`hook` without the reports of a failed restore: Orbax closes its event loop at the first
    failed read while tensorstore still completes the others, during the restore and after it, and
    each late completion reports 'Event loop is closed' through sys.unraisablehook. Those say
    nothing about the data."""
    def filtered(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            hook(unraisable)

    return filtered


def save(dst: str | Path, params: dict, configs: dict, tokenizer_dir: str | Path | None = None) -> None:
    """Writes `params` (a tree per component) and `configs` (diffusers config dicts) to `dst`."""
    with atomic_dir(dst) as tmp:
        save_tree(tmp / "params", params)
        (tmp / CONFIGS).write_text(json.dumps(configs, indent=2))
        if tokenizer_dir is not None:
            (tmp / "tokenizer").mkdir()
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copy2(Path(tokenizer_dir) / name, tmp / "tokenizer" / name)


def convert_diffusers(src: str | Path, dst: str | Path) -> None:
    """A diffusers SD-2.x folder -> our bundle at `dst`."""
    model = diffusers_format.load_diffusers(src)
    save(dst, model.params, model.configs, model.tokenizer_dir)


def load_configs(path: str | Path) -> dict:
    """The component configs of our checkpoint or a diffusers folder, without reading any weights."""
    path = Path(path)
    if is_checkpoint(path):
        return diffusers_format.read_config(path / CONFIGS)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a diffusers SD-2.x folder or a checkpoint)")
    return {c: diffusers_format.read_config(path / c / "config.json") for c in COMPONENTS}


def load(path: str | Path, components: tuple[str, ...] = COMPONENTS, *, dtype: Any = jnp.float32,
         attention_impl: str = "xla") -> diffusers_format.StableDiffusion:
    """Loads an SD-2.x model from our checkpoint or, failing that, from a diffusers folder."""
    path = Path(path)
    if not is_checkpoint(path):
        return diffusers_format.load_diffusers(path, components, dtype=dtype, attention_impl=attention_impl)
    configs = diffusers_format.read_config(path / CONFIGS)
    missing = [c for c in components if c not in configs]
    if missing:
        raise CheckpointError(f"{path / CONFIGS}: no config for {missing}")
    modules = {c: build_module(c, configs[c], dtype=dtype, attention_impl=attention_impl,
                                  source=f"{path / CONFIGS}[{c}]") for c in components}
    restored = restore_tree(path / "params", components)
    params = {}
    for c in components:
        expected = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(param_shapes(c, modules[c])).items()}
        got = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(restored[c]).items()}
        if got != expected:
            diff = sorted(set(got.items()) ^ set(expected.items()))[:2]
            raise CheckpointError(f"{path / 'params'}: parameters of {c!r} do not match its config, e.g. {diff}")
        params[c] = jax.device_put(restored[c])
    alphas = schedule.alphas_cumprod_from_config(configs.get("scheduler", {}), source=f"{path / CONFIGS}[scheduler]")
    return diffusers_format.StableDiffusion(modules, params, configs, alphas, path / "tokenizer")


# Weight file names diffusers and transformers look for.
_EXPORT_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                 "text_encoder": "model.safetensors"}
_CLASSES = {"unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer")}


def export_diffusers(model: diffusers_format.StableDiffusion, dst: str | Path) -> None:
    """Writes a diffusers-format folder (safetensors, configs, tokenizer, scheduler) that diffusers loads."""
    with atomic_dir(dst) as tmp:
        index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0"}
        for name, params in model.params.items():
            (tmp / name).mkdir()
            (tmp / name / "config.json").write_text(json.dumps(model.configs[name], indent=2))
            tensors = torch_format.flax_to_torch(params)
            if name == "text_encoder":
                # SD-2.x files carry this buffer (int64 [1, 77]); transformers 4 expects it.
                n = int(model.configs[name].get("max_position_embeddings", 77))
                tensors["text_model.embeddings.position_ids"] = np.arange(n, dtype=np.int64)[None]
            torch_format.write_safetensors(tmp / name / _EXPORT_FILES[name], tensors)
            index[name] = list(_CLASSES[name])
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(model.configs.get("scheduler", {}), indent=2))
        index["scheduler"] = ["diffusers", model.configs.get("scheduler", {}).get("_class_name", "DDPMScheduler")]
        if model.tokenizer_dir.is_dir():
            shutil.copytree(model.tokenizer_dir, tmp / "tokenizer")
            index["tokenizer"] = list(_CLASSES["tokenizer"])
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
