"""RAM's and DAPE's PyTorch checkpoints -> `models.ram.RAM` parameters.

`ram_swin_large_14m.pth` is a `torch.save`d dict whose `model` entry is the whole RAM state dict
(the original Swin key names under `visual_encoder.`, plus the captioning branches that tagging does
not use). `DAPE.pth` holds only the loralib LoRA tensors that the authors' `ram_lora.py` adds (r=8,
alpha=1): on each Swin `qkv`, a `MergedLinear` with q and v adapted (`lora_A` [2r, C], `lora_B`
[2C, r]); on each tagging-head cross-attention `query` and `key`, a `Linear` (`lora_A` [r, in],
`lora_B` [out, r]). Merged here as loralib merges on `eval()`: W += (B @ A) * alpha / r.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.files.atomic import atomic_dir
from osediff_jax.models.names import path_to_torch_key
from osediff_jax.models.ram import RAM, RAMConfig
from osediff_jax.weights import bundle
from osediff_jax.weights.torch_format import CheckpointError, read_tensors, torch_key, torch_to_flax

TAGGING_PREFIXES = ("visual_encoder.", "image_proj.", "label_embed", "wordvec_proj.", "tagging_head.", "fc.")
DAPE_RANK, DAPE_ALPHA = 8, 1
_BUFFERS = ("relative_position_index", "attn_mask")  # recomputed by the model, as the authors' loader drops them
_NAMED_LEAVES = ("relative_position_bias_table", "label_embed")
META = "ram.json"


def key_of(path: tuple[str, ...]) -> str:
    """The checkpoint key of a RAM parameter: the mechanical rule, except for raw parameters that
    keep their own name."""
    if path[-1] in _NAMED_LEAVES:
        return ".".join(filter(None, (path_to_torch_key(path[:-1]), path[-1])))
    return torch_key(path)


def tagging_tensors(tensors: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The tagging path's tensors of a RAM state dict: the authors' renaming of `vision_multi` to
    `tagging_head` applied, the captioning branches and the recomputed buffers dropped."""
    out = {}
    for key, value in tensors:
        key = key.replace("vision_multi", "tagging_head")
        if key.startswith(TAGGING_PREFIXES) and not key.endswith(_BUFFERS):
            out[key] = value
    return out


def read_ram(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`tagging_tensors` of a RAM checkpoint file (its 'model' dict, or a flat state dict)."""
    tensors = tagging_tensors(read_tensors([Path(path)]))
    if not tensors:
        raise CheckpointError(f"{path}: no RAM tagging weights found (expected keys such as "
                              f"'visual_encoder.patch_embed.proj.weight', in the file or in its 'model' dict)")
    return tensors


def read_dape(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """DAPE's LoRA tensors (a flat dict of `...lora_A` / `...lora_B` keys)."""
    tensors = dict(read_tensors([Path(path)]))
    other = [k for k in tensors if not k.endswith((".lora_A", ".lora_B"))]
    if other or not tensors:
        raise CheckpointError(f"{path}: not a DAPE LoRA file (expected only '.lora_A'/'.lora_B' keys"
                              + (f", found {other[0]!r})" if other else ", found none)"))
    return tensors


def merge_dape(ram: dict[str, np.ndarray], dape: dict[str, np.ndarray], source: str = "DAPE") -> dict[str, np.ndarray]:
    """RAM's tensors with DAPE's LoRA merged in (a new dict; `ram` is not modified)."""
    out = dict(ram)
    scale = DAPE_ALPHA / DAPE_RANK
    for key in sorted(k for k in dape if k.endswith(".lora_A")):
        module = key.removesuffix(".lora_A")
        a = np.asarray(dape[key], np.float32)
        b = np.asarray(dape.get(f"{module}.lora_B", np.zeros(0)), np.float32)
        w_key = f"{module}.weight"
        if w_key not in ram or b.size == 0:
            raise CheckpointError(f"{source}: {key!r} has no matching " + ("RAM weight" if w_key not in ram else "lora_B"))
        w = np.asarray(ram[w_key], np.float32)
        if module.endswith(".qkv"):
            # loralib MergedLinear, enable_lora=[True, False, True]: group g of A's rows (r each)
            # with group g of B's rows (C each) updates q (g=0) and v (g=1); k is untouched.
            c, r = w.shape[0] // 3, a.shape[0] // 2
            if a.shape != (2 * r, w.shape[1]) or b.shape != (2 * c, r):
                raise CheckpointError(f"{source}: {module} LoRA shapes {a.shape}, {b.shape} do not fit qkv {w.shape}")
            delta = np.zeros_like(w)
            delta[:c] = b[:c] @ a[:r]
            delta[2 * c:] = b[c:] @ a[r:]
        else:
            if a.shape[1] != w.shape[1] or b.shape != (w.shape[0], a.shape[0]):
                raise CheckpointError(f"{source}: {module} LoRA shapes {a.shape}, {b.shape} do not fit {w.shape}")
            delta = b @ a
        out[w_key] = (w + delta * scale).astype(np.asarray(ram[w_key]).dtype)
    return out


def ram_params(tensors: dict[str, np.ndarray], shapes: Any, source: str, dtype: Any = np.float32) -> dict:
    """A RAM parameter tree with the structure of `shapes` from checkpoint tensors."""
    return torch_to_flax(tensors.items(), shapes, source, key_of=key_of, dtype=dtype)


def param_shapes(config: RAMConfig) -> Any:
    x = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
    return jax.eval_shape(RAM(config).init, jax.random.key(0), x)["params"]


def infer_config(tensors: dict[str, np.ndarray], source: str) -> RAMConfig:
    """The architecture of RAM-format tensors, from their shapes (RAM's Swin-L for the real file; a
    smaller random model in the same format works too). The input size and the head's number of
    attention heads are not in the shapes: RAM's 384 and 4."""
    def shape(key):
        if key not in tensors:
            raise CheckpointError(f"{source}: {key!r} missing")
        return np.shape(tensors[key])

    depths, heads = [], []
    while f"visual_encoder.layers.{len(depths)}.blocks.0.norm1.weight" in tensors:
        i = len(depths)
        depths.append(1 + max(int(k.split(".")[4]) for k in tensors if k.startswith(f"visual_encoder.layers.{i}.blocks.")))
        heads.append(shape(f"visual_encoder.layers.{i}.blocks.0.attn.relative_position_bias_table")[1])
    if not depths:
        raise CheckpointError(f"{source}: no Swin blocks ('visual_encoder.layers.0.blocks.0...')")
    table = shape("visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table")[0]
    layers = 1 + max(int(k.split(".")[3]) for k in tensors if k.startswith("tagging_head.encoder.layer."))
    return RAMConfig(embed_dim=shape("visual_encoder.patch_embed.proj.weight")[0],
                     patch_size=shape("visual_encoder.patch_embed.proj.weight")[-1], depths=tuple(depths),
                     num_heads=tuple(heads), window_size=(int(round(table**0.5)) + 1) // 2,
                     mlp_ratio=shape("visual_encoder.layers.0.blocks.0.mlp.fc1.weight")[0]
                     / shape("visual_encoder.layers.0.blocks.0.mlp.fc1.weight")[1],
                     num_classes=shape("label_embed")[0], embed_width=shape("label_embed")[1], head_layers=layers,
                     head_hidden=shape("wordvec_proj.weight")[0],
                     head_intermediate=shape("tagging_head.encoder.layer.0.intermediate.dense.weight")[0])


def convert(src: str | os.PathLike, dst: str | os.PathLike, dape: str | os.PathLike | None = None) -> None:
    """RAM's checkpoint (`src`), with DAPE's LoRA (`dape`) merged in if given, -> our Orbax
    checkpoint at `dst` (the parameters and `ram.json`: the architecture and whether it is DAPE)."""
    module, params = load(src, dape)
    with atomic_dir(dst) as tmp:
        bundle.save_tree(tmp / "params", params)
        (tmp / META).write_text(json.dumps({"config": dataclasses.asdict(module.config), "dape": dape is not None},
                                           indent=1))


def load(src: str | os.PathLike, dape: str | os.PathLike | None = None, dtype: Any = jnp.float32) -> tuple[RAM, Any]:
    """(module, params) from our checkpoint (`convert`), or from a RAM .pth file with, if given,
    DAPE's LoRA file merged in (both need PyTorch)."""
    src = Path(src)
    if src.is_file():
        tensors = read_ram(src)
        config = infer_config(tensors, str(src))
        if dape is not None:
            tensors = merge_dape(tensors, read_dape(dape), str(dape))
        params = ram_params(tensors, param_shapes(config), str(src))
    else:
        if dape is not None:
            raise ValueError(f"{src}: DAPE's LoRA is merged into a RAM .pth file, not into a converted checkpoint")
        if not (src / META).is_file():
            raise CheckpointError(f"{src}: neither a RAM .pth file nor a converted RAM/DAPE checkpoint ({META} missing)")
        fields = json.loads((src / META).read_text())["config"]
        config = RAMConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        params = bundle.restore_tree(src / "params")
    return RAM(config, dtype=dtype), params
