"""OSEDiff's training step as one jitted function (the authors' `train_osediff.py`).

    train_step = make_train_step(unet, vae, alphas_cumprod, config)
    state, metrics = train_step(state, frozen, {"gt": gt_uint8}, jax.random.fold_in(state["key"], step))

The frozen tree is an argument of its own rather than part of the state: the step returns the state,
and returning the frozen weights from a jitted function would copy them every step.

Per step: degrade the GT on device; prompt embeddings; the generator (VAE-encoder posterior sample,
UNet at t=999, one step, decode, clamp) and its loss `l2 * MSE + lpips * LPIPS + vsd * VSD`,
differentiated with respect to the generator's trainable set and applied; then the regulariser's
denoising loss on the same (stopped) latents, differentiated with respect to its LoRA and applied.
The frozen base UNet serves the generator (with its LoRA and conv_in), the fake score (with the
regulariser LoRA) and the real score (alone). LoRA is applied unmerged (`unmerged.py`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from osediff_jax.data import degradation
from osediff_jax.inference.core import TIMESTEP, generate
from osediff_jax.metrics.lpips import LPIPS
from osediff_jax.models import lora as lora_lib
from osediff_jax.training import sharding, vsd
from osediff_jax.training.prompts import PromptSource, fixed_prompt
from osediff_jax.training.state import TrainConfig, optimizer
from osediff_jax.training.unmerged import unmerged

VSD_T = (20, 980)  # the authors' randint(20, 980): t in [20, 979]
NUM_TRAIN_TIMESTEPS = 1000


class Draws(NamedTuple):
    """Every random draw of a step after the degradation; B is the whole batch, k the micro-batches."""

    vae_key: jax.Array  # [k] keys: micro-batch i's VAE posterior sample (`generate(..., key=vae_key[i])`)
    vsd_t: jax.Array  # int32 [B] in [20, 980): one t for both scores
    vsd_noise: jax.Array  # [B, h, w, C]: one noise for both scores
    reg_t: jax.Array  # int32 [B] in [0, 1000): the regulariser's own t
    reg_noise: jax.Array  # [B, h, w, C]: and its own noise


def sample_draws(key: jax.Array, latent_shape: tuple[int, ...], micro_batches: int = 1) -> Draws:
    """The draws of one step: `key` is split into five, in the order of Draws' fields (the first
    split again into one key per micro-batch)."""
    k = jax.random.split(key, 5)
    b = latent_shape[0]
    return Draws(jax.random.split(k[0], micro_batches),
                 jax.random.randint(k[1], (b,), *VSD_T, jnp.int32),
                 jax.random.normal(k[2], latent_shape, jnp.float32),
                 jax.random.randint(k[3], (b,), 0, NUM_TRAIN_TIMESTEPS, jnp.int32),
                 jax.random.normal(k[4], latent_shape, jnp.float32))


def _with_lora(config: TrainConfig, models: dict, params: dict, trees: dict, remat: str = "none") -> tuple:
    """(params, context): the LoRA `trees` ({name: tree or None}) on `params` ({name: params}) of
    `models` ({name: module}), merged into the kernels if config.merged_lora, else unmerged inside
    the returned context."""
    if config.merged_lora:
        merged = {k: v if trees.get(k) is None else lora_lib.merge(v, trees[k], config.rank) for k, v in params.items()}
        return merged, unmerged({}, config.rank, remat)
    return params, unmerged({models[k]: t for k, t in trees.items()}, config.rank, remat)


def _unet_eps(unet: nn.Module, config: TrainConfig, params: Any, tree: Any, noisy: jax.Array, t: jax.Array,
              context: jax.Array, remat: str = "none") -> jax.Array:
    params, ctx = _with_lora(config, {"unet": unet}, {"unet": params}, {"unet": tree}, remat)
    with ctx:
        return unet.apply({"params": params["unet"]}, noisy, t, context).astype(jnp.float32)


def make_vsd_term(unet: nn.Module, alphas_cumprod: np.ndarray, config: TrainConfig) -> Callable[..., tuple]:
    """vsd_term(reg_lora, unet_params, neg_embeds, x0, prompt_embeds, t, noise) -> (loss, w [B]): the
    latent VSD of the generator's x0 (the authors' `distribution_matching_loss`). One noise and one t
    for both scores; fake score = base UNet + regulariser LoRA with the prompt; real score = base UNet
    with CFG, the negative prompt as its unconditional branch; only x0 is differentiated."""
    ac = jnp.asarray(alphas_cumprod, jnp.float32)
    sg = jax.lax.stop_gradient

    def vsd_term(reg_lora, unet_params, neg_embeds, x0, emb, t, noise):
        b = x0.shape[0]
        unet_params, emb = sg(unet_params), sg(emb)
        noisy = vsd.add_noise(sg(x0), noise, t, ac)
        eps_fake = _unet_eps(unet, config, unet_params, sg(reg_lora), noisy, t, emb)
        # Real score: the negative prompt and the prompt in one batch, as the authors run it.
        neg = jnp.broadcast_to(neg_embeds, emb.shape).astype(emb.dtype)
        eps_both = _unet_eps(unet, config, unet_params, None, jnp.concatenate([noisy, noisy]),
                             jnp.concatenate([t, t]), jnp.concatenate([neg, emb]))
        eps_real = vsd.cfg(eps_both[:b], eps_both[b:], config.cfg_vsd)
        return vsd.vsd_loss(x0, vsd.eps_to_x0(noisy, eps_fake, t, ac), vsd.eps_to_x0(noisy, eps_real, t, ac))

    return vsd_term


def make_losses(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, config: TrainConfig
                ) -> tuple[Callable[..., tuple], Callable[..., jax.Array]]:
    """(gen_loss, reg_loss): gen_loss(gen, reg, frozen, lq, gt, prompt_embeds, draws) -> (total,
    (raw terms, x0)), the generator's loss as a function of its trainable tree; reg_loss(reg, frozen,
    x0, prompt_embeds, draws) -> the regulariser's weighted loss. lq, gt NHWC in [-1, 1]."""
    ac = jnp.asarray(alphas_cumprod, jnp.float32)
    lpips_net = LPIPS(config.lpips_net)
    vsd_term = make_vsd_term(unet, alphas_cumprod, config)

    def gen_loss(gen, reg, frozen, lq, gt, emb, d: Draws):
        params = {"unet": {**frozen["unet"], "conv_in": gen["conv_in"]}, "vae": frozen["vae"]}
        params, ctx = _with_lora(config, {"unet": unet, "vae": vae}, params,
                                 {"unet": gen["unet_lora"], "vae": gen["vae_lora"]}, config.remat)
        with ctx:
            x0, sr = generate(unet, vae, params, lq, emb, ac[TIMESTEP], key=d.vae_key[0])
        l2 = jnp.mean((sr - gt) ** 2)
        lp = jnp.mean(lpips_net.apply({"params": frozen["lpips"]}, sr, gt))
        v, w = vsd_term(reg["unet_lora"], frozen["unet"], frozen["neg_embeds"], x0, emb, d.vsd_t, d.vsd_noise)
        total = config.lambda_l2 * l2 + config.lambda_lpips * lp + config.lambda_vsd * v
        terms = {"l2": l2, "lpips": lp, "vsd": v, "vsd_normaliser": jnp.mean(w)}
        return total, (terms, x0)

    def reg_loss(reg, frozen, x0, emb, d: Draws):
        noisy = vsd.add_noise(x0, d.reg_noise, d.reg_t, ac)
        eps = _unet_eps(unet, config, frozen["unet"], reg["unet_lora"], noisy, d.reg_t, emb, config.remat)
        return config.lambda_reg * vsd.regularizer_loss(eps, d.reg_noise)

    return gen_loss, reg_loss


def make_grads_fn(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, config: TrainConfig
                  ) -> Callable[..., tuple[Any, Any, dict]]:
    """grads(state, frozen, lq, gt, prompt_embeds, draws) -> (generator grads, regulariser grads, raw
    loss terms) of one (micro-)batch; lq, gt NHWC in [-1, 1]. The regulariser's loss is on the
    generator's stopped latents, so both gradients come from the state before either update."""
    gen_loss, reg_loss = make_losses(unet, vae, alphas_cumprod, config)
    sg = jax.lax.stop_gradient

    def grads(state, frozen, lq, gt, emb, d: Draws):
        (total, (terms, x0)), g_gen = jax.value_and_grad(gen_loss, has_aux=True)(
            state["gen"], state["reg"], frozen, lq, gt, emb, d)
        reg_total, g_reg = jax.value_and_grad(reg_loss)(state["reg"], frozen, sg(x0), sg(emb), d)
        return g_gen, g_reg, {**terms, "loss": total, "reg": reg_total / config.lambda_reg}

    return grads


def make_step_fn(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, config: TrainConfig,
                 prompt_source: PromptSource = fixed_prompt) -> Callable[..., tuple[dict, dict]]:
    """step_fn(state, frozen, lq, gt, draws) -> (state, metrics), not jitted: the step after the
    degradation, with every draw given (a test injects the reference's). lq, gt: [B, H, W, 3] in [0, 1]."""
    grads = make_grads_fn(unet, vae, alphas_cumprod, config)
    opt = optimizer(config)

    def step_fn(state, frozen, lq, gt, draws: Draws):
        lq = lq.astype(jnp.float32) * 2.0 - 1.0
        gt = gt.astype(jnp.float32) * 2.0 - 1.0
        emb = prompt_source(frozen, gt).astype(jnp.float32)
        data = (lq, gt, emb, draws)
        k = config.micro_batches
        if k == 1:
            g_gen, g_reg, m = grads(state, frozen, *data)
        else:
            if lq.shape[0] % k:
                raise ValueError(f"batch {lq.shape[0]} does not split into {k} micro-batches")
            micro = jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), data)

            def body(acc, mb):
                return jax.tree.map(jnp.add, acc, grads(state, frozen, *mb)), None

            first = jax.tree.map(lambda x: x[0], micro)
            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grads, state, frozen, *first))
            total, _ = jax.lax.scan(body, zeros, micro)
            g_gen, g_reg, m = jax.tree.map(lambda x: x / k, total)
        gen_norm, reg_norm = optax.global_norm(g_gen), optax.global_norm(g_reg)
        upd, gen_opt = opt.update(g_gen, state["gen_opt"], state["gen"])
        gen = optax.apply_updates(state["gen"], upd)
        upd, reg_opt = opt.update(g_reg, state["reg_opt"], state["reg"])
        reg = optax.apply_updates(state["reg"], upd)
        weights = {"l2": config.lambda_l2, "lpips": config.lambda_lpips, "vsd": config.lambda_vsd,
                   "reg": config.lambda_reg}
        metrics = {**m, **{f"{n}_weighted": m[n] * w for n, w in weights.items()},
                   "gen_grad_norm": gen_norm, "reg_grad_norm": reg_norm}
        new = {**state, "step": state["step"] + 1, "gen": gen, "reg": reg, "gen_opt": gen_opt, "reg_opt": reg_opt}
        return new, metrics

    return step_fn


def make_train_step(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, config: TrainConfig,
                    prompt_source: PromptSource = fixed_prompt, *, mesh: Mesh | None = None,
                    state_shardings: Any = None, frozen_shardings: Any = None) -> Callable[..., tuple[dict, dict]]:
    """Jitted train_step(state, frozen, batch, key) -> (state, metrics); batch = {"gt": uint8 [B, H, W, 3]}
    (H, W multiples of 16). `key` is split into (degradation, draws); see `sample_draws`. Metrics:
    l2, lpips, vsd, reg (raw) and their `_weighted` values, loss (the generator's total), the two
    gradient norms before clipping, vsd_normaliser (the mean of w over the batch).

    With a `mesh` (`sharding.make_mesh`), the step is compiled for it: state and frozen placed by
    `state_shardings` / `frozen_shardings` (`sharding.shardings`; replicated when not given), the
    batch split by `sharding.batch_sharding` (B is the global batch, `sharding.global_batch`), key
    and metrics replicated; the new state keeps the state's shardings. The program is the one of a
    single device over the global batch, partitioned by GSPMD, so both gradients are those of the
    global batch's mean losses: averaged over all devices. The authors' regulariser gradients are not
    (`train_osediff.py` prepares only the generator with accelerate's DDP, so each GPU updates the
    regulariser LoRA from its own micro-batch and the copies drift apart)."""
    step_fn = make_step_fn(unet, vae, alphas_cumprod, config, prompt_source)

    def train_step(state: dict, frozen: dict, batch: dict, key: jax.Array) -> tuple[dict, dict]:
        k_deg, k_draws = jax.random.split(key)
        lq, gt = degradation.degrade(k_deg, batch["gt"], config.degradation)
        latent = jax.eval_shape(lambda x: vae.apply({"params": frozen["vae"]}, x, method="encode")[0], lq)
        return step_fn(state, frozen, lq, gt, sample_draws(k_draws, latent.shape, config.micro_batches))

    donate = (0,) if config.donate else ()
    if mesh is None:
        return jax.jit(train_step, donate_argnums=donate)
    whole = sharding.replicated(mesh)
    state_sh = whole if state_shardings is None else state_shardings
    frozen_sh = whole if frozen_shardings is None else frozen_shardings
    return jax.jit(train_step, in_shardings=(state_sh, frozen_sh, sharding.batch_sharding(mesh), whole),
                   out_shardings=(state_sh, whole), donate_argnums=donate)
