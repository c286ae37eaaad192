"""The attention switch: "cudnn" where it applies (GPU, bf16/fp16, head dim <= 128), else the XLA path."""

import numpy as np
import pytest

from osediff_jax.models import attention


def test_cudnn_falls_back_to_xla_where_it_does_not_apply():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 9, 2, 512)).astype(np.float32) for _ in range(3))  # the VAE's head
    np.testing.assert_array_equal(np.asarray(attention.dot_product_attention(q, k, v, impl="cudnn")),
                                  np.asarray(attention.dot_product_attention(q, k, v, impl="xla")))


def test_xla_matches_softmax_formula():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, n, 3, 8)) for n in (5, 7, 7))
    bias = rng.standard_normal((1, 1, 5, 7))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8) + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    want = np.einsum("bhqk,bkhd->bqhd", p / p.sum(-1, keepdims=True), v)
    got = attention.dot_product_attention(*(x.astype(np.float32) for x in (q, k, v)), bias=bias.astype(np.float32))
    assert np.abs(np.asarray(got) - want).max() <= 1e-5


def test_unknown_impl_is_named():
    x = np.zeros((1, 2, 1, 8), np.float32)
    with pytest.raises(ValueError, match="'flash'"):
        attention.dot_product_attention(x, x, x, impl="flash")
