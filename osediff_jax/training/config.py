"""Training configurations: `configs/<name>.py` files with a `get_config()` returning an
`ml_collections.ConfigDict`, and `--config.<field>=<value>` overrides from the command line.

Every config starts from `base()`, which lists and explains every field; `train` holds
`state.TrainConfig`'s fields by name, so a config sets the objective exactly as the step reads it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from pathlib import Path

import ml_collections

from osediff_jax.training.state import TrainConfig

PREFIX = "--config."


class ConfigError(ValueError):
    """A config that cannot be used: unknown field, bad value, missing weights or data. One line."""


def load(path: str | os.PathLike, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """`get_config()` of the Python file `path`, with `--config.a.b=value` (or `--config.a.b value`)
    overrides applied; values are read as the field's type (tuples and None as Python literals)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (expected configs/<name>.py with get_config())")
    spec = importlib.util.spec_from_file_location(f"_osediff_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    config = module.get_config()
    config.lock()
    args = list(overrides)
    while args:
        arg = args.pop(0)
        if not arg.startswith(PREFIX):
            raise ConfigError(f"unexpected argument {arg!r}; config fields are set as --config.<field>=<value>")
        name, eq, value = arg[len(PREFIX):].partition("=")
        if not eq:
            if not args:
                raise ConfigError(f"--config.{name}: no value given")
            value = args.pop(0)
        _set(config, name, value, path)
    try:
        TrainConfig(**config.train)  # the objective's own checks, before any work
    except ValueError as e:  # their messages start with the field's name
        raise ConfigError(f"config.train.{e}") from None
    return config


def _set(config: ml_collections.ConfigDict, name: str, text: str, path: Path) -> None:
    *parents, leaf = name.split(".")
    node = config
    for i, part in enumerate(parents):
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"--config.{name}: {path} has no field {'.'.join(parents[:i + 1])!r}")
    if leaf not in node:
        raise ConfigError(f"--config.{name}: unknown config field {name!r} (not in {path})")
    old = node[leaf]
    try:
        if isinstance(old, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            value = text.lower() in ("true", "1")
        elif isinstance(old, (int, float)):
            value = type(old)(ast.literal_eval(text)) if isinstance(old, float) else int(text)
        elif isinstance(old, str):
            value = text
        else:  # tuples, None
            value = ast.literal_eval(text)
            if isinstance(old, tuple) and isinstance(value, (str, int, float)):
                value = (value,)
            value = tuple(value) if isinstance(value, list) else value
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"--config.{name}={text}: not a {type(old).__name__} ({e})") from None
    with node.unlocked():
        node[leaf] = value


def base() -> ml_collections.ConfigDict:
    """The paper's setup (the authors' `train_osediff.py` launch command) with every field a config
    has; the files in configs/ change what differs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.sd_path = "stable-diffusion-2-1-base"  # diffusers folder or our bundle; "": a small random model
    c.dtype = "float32"  # compute dtype of the UNet/VAE ("bfloat16" on GPUs)
    c.lpips_weights = "weights"  # vgg16-397923af.pth + lpips_vgg.pth (loss), alexnet/lpips_alex (validation)
    c.random_lpips = False  # a random LPIPS backbone: only with the random model
    # Prompts: RAM's tags of each GT crop, as the authors train (RAM's .pth or a `convert ram` folder);
    # "": the fixed `train.prompt` (default empty) for every image.
    c.ram_path = "ram_swin_large_14m.pth"
    c.data = ml_collections.ConfigDict(dict(
        skimage_photos=False,  # scikit-image's bundled photographs instead of `sources`
        sources=("LSDIR/HR", "ffhq:10000"),  # folders or list files of HQ images; "path:N" keeps the first N
        dir="tfds", name="lsdir_ffhq",  # where the shards are built (once) and their name
        crop=512, threads=8))  # crop size; grain's reading threads
    c.batch_size = 16  # global: over every device and process (micro-batches inside it)
    c.steps = 100_000
    c.log_every = 10
    c.checkpoint_every = 500  # the authors save every 500 steps
    c.keep = 3
    c.export_every = 5000  # 0: only at the end
    c.val = ml_collections.ConfigDict(dict(
        every=1000, hr_dir="RealSR/HR", lq_dir="",  # lq_dir: LQ/HR pairs; empty: HR degraded once (seed)
        count=16, crop=512, seed=0))
    c.fsdp = 1  # devices per model replica that share the frozen weights and optimiser states
    c.fsdp_min_size = 2**18  # leaves of at least this many elements are split over fsdp (leaf_spec)
    c.train = train_fields()
    return c


def train_fields(**changes) -> ml_collections.ConfigDict:
    """A config's `train` field: `TrainConfig`'s fields with their defaults (the authors' settings)
    and `changes`; the degradation keeps its defaults (the authors' `params_realesrgan.yml`)."""
    fields = {f.name: getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig) if f.name != "degradation"}
    return ml_collections.ConfigDict({**fields, **changes})


def train_config(config: ml_collections.ConfigDict) -> TrainConfig:
    return TrainConfig(**config.train)


def to_text(config: ml_collections.ConfigDict) -> str:
    """The resolved config as written beside the checkpoints."""
    return config.to_json_best_effort(indent=1, sort_keys=True)
