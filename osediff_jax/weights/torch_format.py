"""PyTorch state dicts <-> Flax parameter trees, and reading/writing the files that hold them.

Mapping rule (mechanical): a torch key `a.b.0.c.weight` is the Flax path `a/b_0/c/<leaf>`, where a
Linear `weight` [out, in] is a Dense `kernel` [in, out], a Conv `weight` [O, I, kh, kw] a Conv
`kernel` [kh, kw, I, O], a norm `weight` a `scale`, an Embedding `weight` an `embedding`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util

from osediff_jax.files.atomic import atomic_path
from osediff_jax.models.names import path_to_torch_key, torch_key_to_path

_IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")


class CheckpointError(ValueError):
    """A checkpoint that does not match what was expected; the message names file and key."""


def to_flax_layout(array: np.ndarray, leaf: str = "kernel") -> np.ndarray:
    """A torch weight in the layout of Flax leaf `leaf` (Dense/Conv kernels transposed)."""
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def to_torch_layout(array: np.ndarray, leaf: str = "kernel") -> np.ndarray:
    """The inverse of `to_flax_layout`."""
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def torch_key(path: tuple[str, ...]) -> str:
    """The torch state-dict key of the Flax parameter at `path`, by the mechanical rule above."""
    return f"{path_to_torch_key(path[:-1])}.{'bias' if path[-1] == 'bias' else 'weight'}"


def torch_to_flax(tensors: Iterable[tuple[str, np.ndarray]], shapes: Any, source: str, *,
                  key_of: Callable[[tuple[str, ...]], str] = torch_key, dtype: Any = None,
                  unexpected: str = "error", put: Callable[[np.ndarray], Any] = jax.device_put) -> dict:
    """Converts (torch key, array) pairs into a parameter tree with the structure of `shapes`.

    `shapes` is a tree of arrays or ShapeDtypeStructs (`jax.eval_shape(module.init, ...)["params"]`);
    `key_of(path)` names the torch key of each of its leaves (default: the mechanical rule). A 1x1
    conv weight stored for a Dense kernel (old VAE attention) and a vector stored with singleton
    axes (DISTS' alpha [1, C, 1, 1]) take the leaf's shape. Arrays keep their dtype unless `dtype`
    is given. A key that no leaf asks for is an error, or skipped with unexpected="ignore" (a
    torchvision file that also holds the classifier). Each array goes through `put` at once, so
    only one source tensor is held at a time.
    """
    expected = traverse_util.flatten_dict(shapes)
    path_of = {key_of(p): p for p in expected}
    out: dict[tuple[str, ...], Any] = {}
    for key, array in tensors:
        path = path_of.get(key)
        if path is None:
            if unexpected == "ignore" or _IGNORED_KEYS.search(key):
                continue
            raise CheckpointError(f"{source}: unexpected key {key!r} (the model has no parameter "
                                  f"{'/'.join(torch_key_to_path(key))})")
        leaf, want = path[-1], tuple(expected[path].shape)
        array = np.asarray(array)
        if leaf == "kernel" and array.ndim == 4 and len(want) == 2 and array.shape[2:] == (1, 1):
            array = array[:, :, 0, 0]
        value = to_flax_layout(array, leaf)
        if leaf != "kernel" and value.shape != want and value.size == np.prod(want):
            value = value.reshape(want)
        if tuple(value.shape) != want:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(array.shape)}, but the model "
                                  f"expects {tuple(to_torch_layout(np.empty(want), leaf).shape)}")
        out[path] = put(np.ascontiguousarray(value if dtype is None else value.astype(dtype)))
    missing = [key_of(p) for p in expected if p not in out]
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} weights missing, e.g. {missing[:3]}")
    return traverse_util.unflatten_dict(out)


def flax_to_torch(params: Mapping) -> dict[str, np.ndarray]:
    """The inverse of `torch_to_flax`: torch state-dict keys and layouts, dtypes kept."""
    return {torch_key(path): np.ascontiguousarray(to_torch_layout(np.asarray(value), path[-1]))
            for path, value in traverse_util.flatten_dict(params).items()}


# ---- files ----------------------------------------------------------------------------------

WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")


def find_weights(folder: Path) -> list[Path]:
    """The weight file(s) of one diffusers/transformers model folder, safetensors preferred."""
    for ext in (".safetensors", ".bin"):
        for stem in WEIGHT_NAMES:
            for variant in ("", ".fp16"):
                index = folder / f"{stem}{variant}{ext}.index.json"
                if index.is_file():
                    try:
                        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                    except (ValueError, KeyError) as e:
                        raise CheckpointError(f"{index}: not a valid shard index ({e})") from None
                    return [folder / s for s in shards]
                single = folder / f"{stem}{variant}{ext}"
                if single.is_file():
                    return [single]
    raise CheckpointError(f"{folder}: no weights found (expected e.g. diffusion_pytorch_model.safetensors, "
                          f"model.safetensors or a .bin file)")


def _safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="numpy")
        keys = list(handle.keys())
    except Exception as e:  # the library raises its own SafetensorError for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    size = path.stat().st_size
    with handle:
        for key in keys:
            try:
                yield key, handle.get_tensor(key)
            except Exception as e:
                raise CheckpointError(f"{path}: tensor {key!r} cannot be read ({e}); file size {size} bytes, "
                                      f"is it truncated?") from None


def _torch_bin(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """The tensors of a `torch.save`d state dict (.bin, .pth, .pt), or of the one in its 'model'
    entry; other entries are skipped."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading PyTorch checkpoints needs PyTorch (pip install 'osediff-jax[torch]'), "
                              f"or convert the folder to safetensors") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    if isinstance(state.get("model"), dict):  # a training checkpoint: {'model': state dict, ...} (RAM's)
        state = state["model"]
    for key in list(state):
        t = state.pop(key)
        if not isinstance(t, torch.Tensor):
            continue
        # numpy has no bfloat16: reinterpret the bits as ml_dtypes' bfloat16.
        yield key, (t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if t.dtype == torch.bfloat16
                    else t.numpy())


def read_tensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(key, array) pairs from safetensors or torch (.bin, .pth, .pt) files, one tensor at a time."""
    for f in map(Path, files):
        yield from (_safetensors(f) if f.suffix == ".safetensors" else _torch_bin(f))


def read_model_tensors(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    return read_tensors(find_weights(folder))


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Writes atomically (temporary file, then rename)."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), tmp, metadata=dict(metadata or {"format": "pt"}))
