"""The latent VSD (gradient 2 g / numel, zero when the scores agree, nothing reaches the frozen UNet or
the regulariser) and unmerged LoRA in training (the same gradients as merged LoRA), on a small model."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from osediff_jax.inference.core import TIMESTEP, generate
from osediff_jax.metrics.lpips import lpips_params
from osediff_jax.models import lora
from osediff_jax.training import vsd
from osediff_jax.training.state import TrainConfig, init_train_state
from osediff_jax.training.step import make_vsd_term
from osediff_jax.training.unmerged import unmerged
from osediff_jax.weights import bundle, random_sd

B, SIZE = 2, 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "sd"
    random_sd.write_random_sd(folder, seed=2)
    model = bundle.load(folder)
    state, frozen = init_train_state(model, lpips_params("vgg", None, random_backbone=True), jax.random.key(0),
                                     TrainConfig(donate=False))
    # Trained-looking LoRA: non-zero B everywhere, so that every gradient is non-trivial.
    rng = np.random.default_rng(0)
    nonzero = lambda p, x: x + 0.05 * rng.standard_normal(x.shape, np.float32) if p[-2].key == "lora_B" else x
    for key in ("gen", "reg"):
        state[key] = jax.tree_util.tree_map_with_path(nonzero, state[key])
    return model, state, frozen


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_vsd_gradient_is_two_g_over_numel():
    rng = np.random.default_rng(1)
    x0, fake, real = (rng.standard_normal((B, 8, 8, 4)).astype(np.float32) for _ in range(3))
    loss, w = vsd.vsd_loss(x0, fake, real)
    grad = jax.grad(lambda x: vsd.vsd_loss(x, fake, real)[0])(x0)
    x64, f64, r64 = (a.astype(np.float64) for a in (x0, fake, real))
    w_want = np.abs(x64 - r64).mean(axis=(1, 2, 3))
    g = (f64 - r64) / w_want[:, None, None, None]
    assert _rel(w, w_want) <= 1e-6
    assert abs(float(loss) - np.mean(g**2)) <= 1e-5 * np.mean(g**2)
    assert _rel(grad, 2 * g / x0.size) <= 1e-5


def test_vsd_is_zero_when_the_scores_agree():
    rng = np.random.default_rng(2)
    x0, real = (rng.standard_normal((B, 8, 8, 4)).astype(np.float32) for _ in range(2))
    loss, _ = vsd.vsd_loss(x0, real, real)
    grad = jax.grad(lambda x: vsd.vsd_loss(x, real, real)[0])(x0)
    assert float(loss) == 0.0 and not np.any(np.asarray(grad))


def test_vsd_term_differentiates_only_the_generator_latent(setup):
    model, state, frozen = setup
    unet = model.modules["unet"]
    cfg = TrainConfig()
    term = make_vsd_term(unet, model.alphas_cumprod, cfg)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((B, 4, 4, 4)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.array([20, 979], np.int32)
    emb = np.broadcast_to(frozen["prompt_embeds"], (B, *frozen["prompt_embeds"].shape[1:]))
    args = (state["reg"]["unet_lora"], frozen["unet"], frozen["neg_embeds"], x0, emb, t, noise)
    grads = jax.jit(jax.grad(lambda *a: term(*a)[0], argnums=tuple(range(5))))(*args)
    for name, g in zip(("regulariser LoRA", "base UNet", "negative prompt"), grads[:3]):
        assert not any(np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(g)), name
    assert not np.any(np.asarray(grads[4])), "prompt embeddings"

    # g computed independently: LoRA merged into the kernels, the scores' arithmetic in float64.
    a = model.alphas_cumprod[t].astype(np.float64)[:, None, None, None]
    noisy = np.sqrt(a) * x0 + np.sqrt(1 - a) * noise
    eps = lambda p, n, tt, c: np.asarray(unet.apply({"params": p}, n.astype(np.float32), tt, c), np.float64)
    fake = eps(lora.merge(frozen["unet"], state["reg"]["unet_lora"], cfg.rank), noisy, t, emb)
    neg = np.broadcast_to(frozen["neg_embeds"], emb.shape)
    uncond, cond = eps(frozen["unet"], noisy, t, neg), eps(frozen["unet"], noisy, t, emb)
    to_x0 = lambda e: (noisy - np.sqrt(1 - a) * e) / np.sqrt(a)
    x0_real = to_x0(uncond + 7.5 * (cond - uncond))
    g = (to_x0(fake) - x0_real) / np.abs(x0 - x0_real).mean(axis=(1, 2, 3), keepdims=True)
    err = _rel(grads[3], 2 * g / x0.size)
    print(f"VSD gradient against 2 g / numel: {err:.1e} of max-abs")
    assert err <= 1e-4


def test_unmerged_lora_gives_the_gradients_of_merged_lora(setup):
    """The generator forward of training (VAE-encoder and UNet LoRA, posterior sample, decode), with
    LoRA unmerged by interception against LoRA merged into the kernels as inference does."""
    model, state, frozen = setup
    unet, vae = model.modules["unet"], model.modules["vae"]
    rank = TrainConfig().rank
    lq = np.random.default_rng(4).uniform(-1, 1, (B, SIZE, SIZE, 3)).astype(np.float32)
    emb = jnp.broadcast_to(frozen["prompt_embeds"], (B, *frozen["prompt_embeds"].shape[1:]))
    base = {"unet": {**frozen["unet"], "conv_in": state["gen"]["conv_in"]}, "vae": frozen["vae"]}
    a999 = jnp.float32(model.alphas_cumprod[TIMESTEP])

    def loss(trees, merged):
        if merged:
            params, ctx = {k: lora.merge(base[k], trees[k], rank) for k in base}, contextlib.nullcontext()
        else:
            params, ctx = base, unmerged({unet: trees["unet"], vae: trees["vae"]}, rank)
        with ctx:
            x0, sr = generate(unet, vae, params, lq, emb, a999, key=jax.random.key(6))
        return jnp.mean(sr**2) + jnp.mean(x0**2)

    trees = {"unet": state["gen"]["unet_lora"], "vae": state["gen"]["vae_lora"]}
    out = {m: jax.jit(jax.grad(loss), static_argnums=1)(trees, m) for m in (False, True)}
    a, b = traverse_util.flatten_dict(out[False]), traverse_util.flatten_dict(out[True])
    assert a.keys() == b.keys()
    worst = max((_rel(a[k], b[k]), k) for k in a)
    print(f"{len(a)} LoRA gradient tensors, unmerged against merged: worst {worst[0]:.1e} of max-abs ({worst[1]})")
    assert worst[0] <= 1e-5
