"""LoRA applied unmerged, and block rematerialisation, by intercepting Flax module calls.

Inference folds LoRA into the kernels (`models.lora.merge`). In training that would differentiate
through a full-size merged kernel for every adapted layer; here each adapted Dense or Conv instead
computes `base(x) + scale * B(A(x))` (peft's `lora.Linear` / `lora.Conv2d` forward), so the backward
pass only forms the small A and B gradients and the frozen kernels get none.

    with unmerged({unet: unet_lora, vae: vae_lora}, rank):
        x0, sr = generate(unet, vae, params, image, context, alpha_bar, key=key)

Each LoRA tree has the layout of `models/lora.py` (module path -> {"lora_A": {"kernel"}, "lora_B":
{"kernel"}}) and applies to the modules under a top-level module of its model's class.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
from flax import traverse_util

from osediff_jax.models import lora as lora_lib
from osediff_jax.models.layers import Conv, ResnetBlock2D, conv2d
from osediff_jax.models.unet import BasicTransformerBlock
from osediff_jax.models.vae import VAEAttention

# The blocks `remat` recomputes in the backward pass: the granularity of diffusers'
# enable_gradient_checkpointing, which the authors' script offers (resnets, transformer blocks).
REMAT_BLOCKS = (ResnetBlock2D, BasicTransformerBlock, VAEAttention)


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
        return (x @ a) @ b
    # The models' `layers.Conv`: A through the same convolution (CPU patches or library) as the base.
    return conv2d(x, a, module.strides, module.padding) @ b[0, 0]


def lora_interceptor(trees: Mapping[type, Any], rank: int) -> Callable:
    """A `nn.intercept_methods` interceptor adding the LoRA branch to every adapted Dense/Conv call;
    `trees` maps a top-level module class (the UNet's, the VAE's) to its LoRA tree."""
    adapters = {cls: _adapters(tree) for cls, tree in trees.items()}
    s = lora_lib.scale(rank)

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, (nn.Dense, Conv)):
            return next_fun(*args, **kwargs)
        ab = adapters.get(type(_root(module)), {}).get(module.path)
        y = next_fun(*args, **kwargs)
        return y if ab is None else y + s * _lora_out(module, args[0], *ab).astype(y.dtype)

    return intercept


def _remat(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, REMAT_BLOCKS):
        return jax.checkpoint(lambda *a: next_fun(*a, **kwargs))(*args)
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def unmerged(trees: Mapping[nn.Module, Any], rank: int, remat: bool = False) -> Iterator[None]:
    """Inside the block, each model in `trees` (a module -> its LoRA tree, or None) runs with its LoRA
    unmerged; with `remat`, every resnet / transformer / VAE-attention block is recomputed in the
    backward pass instead of stored."""
    with contextlib.ExitStack() as stack:
        if remat:
            stack.enter_context(nn.intercept_methods(_remat))
        live = {type(m): t for m, t in trees.items() if t is not None}
        if live:
            stack.enter_context(nn.intercept_methods(lora_interceptor(live, rank)))
        yield
