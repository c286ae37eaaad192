"""LoRA as a separate parameter tree, with peft's semantics as OSEDiff uses them.

A LoRA tree mirrors the parameter tree of the model it adapts, down to each adapted module, whose
entry is `{"lora_A": {"kernel": A}, "lora_B": {"kernel": B}}` in Flax layout: a Dense module has
A [in, r] and B [r, out]; a kxk conv has A [k, k, in, r] (the base conv's stride and padding) and
B [1, 1, r, out]. `merge` adds `scale * A @ B` to the base kernels inside jit, so `jax.grad` can
run over the LoRA tree alone. peft's default `lora_alpha = 8` makes scale 8 / rank (2.0 at rank 4).
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from osediff_jax.models.names import path_to_torch_key, torch_key_to_path

LORA_ALPHA = 8.0
# The authors' module name patterns (substring matches on the torch parameter name).
UNET_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
                 "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")
VAE_PATTERNS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0")
UNET_ADAPTERS = ("default_encoder", "default_decoder", "default_others")

# diffusers' module registration order, which orders named_parameters() and so the authors' lists.
_ORDER = {name: i for i, name in enumerate((
    "encoder", "decoder", "quant_conv", "post_quant_conv", "conv_in", "time_embedding", "down_blocks", "up_blocks",
    "mid_block", "conv_norm_out", "conv_out", "attentions", "resnets", "downsamplers", "upsamplers", "norm", "proj_in",
    "transformer_blocks", "proj_out", "norm1", "attn1", "norm2", "attn2", "norm3", "ff", "group_norm", "to_q", "to_k",
    "to_v", "to_out", "conv1", "time_emb_proj", "conv2", "conv_shortcut", "net", "proj", "conv"))}


def scale(rank: int) -> float:
    return LORA_ALPHA / rank


def diffusers_order(name: str) -> tuple:
    """Sort key putting torch module names in diffusers' named_parameters() order."""
    return tuple((_ORDER.get(part, len(_ORDER)), 0) if not part.isdigit() else (-1, int(part))
                 for part in name.split("."))


def _kernels(shapes: Any) -> list[str]:
    """Torch names of every module with a `kernel` (Dense or Conv), in diffusers order."""
    names = [path_to_torch_key(p[:-1]) for p in traverse_util.flatten_dict(shapes) if p[-1] == "kernel"]
    return sorted(names, key=diffusers_order)


def unet_adapter(name: str) -> str:
    """The authors' split of UNet LoRA into three adapters by location."""
    if "down_blocks" in name or "conv_in" in name:
        return "default_encoder"
    if "up_blocks" in name or "conv_out" in name:
        return "default_decoder"
    return "default_others"


def unet_target_lists(unet_shapes: Any) -> dict[str, list[str]]:
    """The UNet target module lists per adapter, exactly as the authors' `initialize_unet` makes them."""
    lists: dict[str, list[str]] = {a: [] for a in UNET_ADAPTERS}
    for name in _kernels(unet_shapes):
        if "norm" not in name and any(p in name for p in UNET_PATTERNS):
            lists[unet_adapter(name)].append(name)
    return lists


def vae_target_list(vae_shapes: Any) -> list[str]:
    """The VAE encoder target list as the authors' `initialize_vae` makes it, duplicates included
    (their loop appends once per matching pattern; peft ignores the repeats)."""
    out = []
    for name in _kernels(vae_shapes):
        if "norm" in name:
            continue
        for pattern in VAE_PATTERNS:
            if pattern in name and "encoder" in name:
                out.append(name)
            elif "quant_conv" in name and "post_quant_conv" not in name:
                out.append(name)
    return out


def init(key: jax.Array, base_shapes: Any, modules: Iterable[str], rank: int) -> dict:
    """peft's "gaussian" init: A ~ N(0, (1/r)^2), B = 0, for the named (torch-style) modules."""
    flat = traverse_util.flatten_dict(base_shapes)
    a_shapes = {}
    for name in sorted(set(modules), key=diffusers_order):
        path = torch_key_to_path(name)
        kernel = flat.get(path + ("kernel",))
        if kernel is None:
            raise KeyError(f"LoRA target {name!r} is not a Dense or Conv module of the model")
        a_shapes[path] = (tuple(kernel.shape[:-1]) + (rank,), kernel.shape[-1], len(kernel.shape))
    # One draw for all A matrices: per-shape draws would compile one program per shape.
    sizes = [int(np.prod(a)) for a, _, _ in a_shapes.values()]
    draws = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32)) / rank
    out, offset = {}, 0
    for (path, (a_shape, k_out, ndim)), size in zip(a_shapes.items(), sizes):
        out[path + ("lora_A", "kernel")] = draws[offset:offset + size].reshape(a_shape)
        out[path + ("lora_B", "kernel")] = np.zeros((rank, k_out) if ndim == 2 else (1, 1, rank, k_out), np.float32)
        offset += size
    return traverse_util.unflatten_dict(out)


def delta(a: jax.Array, b: jax.Array) -> jax.Array:
    """A @ B in the base kernel's layout ([in, out] or [k, k, in, out])."""
    if a.ndim == 2:
        return a @ b
    return jnp.einsum("hwir,ro->hwio", a, b[0, 0])


def merge(params: Any, lora: Any, rank: int) -> Any:
    """Base parameters with `scale * A @ B` added to each adapted kernel (cheap; use inside jit)."""
    flat = dict(traverse_util.flatten_dict(params))
    adapters = traverse_util.flatten_dict(lora)
    s = scale(rank)
    for path, a in adapters.items():
        if path[-2:] != ("lora_A", "kernel"):
            continue
        mod = path[:-2]
        base = flat[mod + ("kernel",)]
        acc = jnp.promote_types(base.dtype, jnp.float32)  # float32 at least: bf16 kernels merge in float32
        d = delta(a.astype(acc), adapters[mod + ("lora_B", "kernel")].astype(acc))
        flat[mod + ("kernel",)] = (base.astype(acc) + s * d).astype(base.dtype)
    return traverse_util.unflatten_dict(flat)
