"""Speed of one OSEDiff training step for the full SD-2.1-base architecture (random weights) against
the authors' step rebuilt in PyTorch (`tests/references/training.py`: diffusers + peft + lpips, their
three UNet copies), in the same run, float32.

    python -m benchmarks.train_step                     # CPU, 64x64 crop, batch 1

Both sides get the same degraded pair, prompt embeddings and draws (timesteps and noises); neither
times the degradation, which the authors run in their data loader. Ours is `make_step_fn` jitted
(generator and regulariser forward, backward and AdamW updates, LoRA unmerged), not donated so that
each call can take the same state. Ratio = reference ms / ours ms (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from osediff_jax.metrics.lpips import lpips_params  # noqa: E402
from osediff_jax.models import schedule, sd  # noqa: E402
from osediff_jax.training.state import TrainConfig, train_state  # noqa: E402
from osediff_jax.training.step import make_step_fn, sample_draws  # noqa: E402
from osediff_jax.weights import osediff_pkl  # noqa: E402


def nchw(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def bench_reference(args, lq: np.ndarray, gt: np.ndarray, emb: np.ndarray, draws) -> float:
    import lpips
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from tests.references.training import ReferenceStep

    torch.set_grad_enabled(True)  # harness.setup turns it off for the inference benchmarks
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        UNet2DConditionModel(**harness.read_config(args.configs, "unet")).save_pretrained(folder / "unet")
        AutoencoderKL(**harness.read_config(args.configs, "vae")).save_pretrained(folder / "vae")
        net = lpips.LPIPS(pretrained=True, net="vgg", pnet_rand=True, verbose=False).eval()
        ref = ReferenceStep(folder, net, "full")
    e = torch.from_numpy(emb).expand(lq.shape[0], -1, -1)
    vae_noise = nchw(jax.random.normal(draws.vae_key[0], draws.vsd_noise.shape, jnp.float32))
    inputs = (nchw(lq * 2 - 1), nchw(gt * 2 - 1), e, e, vae_noise, torch.from_numpy(np.asarray(draws.vsd_t)).long(),
              nchw(draws.vsd_noise), torch.from_numpy(np.asarray(draws.reg_t)).long(), nchw(draws.reg_noise))
    return harness.time_ms(lambda: ref.step(*inputs), args.iters, harness.torch_sync("cpu"))


def bench_ours(args, lq: np.ndarray, gt: np.ndarray, emb: np.ndarray, draws) -> float:
    config = TrainConfig(donate=False)
    modules = {c: sd.build_module(c, harness.read_config(args.configs, c)) for c in ("unet", "vae")}
    shapes = {c: sd.param_shapes(c, m) for c, m in modules.items()}
    params = {c: harness.random_params(shapes[c], i, jnp.float32) for i, c in enumerate(shapes)}
    key = jax.random.key(0)
    w = osediff_pkl.new(key, shapes["unet"], shapes["vae"], params["unet"], config.rank)
    state = train_state(w, shapes["unet"], key, key, config)
    frozen = {**params, "lpips": lpips_params("vgg", None, random_backbone=True),
              "prompt_embeds": jnp.asarray(emb), "neg_embeds": jnp.asarray(emb)}
    step = jax.jit(make_step_fn(modules["unet"], modules["vae"], schedule.alphas_cumprod(), config))
    return harness.time_ms(lambda: step(state, frozen, lq, gt, draws), args.iters, harness.jax_sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_args(parser, size=64, iters=3)
    parser.add_argument("--batch", type=int, default=1)
    args = harness.parse_args(parser)
    if args.device != "cpu":
        parser.error("the reference step is float32 on the CPU; GPU runs are pending")
    harness.setup(args.device)
    rng = np.random.default_rng(0)
    b, s = args.batch, args.size
    lq = rng.uniform(0, 1, (b, s, s, 3)).astype(np.float32)
    gt = np.clip(lq + rng.normal(0, 0.1, lq.shape), 0, 1).astype(np.float32)
    emb = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    draws = sample_draws(jax.random.key(1), (b, s // 8, s // 8, 4))
    ref = bench_reference(args, lq, gt, emb, draws)
    harness.free_torch("cpu")  # the reference's models went with bench_reference's frame
    ours = bench_ours(args, lq, gt, emb, draws)
    harness.print_table(
        f"OSEDiff training step, full SD-2.1-base, float32, on {jax.devices()[0].device_kind} (cpu): {s}x{s} crop, "
        f"batch {b}; median of {args.iters} steps after a warm-up",
        ["measurement", "ours ms/step", "reference ms/step", "ratio reference/ours"],
        [[f"step, batch {b}", f"{ours:.0f}", f"{ref:.0f}", f"{ref / ours:.2f}"]])


if __name__ == "__main__":
    main()
