"""Speed of the one-step generator `sr_fn` (VAE encode, UNet at t=999, one-step x0, VAE decode,
colour fix) for the full SD-2.1-base architecture against the authors' OSEDiff forward in PyTorch,
in the same run: latency at batch 1 and throughput at batch 8.

    python -m benchmarks.sr                             # CPU, float32, 64x64 output
    python -m benchmarks.sr --device gpu --dtype bfloat16 --size 512

Both sides get the LQ already upsampled to the output size and precomputed prompt embeddings (the
authors' script also runs the text encoder and the tagging model per image; neither is timed here).
Weights are random: the merged OSEDiff parameters (LoRA folded in) have exactly the base shapes, so
the reference is plain diffusers `UNet2DConditionModel` + `AutoencoderKL`, the same cost as the
authors' peft models after `merge_and_unload`. Its forward is theirs (`OSEDiff_test.forward`) with
the posterior mean, like ours; their colour fix runs in PIL outside the network and is not timed,
while ours (`--color-fix`, default adain) is inside `sr_fn` and is. On the GPU, bf16 runs ours in
bf16 (parameters stored in bf16, cuDNN attention) against the reference in float16.
"""

from __future__ import annotations

import argparse

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402

from osediff_jax.inference import sr  # noqa: E402
from osediff_jax.models import schedule, sd  # noqa: E402


def authors_forward(unet, vae, scheduler, timesteps: torch.Tensor, lq: torch.Tensor, emb: torch.Tensor
                    ) -> torch.Tensor:
    """OSEDiff_test.forward of the authors' osediff.py, posterior mean instead of a sample."""
    z = vae.encode(lq * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    eps = unet(z, timesteps, encoder_hidden_states=emb).sample
    x0 = scheduler.step(eps, timesteps, z, return_dict=True).prev_sample
    return vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1, 1)


def bench_reference(args, dev: str, lqs: dict[int, np.ndarray], emb: np.ndarray) -> dict[int, float]:
    td = torch.float16 if args.device == "gpu" and args.dtype != "float32" else torch.float32
    unet = UNet2DConditionModel(**harness.read_config(args.configs, "unet")).to(dev, td).eval()
    vae = AutoencoderKL(**harness.read_config(args.configs, "vae")).to(dev, td).eval()
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    # The one-step schedule 999 -> "-1" the authors' diffusers 0.25 used (see tests/references/osediff.py).
    scheduler.num_inference_steps = 1
    scheduler.timesteps = torch.tensor([999], device=dev)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(dev)  # as the authors' __init__ does
    timesteps = torch.tensor([999], device=dev).long()
    sync, out = harness.torch_sync(dev), {}
    for b, lq in lqs.items():
        lq_t = torch.from_numpy(lq.transpose(0, 3, 1, 2).copy()).to(dev, td)
        emb_t = torch.from_numpy(emb).to(dev, td).expand(b, -1, -1)
        out[b] = harness.time_ms(lambda: authors_forward(unet, vae, scheduler, timesteps, lq_t, emb_t),
                                 args.iters if b == 1 else args.throughput_iters, sync)
    return out


def bench_ours(args, lqs: dict[int, np.ndarray], emb: np.ndarray) -> dict[int, float]:
    dtype = jnp.dtype(args.dtype)
    modules, params = {}, {}
    for i, name in enumerate(("unet", "vae")):
        modules[name] = sd.build_module(name, harness.read_config(args.configs, name), dtype=dtype, param_dtype=dtype,
                                        attention_impl=args.attention)
        params[name] = harness.random_params(sd.param_shapes(name, modules[name]), i, dtype)
    sr_fn = jax.jit(sr.make_sr_fn(modules["unet"], modules["vae"], schedule.alphas_cumprod(),
                                         color_fix=args.color_fix))
    emb_j, out = jax.device_put(emb), {}
    for b, lq in lqs.items():
        lq_j = jax.device_put(lq)
        out[b] = harness.time_ms(lambda: sr_fn(params, lq_j, emb_j), args.iters if b == 1 else args.throughput_iters,
                                 harness.jax_sync)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_args(parser, size=64, iters=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch", type=int, default=8, help="batch size of the throughput measurement")
    parser.add_argument("--throughput-iters", type=int, default=1, help="timed calls at --batch after a warm-up")
    parser.add_argument("--color-fix", choices=("adain", "wavelet", "none"), default="adain")
    args = harness.parse_args(parser)
    dev = harness.setup(args.device)

    rng = np.random.default_rng(0)
    lqs = {b: rng.uniform(0, 1, (b, args.size, args.size, 3)).astype(np.float32) for b in (1, args.batch)}
    emb = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    ref = bench_reference(args, dev, lqs, emb)
    harness.free_torch(dev)  # the reference models went with bench_reference's frame
    ours = bench_ours(args, lqs, emb)

    ref_dtype = "float16" if args.device == "gpu" and args.dtype != "float32" else "float32"
    rows = []
    for b in lqs:
        kind = "latency" if b == 1 else "throughput"
        rows.append([f"{kind}, batch {b}", f"{ours[b]:.1f}", f"{ours[b] / b:.1f}", f"{1e3 * b / ours[b]:.2f}",
                     f"{ref[b]:.1f}", f"{1e3 * b / ref[b]:.2f}", f"{ref[b] / ours[b]:.2f}"])
    s = args.size
    harness.print_table(
        f"OSEDiff sr_fn, full SD-2.1-base, on {jax.devices()[0].device_kind} ({args.device}): {s}x{s} output "
        f"({s // 8}x{s // 8} latent); ours {args.dtype} (attention {args.attention}, colour fix {args.color_fix}) vs "
        f"the authors' forward in PyTorch {ref_dtype}; median of {args.iters} (batch 1) / {args.throughput_iters} "
        f"(batch {args.batch}) calls after a warm-up",
        ["measurement", "ours ms/call", "ours ms/image", "ours images/s", "reference ms/call", "reference images/s",
         "ratio reference/ours"], rows)


if __name__ == "__main__":
    main()
