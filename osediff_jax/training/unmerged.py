"""LoRA applied unmerged, and what the backward pass stores (rematerialisation), by intercepting
Flax module calls.

Inference folds LoRA into the kernels (`models.lora.merge`). In training that would differentiate
through a full-size merged kernel for every adapted layer; here each adapted Dense or Conv instead
computes `base(x) + scale * B(A(x))` (peft's `lora.Linear` / `lora.Conv2d` forward), so the backward
pass only forms the small A and B gradients and the frozen kernels get none.

    with unmerged({unet: unet_lora, vae: vae_lora}, rank):
        x0, sr = generate(unet, vae, params, image, context, alpha_bar, key=key)

Each LoRA tree has the layout of `models/lora.py` (module path -> {"lora_A": {"kernel"}, "lora_B":
{"kernel"}}) and applies to the modules under a top-level module of its model's class.

What the backward pass keeps (`remat`):
- "none": whatever autodiff saves. That includes every element-wise intermediate: a GroupNorm in
  bf16 keeps its input centred and scaled in float32 (float32 copies of each bf16 activation),
  SiLU and GELU their inputs, attention its float32 logits and their exponentials.
- "elementwise": each resnet block, transformer (norm, projections and transformer blocks), VAE
  attention and GroupNorm keeps its input, the outputs of its Dense and Conv layers (LoRA added) and
  LoRA's rank-r hiddens, and recomputes the element-wise work between them in the backward pass:
  no matrix product or convolution is recomputed except attention's two batched products.
- "blocks": resnet, transformer and VAE-attention blocks keep only their input and are recomputed
  whole (the granularity of diffusers' enable_gradient_checkpointing, which the authors' script
  offers): the forward's FLOPs again, for the least memory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
from flax import traverse_util
from jax.ad_checkpoint import checkpoint_name

from osediff_jax.models import lora as lora_lib
from osediff_jax.models.layers import Conv, ResnetBlock2D, conv2d
from osediff_jax.models.unet import BasicTransformerBlock, Transformer2DModel
from osediff_jax.models.vae import VAEAttention

REMAT = ("none", "elementwise", "blocks")
# The regions of each `remat` mode (nested regions are fine) and what they keep besides their inputs.
REGIONS = {"elementwise": (ResnetBlock2D, Transformer2DModel, VAEAttention, nn.GroupNorm),
           "blocks": (ResnetBlock2D, BasicTransformerBlock, VAEAttention)}
KEPT = {"elementwise": jax.checkpoint_policies.save_only_these_names("layer_out", "lora_hidden"),
        "blocks": jax.checkpoint_policies.nothing_saveable}


def _adapters(tree: Any) -> dict[tuple[str, ...], tuple[jax.Array, jax.Array]]:
    flat = traverse_util.flatten_dict(tree)
    return {p[:-2]: (a, flat[p[:-2] + ("lora_B", "kernel")]) for p, a in flat.items()
            if p[-2:] == ("lora_A", "kernel")}


def _root(module: nn.Module) -> nn.Module:
    while isinstance(module.parent, nn.Module):
        module = module.parent
    return module


def _lora_out(module: nn.Module, x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """B(A(x)) in the module's compute dtype: A has the base conv's stride and padding, B is 1x1."""
    dtype = module.dtype or x.dtype
    x, a, b = x.astype(dtype), a.astype(dtype), b.astype(dtype)
    if isinstance(module, nn.Dense):
        return checkpoint_name(x @ a, "lora_hidden") @ b
    # The models' `layers.Conv`: A through the same convolution (CPU patches or library) as the base.
    return checkpoint_name(conv2d(x, a, module.strides, module.padding), "lora_hidden") @ b[0, 0]


def lora_interceptor(trees: Mapping[type, Any], rank: int) -> Callable:
    """A `nn.intercept_methods` interceptor adding the LoRA branch to every adapted Dense/Conv call
    and naming every Dense/Conv output "layer_out" (for `remat="elementwise"`); `trees` maps a
    top-level module class (the UNet's, the VAE's) to its LoRA tree."""
    adapters = {cls: _adapters(tree) for cls, tree in trees.items()}
    s = lora_lib.scale(rank)

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, (nn.Dense, Conv)):
            return next_fun(*args, **kwargs)
        ab = adapters.get(type(_root(module)), {}).get(module.path)
        y = next_fun(*args, **kwargs)
        y = y if ab is None else y + s * _lora_out(module, args[0], *ab).astype(y.dtype)
        return checkpoint_name(y, "layer_out")

    return intercept


def _regions(remat: str) -> Callable:
    """An interceptor running each call of `REGIONS[remat]` under jax.checkpoint with `KEPT[remat]`."""
    regions, policy = REGIONS[remat], KEPT[remat]

    def intercept(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, regions):
            return jax.checkpoint(lambda *a: next_fun(*a, **kwargs), policy=policy)(*args)
        return next_fun(*args, **kwargs)

    return intercept


@contextlib.contextmanager
def unmerged(trees: Mapping[nn.Module, Any], rank: int, remat: str = "none") -> Iterator[None]:
    """Inside the block, each model in `trees` (a module -> its LoRA tree, or None) runs with its LoRA
    unmerged, and the backward pass keeps what `remat` says (see the module's docstring)."""
    if remat not in REMAT:
        raise ValueError(f"remat={remat!r}; expected one of {REMAT}")
    with contextlib.ExitStack() as stack:
        if remat != "none":
            stack.enter_context(nn.intercept_methods(_regions(remat)))
        stack.enter_context(nn.intercept_methods(lora_interceptor({type(m): t for m, t in trees.items()
                                                                   if t is not None}, rank)))
        yield
