"""Error of our bf16 compute path (float32 parameters, `dtype=bfloat16`) against diffusers in float32,
for the full SD-2.1-base UNet and VAE with random weights, next to our float32 error.

    python -m benchmarks.bf16_error                     # CPU, 64x64 pixels / 8x8 latent
    python -m benchmarks.bf16_error --device gpu --size 512

Weights: `randomize_` of tests/references/sd.py (as the parity tests and the CLIP bf16 measurement),
written by diffusers' `save_pretrained` and read by our loader, so both sides hold the same values.
Metrics: max|ours - ref| / max|ref| and mean|ours - ref| / mean|ref|. For scale, the same metrics
for diffusers itself in low precision (parameters and compute, `--ref-dtype`). On the GPU, float32
runs in true float32 on both sides (TF32 off in PyTorch, "highest" matmul precision in JAX).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from osediff_jax.models import sd  # noqa: E402
from osediff_jax.weights import diffusers_format  # noqa: E402

from tests.references.sd import randomize_  # noqa: E402


def nchw(x: np.ndarray, dev: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.float().cpu().numpy().transpose(0, 2, 3, 1)


def errors(ours, ref: np.ndarray) -> tuple[float, float]:
    d = np.abs(np.asarray(ours, np.float64) - ref)
    return float(d.max() / np.abs(ref).max()), float(d.mean() / np.abs(ref).mean())


def _ours(folder: Path, name: str, attention: str):
    """Our module per compute dtype, and the float32 parameters read from `folder/name`."""
    module, params, config = diffusers_format.load_component(folder, name)
    params = jax.device_put(params)
    bf16 = sd.build_module(name, config, dtype=jnp.bfloat16, attention_impl=attention)
    return {"float32": module, "bfloat16": bf16}, params


def reference_unet(args, dev: str, tmp: Path, z: np.ndarray, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' eps in float32 and in --ref-dtype; its float32 weights saved to tmp/unet."""
    ref = randomize_(UNet2DConditionModel(**harness.read_config(args.configs, "unet")), seed=3)
    ref.save_pretrained(tmp / "unet")
    ref.to(dev)

    def run(dtype: torch.dtype) -> np.ndarray:
        ref.to(dtype)
        t, c = torch.tensor([999], device=dev), torch.from_numpy(ctx).to(dev, dtype)
        return nhwc(ref(nchw(z, dev).to(dtype), t, c).sample)

    return run(torch.float32), run(getattr(torch, args.ref_dtype))


def reference_vae(args, dev: str, tmp: Path, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """diffusers' posterior mean and decode (of its float32 mean) in float32 and in --ref-dtype."""
    ref = randomize_(AutoencoderKL(**harness.read_config(args.configs, "vae")), seed=4)
    ref.save_pretrained(tmp / "vae")
    ref.to(dev)
    mean = ref.encode(nchw(x, dev)).latent_dist.mean
    want_mean, want_img = nhwc(mean), nhwc(ref.decode(mean).sample)
    low = getattr(torch, args.ref_dtype)
    ref.to(low)
    return (want_mean, want_img, nhwc(ref.encode(nchw(x, dev).to(low)).latent_dist.mean),
            nhwc(ref.decode(mean.to(low)).sample))


def unet_rows(args, dev: str, tmp: Path) -> list[list]:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, args.size // 8, args.size // 8, 4)).astype(np.float32)
    ctx = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    want, low = reference_unet(args, dev, tmp, z, ctx)
    harness.free_torch(dev)  # the PyTorch model went with reference_unet's frame
    rows = [["UNet eps", f"diffusers {args.ref_dtype}", *errors(low, want)]]
    modules, params = _ours(tmp, "unet", args.attention)
    for dtype, module in modules.items():
        got = jax.jit(module.apply)({"params": params}, z, jnp.array([999]), ctx)
        rows.append(["UNet eps", dtype, *errors(got, want)])
    return rows


def vae_rows(args, dev: str, tmp: Path) -> list[list]:
    x = np.random.default_rng(1).uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32)
    want_mean, want_img, low_mean, low_img = reference_vae(args, dev, tmp, x)
    harness.free_torch(dev)
    rows = [["VAE encode (posterior mean)", f"diffusers {args.ref_dtype}", *errors(low_mean, want_mean)],
            ["VAE decode", f"diffusers {args.ref_dtype}", *errors(low_img, want_img)]]
    modules, params = _ours(tmp, "vae", args.attention)
    for dtype, module in modules.items():
        mean = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode")[0])(params, x)
        img = jax.jit(lambda p, z: module.apply({"params": p}, z, method="decode"))(params, want_mean)
        rows += [["VAE encode (posterior mean)", dtype, *errors(mean, want_mean)],
                 ["VAE decode", dtype, *errors(img, want_img)]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_args(parser, size=64)
    parser.add_argument("--ref-dtype", choices=("bfloat16", "float16"), default=None,
                        help="diffusers' low-precision row, parameters and compute in this dtype "
                             "(default: float16 on the GPU, as the speed benchmarks, bfloat16 on the CPU)")
    args = harness.parse_args(parser)
    args.ref_dtype = args.ref_dtype or ("float16" if args.device == "gpu" else "bfloat16")
    dev = harness.setup(args.device)
    jax.config.update("jax_default_matmul_precision", "highest")
    with tempfile.TemporaryDirectory() as tmp:
        rows = unet_rows(args, dev, Path(tmp)) + vae_rows(args, dev, Path(tmp))
    s = args.size
    harness.print_table(
        f"SD-2.1-base bf16 error on {jax.devices()[0].device_kind} ({args.device}): {s}x{s} pixels / "
        f"{s // 8}x{s // 8} latent, batch 1; ours (float32 params) vs diffusers float32; "
        f"bf16 attention {args.attention}",
        ["output", "computed by", "max abs err / max abs ref", "mean abs err / mean abs ref"],
        [[name, by if by.startswith("diffusers") else f"ours, {by} compute", f"{mx:.1e}", f"{mn:.1e}"]
         for name, by, mx, mn in rows])


if __name__ == "__main__":
    main()
