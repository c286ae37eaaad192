"""Training configurations: `configs/<name>.py` files with a `get_config()` returning an
`ml_collections.ConfigDict`, and `--config.<field>=<value>` overrides from the command line.

The fields every config has are those of `configs/tiny.py`; `train` holds `state.TrainConfig`'s
fields by name, so a config lists the objective's settings exactly as the step reads them.
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
    TrainConfig(**config.train)  # the objective's own checks, before any work
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
