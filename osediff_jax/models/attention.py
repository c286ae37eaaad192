"""Multi-head attention kernels, chosen by a config switch.

"xla": einsum with a float32 softmax, any dtype, any shape (the default, and the CPU path).
"cudnn": `jax.nn.dot_product_attention` with cuDNN's fused kernel, used where it applies (GPU,
bf16/fp16, head dim <= 128); elsewhere, e.g. the VAE's single 512-wide head, it falls back to "xla".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLS = ("xla", "cudnn")


# Logits above this many elements are computed a block of queries at a time (same numbers, bounded
# memory): a 2048 px image has 65536 tokens in the VAE's mid-block attention, 16 GiB of fp32 logits.
MAX_LOGITS = 2**27


def _xla(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    b, lq, h, _ = q.shape
    n = b * h * lq * k.shape[1]
    if n > MAX_LOGITS and bias is None:
        chunk = max(1, lq * MAX_LOGITS // n)
        blocks = -(-lq // chunk)
        qp = jnp.pad(q, ((0, 0), (0, blocks * chunk - lq), (0, 0), (0, 0)))
        qs = jnp.moveaxis(qp.reshape(b, blocks, chunk, *q.shape[2:]), 1, 0)
        out = jax.lax.map(lambda qc: _xla_block(qc, k, v, None), qs)
        return jnp.moveaxis(out, 0, 1).reshape(b, blocks * chunk, h, v.shape[-1])[:, :lq]
    return _xla_block(q, k, v, bias)


def _xla_block(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


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
