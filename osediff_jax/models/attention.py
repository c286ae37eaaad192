"""Multi-head attention kernels, chosen by a config switch.

"xla": einsums with float32 softmax statistics, any dtype, any shape (the default, and the CPU path).
"cudnn": `jax.nn.dot_product_attention` with cuDNN's fused kernel, used where it applies (GPU,
bf16/fp16, head dim <= 128); elsewhere, e.g. the VAE's single 512-wide head, it falls back to "xla".
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

IMPLS = ("xla", "cudnn")


# Logits above this many elements are computed a block of queries at a time (same numbers, bounded
# memory): a 2048 px image has 65536 tokens in the VAE's mid-block attention, 16 GiB of fp32 logits.
# The tiled upscaler's memory plan relies on this bound on every device.
MAX_LOGITS = 2**27
# On the CPU, above this many logits in all, attention runs one head at a time in blocks of queries
# of at most this many logits (8 MiB of fp32): a head's 2-D matrix products are faster in XLA:CPU than
# the products batched over heads, and a block's logits are exponentiated and multiplied by v while
# still in cache rather than written out and read back. At 4096 tokens (SD's 64x64 latent, 5 heads
# of 64): 150 ms a call, against 195 ms in blocks of all heads and 138 ms for PyTorch's SDPA; blocks
# of 2^19 to 2^23 logits took 154 to 166 ms (`python -m benchmarks.attention`, BENCHMARKS.md).
CPU_BLOCK_LOGITS = 2**21


def _xla(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    # [B, H, L, D]: both products are then matmuls batched over leading axes, as PyTorch's SDPA has it.
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    # Scaling q costs B*H*Lq*D multiplications, scaling the logits B*H*Lq*Lk.
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    b, h, lq, _ = q.shape
    n = b * h * lq * k.shape[2]
    if jax.default_backend() != "cpu":
        return jnp.swapaxes(_blocks(q, k, v, bias, MAX_LOGITS, _fused_softmax), 1, 2)
    if n <= CPU_BLOCK_LOGITS or bias is not None:
        return jnp.swapaxes(_deferred_normalisation(q, k, v, bias), 1, 2)
    heads = [x.reshape(b * h, 1, 1, *x.shape[2:]) for x in (q, k, v)]
    out = jax.lax.map(lambda qkv: _blocks(*qkv, None, CPU_BLOCK_LOGITS, _deferred_normalisation), heads)
    return jnp.swapaxes(out.reshape(b, h, lq, v.shape[-1]), 1, 2)


def _blocks(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, limit: int,
            attend: Callable[..., jax.Array]) -> jax.Array:
    """attend(q, k, v, bias) in [B, H, L, D], over blocks of queries of at most `limit` logits."""
    b, h, lq, _ = q.shape
    n = b * h * lq * k.shape[2]
    if n <= limit or bias is not None:
        return attend(q, k, v, bias)
    blocks = -(-lq // max(1, lq * limit // n))
    chunk = -(-lq // blocks)  # the same number of blocks, evened out: less padding, still within limit
    qp = jnp.pad(q, ((0, 0), (0, 0), (0, blocks * chunk - lq), (0, 0)))
    qs = jnp.moveaxis(qp.reshape(b, h, blocks, chunk, q.shape[-1]), 2, 0)
    # Checkpointed, a block's exponentials are recomputed in its own backward iteration: the loop then
    # keeps only its inputs, not a float32 stack of every block's exponentials (1.3 GiB per attention
    # layer in the 512 px training step at batch 4, several layers of them live at once).
    out = jax.lax.map(jax.checkpoint(lambda qc: attend(qc, k, v, None)), qs)
    return jnp.moveaxis(out, 0, 2).reshape(b, h, blocks * chunk, v.shape[-1])[:, :, :lq]


def _acc(x: jax.Array) -> jnp.dtype:
    """Products accumulate in float32 at least (float64 stays float64)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _logits(q: jax.Array, k: jax.Array, bias: jax.Array | None) -> jax.Array:
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=_acc(q))
    return logits if bias is None else logits + bias


def _fused_softmax(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    """Softmax, then the value product: the form XLA's GPU compiler fuses into one softmax kernel."""
    probs = jax.nn.softmax(_logits(q, k, bias), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", probs, v)


def _deferred_normalisation(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    """exp(logits - max) v / sum: one division per output element instead of per logit."""
    logits = _logits(q, k, bias)
    # The max only keeps exp in range; the result does not depend on it (as in jax.nn.softmax).
    e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
    out = jnp.einsum("bhqk,bhkd->bhqd", e.astype(v.dtype), v, preferred_element_type=_acc(v))
    return (out / e.sum(axis=-1, keepdims=True)).astype(v.dtype)


def _cudnn_applies(q: jax.Array) -> bool:
    return (q.dtype in (jnp.bfloat16, jnp.float16) and q.shape[-1] <= 128 and q.shape[-1] % 8 == 0
            and jax.default_backend() == "gpu")


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "xla",
                          bias: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(d) + bias) v for q [B, Lq, H, D], k and v [B, Lk, H, D]."""
    if impl not in IMPLS:
        raise ValueError(f"attention impl={impl!r} is not supported; expected one of {IMPLS}")
    if impl == "cudnn" and _cudnn_applies(q):
        return jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(q.dtype),
                                            implementation="cudnn")
    return _xla(q, k, v, bias)
