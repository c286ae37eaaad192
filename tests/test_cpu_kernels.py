"""The CPU fast paths: convolutions as patches + one matmul, attention with deferred normalisation.

Both must give the library convolution's and the plain softmax formula's values and gradients
(training differentiates through them), in float32 and bf16; and a compiled UNet at a small latent
must not reverse its kernels (XLA's operand swap, see `layers.conv2d`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osediff_jax.models import attention, layers, sd
from osediff_jax.weights import random_sd

# Four levels like SD's, so that an 8x8 latent reaches 2x2 and 1x1 (fewer pixels than 3x3 taps);
# attention at the first level only, which keeps the compilation short.
UNET_4_LEVELS = {**random_sd.UNET, "block_out_channels": [32, 32, 64, 64], "attention_head_dim": [2, 2, 4, 4],
                 "down_block_types": ["CrossAttnDownBlock2D"] + ["DownBlock2D"] * 3,
                 "up_block_types": ["UpBlock2D"] * 3 + ["CrossAttnUpBlock2D"]}
TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _library(x, w, stride, padding):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _value_and_grads(f, args, cotangent):
    """f(*args) and the gradient of <f(*args), cotangent> with respect to every argument, in float32."""
    out, vjp = jax.vjp(f, *args)
    grads = vjp(cotangent.astype(out.dtype))
    return [np.asarray(a, np.float32) for a in (out, *grads)]


def test_unet_at_8x8_latent_reverses_no_kernel():
    module = sd.build_module("unet", UNET_4_LEVELS)
    params = sd.param_shapes("unet", module)
    args = (jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
            jax.ShapeDtypeStruct((1, 77, 64), jnp.float32))
    hlo = jax.jit(lambda p, *a: module.apply({"params": p}, *a)).lower(params, *args).compile().as_text()
    assert " reverse(" not in hlo
    # The check can fail: this XLA does reverse the kernel of a library convolution on a 2x2 image.
    x, w = jax.ShapeDtypeStruct((1, 2, 2, 64), jnp.float32), jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)
    swapped = jax.jit(lambda x, w: _library(x, w, 1, ((1, 1), (1, 1)))).lower(x, w).compile().as_text()
    assert " reverse(" in swapped, "XLA no longer swaps; revisit the rule in layers.conv2d"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kernel,stride,padding,size", [
    (3, 1, ((1, 1), (1, 1)), (5, 7)), (3, 1, ((1, 1), (1, 1)), (2, 2)),  # UNet/VAE 3x3; the swap case
    (3, 2, ((1, 1), (1, 1)), (7, 6)), (3, 2, ((0, 1), (0, 1)), (8, 5)),  # UNet / VAE (asymmetric) downsampling
    (1, 1, ((0, 0), (0, 0)), (3, 4)),  # shortcuts, quant convs
])
def test_patches_match_library_convolution_and_gradients(dtype, kernel, stride, padding, size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 12)).astype(np.float32)
    w = (rng.standard_normal((kernel, kernel, 12, 10)) / np.sqrt(kernel * kernel * 12)).astype(np.float32)
    library = lambda x, w: _library(x, w, stride, padding)
    cot = rng.standard_normal(jax.eval_shape(library, x, w).shape).astype(np.float32)
    want = _value_and_grads(library, (x, w), cot)
    args = (x.astype(dtype), w.astype(dtype))
    got = _value_and_grads(jax.jit(lambda x, w: layers.conv_patches(x, w, stride, padding)), args, cot)
    errs = [_rel(g, r) for g, r in zip(got, want)]
    # In bf16 the library convolution is the yardstick: patches may not lose more than it does.
    lib = [_rel(g, r) for g, r in zip(_value_and_grads(library, args, cot), want)]
    print(f"conv {kernel}x{kernel}/{stride} {size}, {jnp.dtype(dtype).name}, patches (library) against "
          "float32 library, output / d_x / d_kernel: " + " / ".join(f"{e:.1e} ({o:.1e})" for e, o in zip(errs, lib)))
    assert max(errs) <= TOL[dtype]
    if dtype == jnp.bfloat16:
        assert all(e <= 1.5 * o + 1e-3 for e, o in zip(errs, lib))


def test_conv_module_has_nn_conv_parameters_and_values():
    x = np.random.default_rng(1).standard_normal((1, 6, 5, 3)).astype(np.float32)
    ours = layers.conv(8, 3, "conv", jnp.float32, jnp.float32, stride=2, padding=((0, 1), (0, 1)))
    flax = nn.Conv(8, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)))
    params = flax.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias
    assert _rel(ours.apply(params, x), flax.apply(params, x)) <= 1e-6


@pytest.mark.parametrize("shape,patches", [
    ((1, 24, 24, 1280), True), ((1, 25, 24, 1280), False),  # PATCHES_MAX_PIXELS output pixels per batch
    ((4, 12, 12, 1280), True), ((4, 13, 12, 1280), False),
    ((1, 4, 4, 1280), True), ((1, 4, 4, 640), False),  # PATCHES_MIN_CHANNELS
    ((512, 2, 2, 8), True), ((512, 3, 3, 8), False),  # the swap case at any batch and width
])
def test_patches_are_chosen_by_size_on_the_cpu(shape, patches):
    pad = ((1, 1), (1, 1))
    jaxpr = str(jax.make_jaxpr(lambda x, w: layers.conv2d(x, w, 1, pad))(
        jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((3, 3, shape[-1], 8), jnp.float32)))
    assert ("conv_general_dilated" not in jaxpr) == patches


def _old_attention(q, k, v, bias=None):
    """The formula before the rewrite: scaled logits, softmax, then the value product, in [B, L, H, D]."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _causal(n):
    return jnp.where(jnp.tril(jnp.ones((n, n), bool)), 0.0, jnp.finfo(jnp.float32).min)[None, None]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", ["whole", "heads", "query blocks", "causal bias", "gpu fused softmax"])
def test_attention_matches_old_formula_and_gradients(monkeypatch, dtype, case):
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, n, 3, 16)).astype(np.float32) for n in (37, 37, 37))
    bias = _causal(37) if case == "causal bias" else None
    if case == "heads":
        monkeypatch.setattr(attention, "CPU_BLOCK_LOGITS", 37 * 37)  # one head at a time, whole
    if case == "query blocks":
        monkeypatch.setattr(attention, "CPU_BLOCK_LOGITS", 8 * 37)  # one head at a time, 5 blocks of 8 queries
    if case == "gpu fused softmax":
        new = lambda q, k, v: jnp.swapaxes(attention._fused_softmax(
            *(jnp.swapaxes(x, 1, 2) for x in (q * jnp.asarray(0.25, q.dtype), k, v)), None), 1, 2)
    else:
        new = lambda q, k, v: attention.dot_product_attention(q, k, v, bias=bias)
    cot = rng.standard_normal(q.shape).astype(np.float32)
    want = _value_and_grads(lambda q, k, v: _old_attention(q, k, v, bias), (q, k, v), cot)
    args = tuple(x.astype(dtype) for x in (q, k, v))
    got = _value_and_grads(jax.jit(new), args, cot)
    errs = [_rel(g, r) for g, r in zip(got, want)]
    # In bf16 the old formula is the yardstick: ours may not lose more than it does against float32.
    old = [_rel(g, r) for g, r in zip(_value_and_grads(lambda q, k, v: _old_attention(q, k, v, bias), args, cot), want)]
    print(f"attention {case}, {jnp.dtype(dtype).name}, new (old) against float32 old, output / dq / dk / dv: "
          + " / ".join(f"{e:.1e} (old {o:.1e})" for e, o in zip(errs, old)))
    assert max(errs) <= TOL[dtype]
    if dtype == jnp.bfloat16:
        assert all(e <= 1.5 * o + 1e-3 for e, o in zip(errs, old))
