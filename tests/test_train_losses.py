"""The latent VSD (gradient 2 g / numel, zero when the scores agree, nothing reaches the frozen UNet or
the regulariser), unmerged LoRA in training, remat "none" and "elementwise" (the exact gradients, as merged LoRA
gives them), and the step with remat and micro-batches (the same update as the plain step), on a small
model."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from osediff_jax.inference.core import TIMESTEP
from osediff_jax.metrics.lpips import lpips_params
from osediff_jax.models import lora
from osediff_jax.training import vsd
from osediff_jax.training.state import TrainConfig, init_train_state
from osediff_jax.training.step import make_vsd_term, sample_draws
from osediff_jax.training.unmerged import unmerged
from osediff_jax.weights import bundle, random_sd
from tests import train_small as small

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
    LoRA unmerged by interception (remat "none" and "elementwise") and LoRA merged into the kernels as
    inference does, all in float32, each against the exact gradients (the same computation in
    float64, LoRA unmerged; merged gives the same to 1e-12): within 1e-5 of each tensor's max-abs.
    Against each other, two float32 formulations differ by up to the sum of their errors (about 1e-5
    between merged and unmerged), which is why the bound is stated against float64."""
    model, state, frozen = setup
    unet, vae = model.modules["unet"], model.modules["vae"]
    rank = TrainConfig().rank
    lq = np.random.default_rng(4).uniform(-1, 1, (B, SIZE, SIZE, 3)).astype(np.float32)
    emb = np.broadcast_to(frozen["prompt_embeds"], (B, *frozen["prompt_embeds"].shape[1:]))
    base = {"unet": {**frozen["unet"], "conv_in": state["gen"]["conv_in"]}, "vae": frozen["vae"]}
    trees = {"unet": state["gen"]["unet_lora"], "vae": state["gen"]["vae_lora"]}
    a999 = float(model.alphas_cumprod[TIMESTEP])
    # `generate`'s posterior sample, drawn as it draws it, given explicitly so that float64 sees it too.
    noise = np.asarray(jax.random.normal(jax.random.key(6), (B, SIZE // 8, SIZE // 8, 4), jnp.float32))

    def gradients(dtype, lora_mode):
        u, v = (m.clone(dtype=dtype, param_dtype=dtype) for m in (unet, vae))
        cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)

        def loss(trees):
            if lora_mode == "merged":
                params, ctx = {k: lora.merge(cast(base[k]), trees[k], rank) for k in base}, contextlib.nullcontext()
            else:
                params, ctx = cast(base), unmerged({u: trees["unet"], v: trees["vae"]}, rank, remat=lora_mode)
            with ctx:  # `generate`, with its sample's noise given and no float32 casts
                mean, logvar = v.apply({"params": params["vae"]}, jnp.asarray(lq, dtype), method="encode")
                z = (mean + jnp.exp(0.5 * logvar) * noise) * v.scaling_factor
                eps = u.apply({"params": params["unet"]}, z, jnp.full((B,), TIMESTEP), jnp.asarray(emb, dtype))
                x0 = (z - (1 - a999) ** 0.5 * eps) / a999**0.5
                sr = jnp.clip(v.apply({"params": params["vae"]}, x0 / v.scaling_factor, method="decode"), -1, 1)
            return jnp.mean(sr**2) + jnp.mean(x0**2)

        return traverse_util.flatten_dict(jax.jit(jax.grad(loss))(cast(trees)))

    # Unmerged LoRA with remat "none" and "elementwise" (the step's default; "blocks" is the step test's).
    ours = {m: gradients(jnp.float32, m) for m in ("merged", "none", "elementwise")}
    with jax.enable_x64(True):
        exact, exact_merged = gradients(jnp.float64, "none"), gradients(jnp.float64, "merged")
    assert all(g.keys() == exact.keys() for g in ours.values())
    worst = {m: max((_rel(g[k], exact[k]), k) for k in exact) for m, g in ours.items()}
    between = max(_rel(ours["none"][k], ours["merged"][k]) for k in exact)
    exact_between = max(_rel(exact_merged[k], exact[k]) for k in exact)
    print(f"{len(exact)} LoRA gradient tensors against float64, worst of max-abs: "
          + ", ".join(f"{m} {e:.1e} ({'/'.join(k)})" for m, (e, k) in worst.items())
          + f"; unmerged against merged {between:.1e} (float64: {exact_between:.1e})")
    assert exact_between <= 1e-12
    assert all(e <= 1e-5 for e, _ in worst.values()), worst


def _worst(ours, want) -> tuple[float, str]:
    """The largest error of a leaf relative to its own max-abs, and where (any pytree, optax states too)."""
    a, b = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (ours, want))
    assert [p for p, _ in a] == [p for p, _ in b]
    return max((float(np.abs(np.asarray(x, np.float64) - y).max() / max(np.abs(np.asarray(y)).max(), 1e-30)),
                jax.tree_util.keystr(p)) for (p, x), (_, y) in zip(a, b))


def test_remat_with_micro_batches_gives_the_plain_step(setup):
    """One step with remat and two micro-batches (the small-memory recipe; one compilation for both
    options) against the plain step, float32, on a batch of two with the same draws: loss terms and
    gradient norms within 1e-5 relative; the gradients (AdamW's first moments, 0.1 x the clipped
    gradient), second moments and updated parameters within 1e-4 of each tensor's max-abs.
    Micro-batch i draws its VAE posterior sample from its own key, so the posterior's variance is made
    negligible here (logvar clipped at -30: std 3e-7) for every micro-batch to see the whole batch's
    latents. The plain step is the parity test's compilation (`tests/train_small.py`)."""
    model, state, frozen = setup
    quant = frozen["vae"]["quant_conv"]
    bias = jnp.asarray(quant["bias"]).at[4:].set(-60.0)  # channels 4: are logvar
    frozen = {**frozen, "vae": {**frozen["vae"], "quant_conv": {**quant, "bias": bias}}}
    rng = np.random.default_rng(5)
    lq = rng.uniform(0, 1, (small.B, small.SIZE, small.SIZE, 3)).astype(np.float32)
    gt = np.clip(lq + rng.normal(0, 0.2, lq.shape), 0, 1).astype(np.float32)
    draws = sample_draws(jax.random.key(7), (small.B, small.SIZE // 8, small.SIZE // 8, 4), micro_batches=2)
    new, metrics = small.step_fn(TrainConfig(donate=False))(state, frozen, lq, gt,
                                                             draws._replace(vae_key=draws.vae_key[:1]))
    other, m = small.step_fn(TrainConfig(donate=False, remat="blocks", micro_batches=2))(state, frozen, lq, gt, draws)
    terms = max(abs(float(m[k]) - float(v)) / abs(float(v)) for k, v in metrics.items() if float(v))
    errs = {k: _worst(other[k], new[k]) for k in ("gen", "reg", "gen_opt", "reg_opt")}
    print(f"remat + 2 micro-batches against the plain step: loss terms and norms {terms:.1e}; "
          + ", ".join(f"{k} {e:.1e} ({p})" for k, (e, p) in errs.items()))
    assert terms <= 1e-5 and int(other["step"]) == 1
    assert all(e <= 1e-4 for e, _ in errs.values()), errs
