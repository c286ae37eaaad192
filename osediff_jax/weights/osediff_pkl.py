"""The OSEDiff weights on top of SD-2.1: UNet and VAE-encoder LoRA trees, the fully trained UNet
`conv_in`, and their ranks; read from and written to the authors' `osediff.pkl` format, and stored
in our Orbax format.

`osediff.pkl` is a `torch.save` dict (written by `save_model` in the authors' `osediff.py`): reading
and writing it needs PyTorch, which only this conversion uses (`pip install 'osediff-jax[torch]'`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from osediff_jax.files.atomic import atomic_dir, atomic_path
from osediff_jax.models import lora
from osediff_jax.models.names import path_to_torch_key, torch_key_to_path
from osediff_jax.models.sd import build_module, param_shapes
from osediff_jax.weights import bundle
from osediff_jax.weights.torch_format import (
    CheckpointError,
    to_flax_layout,
    to_torch_layout,
)

META = "osediff.json"
_LIST_KEYS = {"default_encoder": "unet_lora_encoder_modules", "default_decoder": "unet_lora_decoder_modules",
              "default_others": "unet_lora_others_modules"}


@dataclasses.dataclass
class OSEDiffWeights:
    unet_lora: dict
    vae_lora: dict
    conv_in: dict  # {"kernel", "bias"}: replaces the base UNet's conv_in
    rank_unet: int
    rank_vae: int
    unet_modules: dict[str, list[str]]  # adapter name -> module names, as the authors list them
    vae_modules: list[str]

    def merge(self, unet_params: Any, vae_params: Any) -> tuple[Any, Any]:
        """Merged UNet and VAE parameters for inference (jit-friendly)."""
        unet_params = {**unet_params, "conv_in": {k: v.astype(unet_params["conv_in"][k].dtype)
                                                  for k, v in self.conv_in.items()}}
        return lora.merge(unet_params, self.unet_lora, self.rank_unet), lora.merge(vae_params, self.vae_lora,
                                                                                   self.rank_vae)


def new(key: jax.Array, unet_shapes: Any, vae_shapes: Any, unet_params: Any, rank: int = 4) -> OSEDiffWeights:
    """Freshly initialised weights for training: gaussian LoRA, conv_in copied from the base UNet."""
    unet_modules = lora.unet_target_lists(unet_shapes)
    vae_modules = lora.vae_target_list(vae_shapes)
    k1, k2 = jax.random.split(key)
    return OSEDiffWeights(
        lora.init(k1, unet_shapes, [m for ms in unet_modules.values() for m in ms], rank),
        lora.init(k2, vae_shapes, vae_modules, rank),
        {k: np.asarray(v, np.float32) for k, v in unet_params["conv_in"].items()},
        rank, rank, unet_modules, vae_modules)


def _torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading or writing osediff.pkl needs PyTorch: pip install 'osediff-jax[torch]'") from None
    return torch


def _lora_tree(state: dict, shapes: Any, adapter_of: dict[str, str], source: str) -> tuple[dict, dict]:
    """LoRA and `base_layer` tensors of one model from torch keys `<module>.lora_A.<adapter>.weight`."""
    flat_shapes = traverse_util.flatten_dict(shapes)
    tree, base = {}, {}
    for key, value in state.items():
        value = value.float().numpy() if str(value.dtype) == "torch.bfloat16" else value.numpy()
        parts = key.split(".")
        if "base_layer" in parts:
            i = parts.index("base_layer")
            path = torch_key_to_path(".".join(parts[:i]))
            base[path + ("kernel" if parts[-1] == "weight" else "bias",)] = (
                to_flax_layout(value) if parts[-1] == "weight" else value)
            continue
        if len(parts) < 4 or parts[-3] not in ("lora_A", "lora_B") or parts[-1] != "weight":
            raise CheckpointError(f"{source}: unexpected key {key!r} (expected <module>.lora_A/lora_B.<adapter>.weight)")
        module = ".".join(parts[:-3])
        if adapter_of.get(module) != parts[-2]:
            raise CheckpointError(f"{source}: {key!r}: module {module!r} is not listed for adapter {parts[-2]!r}")
        path = torch_key_to_path(module)
        kernel = flat_shapes.get(path + ("kernel",))
        if kernel is None:
            raise CheckpointError(f"{source}: {key!r}: the base model has no Dense or Conv module {module!r}")
        value = to_flax_layout(value)
        io = (kernel.shape[:-1], kernel.shape[-1])
        ok = (value.shape[:-1] == io[0]) if parts[-3] == "lora_A" else (value.shape[-1] == io[1])
        if not ok:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(to_torch_layout(value).shape)}, which does not "
                                  f"fit the base module's kernel {tuple(kernel.shape)} (Flax layout)")
        tree[path + (parts[-3], "kernel")] = value
    return traverse_util.unflatten_dict(tree), base


def read_pkl(path: str | os.PathLike, unet_shapes: Any, vae_shapes: Any) -> OSEDiffWeights:
    """Reads the authors' `osediff.pkl` against the base model's parameter shapes."""
    torch = _torch()
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable osediff.pkl ({e})") from None
    keys = ("rank_unet", "rank_vae", "vae_lora_encoder_modules", "state_dict_unet", "state_dict_vae", *_LIST_KEYS.values())
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: missing {missing} (not an osediff.pkl)")
    unet_modules = {a: list(ckpt[k]) for a, k in _LIST_KEYS.items()}
    adapter_of = {m: a for a, ms in unet_modules.items() for m in ms}
    unet_lora, base = _lora_tree(ckpt["state_dict_unet"], unet_shapes, adapter_of, f"{path}[state_dict_unet]")
    conv_in = {p[-1]: v for p, v in base.items() if p[:-1] == ("conv_in",)}
    if sorted(conv_in) != ["bias", "kernel"] or len(base) != 2:
        raise CheckpointError(f"{path}[state_dict_unet]: expected conv_in.base_layer.weight and .bias as the only "
                              f"base weights, found {sorted(path_to_torch_key(p) for p in base)}")
    vae_lora, vae_base = _lora_tree(ckpt["state_dict_vae"], vae_shapes,
                                    {m: "default_encoder" for m in ckpt["vae_lora_encoder_modules"]},
                                    f"{path}[state_dict_vae]")
    if vae_base:
        raise CheckpointError(f"{path}[state_dict_vae]: unexpected base weights {sorted(map(str, vae_base))}")
    return OSEDiffWeights(unet_lora, vae_lora, conv_in, int(ckpt["rank_unet"]), int(ckpt["rank_vae"]),
                          unet_modules, list(ckpt["vae_lora_encoder_modules"]))


def _state(tree: dict, adapter_of: Any) -> dict:
    out = {}
    flat = traverse_util.flatten_dict(tree)
    for path in sorted(flat, key=lambda p: lora.diffusers_order(path_to_torch_key(p))):
        module = path_to_torch_key(path[:-2])
        out[f"{module}.{path[-2]}.{adapter_of(module)}.weight"] = to_torch_layout(np.asarray(flat[path]))
    return out


def write_pkl(w: OSEDiffWeights, path: str | os.PathLike) -> None:
    """Writes the authors' format (loadable by their `OSEDiff_test.load_ckpt`), atomically."""
    torch = _torch()
    path = Path(path)
    state_unet = {"conv_in.base_layer.weight": to_torch_layout(np.asarray(w.conv_in["kernel"])),
                  "conv_in.base_layer.bias": np.asarray(w.conv_in["bias"])}
    state_unet.update(_state(w.unet_lora, lora.unet_adapter))
    state_vae = _state(w.vae_lora, lambda m: "default_encoder")
    tensors = lambda d: {k: torch.from_numpy(np.array(v, copy=True)) for k, v in d.items()}
    obj = {"vae_lora_encoder_modules": list(w.vae_modules),
           **{k: list(w.unet_modules[a]) for a, k in _LIST_KEYS.items()},
           "rank_unet": int(w.rank_unet), "rank_vae": int(w.rank_vae),
           "state_dict_unet": tensors(state_unet), "state_dict_vae": tensors(state_vae)}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save(w: OSEDiffWeights, dst: str | os.PathLike) -> None:
    """Our format: an Orbax tree (unet_lora, vae_lora, conv_in) and the ranks and lists as JSON."""
    with atomic_dir(dst) as tmp:
        bundle.save_tree(tmp / "params", {"unet_lora": w.unet_lora, "vae_lora": w.vae_lora, "conv_in": w.conv_in})
        (tmp / META).write_text(json.dumps({"rank_unet": w.rank_unet, "rank_vae": w.rank_vae,
                                            "unet_modules": w.unet_modules, "vae_modules": w.vae_modules}, indent=1))


def load(src: str | os.PathLike, unet_shapes: Any = None, vae_shapes: Any = None) -> OSEDiffWeights:
    """From our Orbax format, or from an `osediff.pkl` file (which needs the base shapes)."""
    src = Path(src)
    if src.is_file():
        if unet_shapes is None or vae_shapes is None:
            raise ValueError(f"{src}: reading an osediff.pkl needs the base UNet and VAE parameter shapes")
        return read_pkl(src, unet_shapes, vae_shapes)
    if not (src / META).is_file():
        raise CheckpointError(f"{src}: neither an osediff.pkl file nor a converted OSEDiff checkpoint ({META} missing)")
    meta = json.loads((src / META).read_text())
    trees = bundle.restore_tree(src / "params", ("unet_lora", "vae_lora", "conv_in"))
    return OSEDiffWeights(trees["unet_lora"], trees["vae_lora"], trees["conv_in"], int(meta["rank_unet"]),
                          int(meta["rank_vae"]), meta["unet_modules"], meta["vae_modules"])


def base_shapes(sd_path: str | os.PathLike) -> tuple[Any, Any]:
    """UNet and VAE parameter shapes from the base model's configs alone (no weights read)."""
    configs = bundle.load_configs(sd_path)
    return tuple(param_shapes(c, build_module(c, configs[c], source=f"{sd_path}: {c} config")) for c in ("unet", "vae"))


def save_merged(sd_path: str | os.PathLike, src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """SD-2.1 (`sd_path`) with OSEDiff weights (`src`: osediff.pkl or ours) merged in, as a bundle at
    `dst` marked as OSEDiff's, which `bundle.load` and `upscale --checkpoint` read."""
    save_merged_model(bundle.load(sd_path), load(src, *base_shapes(sd_path)), dst)


def save_merged_model(model: Any, w: OSEDiffWeights, dst: str | os.PathLike) -> None:
    """`save_merged` for a loaded SD model (`bundle.load`) and weights in memory."""
    params = dict(model.params)
    params["unet"], params["vae"] = jax.jit(w.merge)(params["unet"], params["vae"])
    # The mark keeps a plain SD bundle from being taken for a merged one.
    configs = {**model.configs, "osediff": {"merged": True, "rank_unet": w.rank_unet, "rank_vae": w.rank_vae}}
    bundle.save(dst, params, configs, model.tokenizer_dir)
