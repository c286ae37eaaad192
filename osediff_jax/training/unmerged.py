"""LoRA applied unmerged, and block rematerialisation, by intercepting Flax module calls.

Inference folds LoRA into the kernels (`lora.merge`). In training that would differentiate through a
full-size merged kernel for every adapted layer; here each adapted Dense or Conv instead computes
`base(x) + scale * B(A(x))` (peft's `lora.Linear`/`lora.Conv2d` forward), so the backward pass only
forms the small A and B gradients and the frozen kernels get none.

    with unmerged(lora_tree, rank):
        eps = unet.apply({"params": base}, z, t, context)

The LoRA tree has the layout of `lora.py`: module path -> {"lora_A": {"kernel"}, "lora_B": {"kernel"}}.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from osediff_jax import lora as lora_lib
from osediff_jax.models.layers import ResnetBlock2D
from osediff_jax.models.unet import BasicTransformerBlock
from osediff_jax.models.vae import VAEAttention

# The blocks whose activations `remat` recomputes in the backward pass (diffusers checkpoints the same
# granularity with enable_gradient_checkpointing: resnets and transformer blocks).
REMAT_BLOCKS = (ResnetBlock2D, BasicTransformerBlock, VAEAttention)


def _adapters(tree: Any) -> dict[tuple[str, ...], tuple[jax.Array, jax.Array]]:
    flat = traverse_util.flatten_dict(tree)
    return {p[:-2]: (a, flat[p[:-2] + ("lora_B", "kernel")]) for p, a in flat.items()
            if p[-2:] == ("lora_A", "kernel")}


def _lora_out(module: nn.Module, x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """B(A(x)) in the module's compute dtype: A has the base conv's stride and padding, B is 1x1."""
    dtype = module.dtype or x.dtype
    x, a, b = x.astype(dtype), a.astype(dtype), b.astype(dtype)
    if isinstance(module, nn.Dense):
        return (x @ a) @ b
    padding = module.padding
    if isinstance(padding, int):
        padding = ((padding, padding),) * (a.ndim - 2)
    h = jax.lax.conv_general_dilated(x, a, module.strides or (1,) * (a.ndim - 2), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return h @ b[0, 0]


def lora_interceptor(tree: Any, rank: int) -> Callable:
    """A `nn.intercept_methods` interceptor adding the LoRA branch to every adapted Dense/Conv call."""
    adapters, s = _adapters(tree), lora_lib.scale(rank)

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        ab = adapters.get(module.path) if context.method_name == "__call__" else None
        if ab is None or not isinstance(module, (nn.Dense, nn.Conv)):
            return next_fun(*args, **kwargs)
        y = next_fun(*args, **kwargs)
        return y + s * _lora_out(module, args[0], *ab).astype(y.dtype)

    return intercept


def _remat(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, REMAT_BLOCKS):
        return jax.checkpoint(lambda *a: next_fun(*a, **kwargs))(*args)
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def unmerged(tree: Any | None, rank: int, remat: bool = False) -> Iterator[None]:
    """Module calls inside the block get the LoRA of `tree` (None: none) and, with `remat`, recompute
    each resnet / transformer / VAE-attention block in the backward pass instead of storing it."""
    with contextlib.ExitStack() as stack:
        if remat:
            stack.enter_context(nn.intercept_methods(_remat))
        if tree is not None:
            stack.enter_context(nn.intercept_methods(lora_interceptor(tree, rank)))
        yield
