"""RAM's and DAPE's PyTorch checkpoints -> `models.ram.RAM` parameters.

`ram_swin_large_14m.pth` is a `torch.save`d dict whose `model` entry is the whole RAM state dict
(the original Swin key names under `visual_encoder.`, plus the captioning branches that tagging does
not use). `DAPE.pth` holds only the loralib LoRA tensors that the authors' `ram_lora.py` adds (r=8,
alpha=1): on each Swin `qkv`, a `MergedLinear` with q and v adapted (`lora_A` [2r, C], `lora_B`
[2C, r]); on each tagging-head cross-attention `query` and `key`, a `Linear` (`lora_A` [r, in],
`lora_B` [out, r]). Merged here as loralib merges on `eval()`: W += (B @ A) * alpha / r.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from osediff_jax.models.names import path_to_torch_key
from osediff_jax.weights.torch_format import CheckpointError, read_tensors, torch_key, torch_to_flax

TAGGING_PREFIXES = ("visual_encoder.", "image_proj.", "label_embed", "wordvec_proj.", "tagging_head.", "fc.")
DAPE_RANK, DAPE_ALPHA = 8, 1
_BUFFERS = ("relative_position_index", "attn_mask")  # recomputed by the model, as the authors' loader drops them
_NAMED_LEAVES = ("relative_position_bias_table", "label_embed")


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
