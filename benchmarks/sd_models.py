"""Speed of the full SD-2.1-base VAE encode, UNet forward and VAE decode: ours (jitted Flax) against
diffusers, in the same run, random weights (speed does not depend on them).

    python -m benchmarks.sd_models                      # CPU, float32, 128x128 pixels, batch 1
    python -m benchmarks.sd_models --device gpu --dtype bfloat16 --size 512

On the GPU, `--dtype bfloat16` runs ours in bf16 (parameters stored in bf16, cuDNN attention) against
diffusers in float16; float32 runs both in float32 (TF32 off in PyTorch). One model family is alive
at a time: the PyTorch model is freed before ours is built, so the full UNet is in memory once.
"""

from __future__ import annotations

import argparse

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402

from osediff_jax.models import sd  # noqa: E402


def torch_dtype(args) -> torch.dtype:
    """diffusers' dtype: float16 against our bf16 on the GPU, float32 otherwise (CPU half is not a fast path)."""
    return torch.float16 if args.device == "gpu" and args.dtype != "float32" else torch.float32


def torch_vae(args, dev: str, config: dict, x: np.ndarray) -> tuple[float, float]:
    tsync, td = harness.torch_sync(dev), torch_dtype(args)
    ref = AutoencoderKL(**config).to(dev, td).eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev, td)
    zt = ref.encode(xt).latent_dist.mean
    return (harness.time_ms(lambda: ref.encode(xt).latent_dist.mean, args.iters, tsync),
            harness.time_ms(lambda: ref.decode(zt).sample, args.iters, tsync))


def ours_vae(args, config: dict, x: np.ndarray) -> tuple[float, float]:
    dtype = jnp.dtype(args.dtype)
    module = sd.build_module("vae", config, dtype=dtype, param_dtype=dtype, attention_impl=args.attention)
    params = harness.random_params(sd.param_shapes("vae", module), 1, dtype)
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode")[0])
    decode = jax.jit(lambda p, z: module.apply({"params": p}, z, method="decode"))
    xj = jax.device_put(x)
    z = encode(params, xj)
    return (harness.time_ms(lambda: encode(params, xj), args.iters, harness.jax_sync),
            harness.time_ms(lambda: decode(params, z), args.iters, harness.jax_sync))


def torch_unet(args, dev: str, config: dict, z: np.ndarray, ctx: np.ndarray) -> float:
    tsync, td = harness.torch_sync(dev), torch_dtype(args)
    ref = UNet2DConditionModel(**config).to(dev, td).eval()
    zt = torch.from_numpy(z.transpose(0, 3, 1, 2).copy()).to(dev, td)
    ct = torch.from_numpy(ctx).to(dev, td)
    tt = torch.full((z.shape[0],), 999, device=dev)
    return harness.time_ms(lambda: ref(zt, tt, encoder_hidden_states=ct).sample, args.iters, tsync)


def ours_unet(args, config: dict, z: np.ndarray, ctx: np.ndarray) -> float:
    dtype = jnp.dtype(args.dtype)
    module = sd.build_module("unet", config, dtype=dtype, param_dtype=dtype, attention_impl=args.attention)
    params = harness.random_params(sd.param_shapes("unet", module), 2, dtype)
    fwd = jax.jit(lambda p, z, t, c: module.apply({"params": p}, z, t, c))
    zj, cj, tj = jax.device_put(z), jax.device_put(ctx), jnp.full((z.shape[0],), 999)
    return harness.time_ms(lambda: fwd(params, zj, tj, cj), args.iters, harness.jax_sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_args(parser, size=128, iters=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--only", choices=("vae", "unet"), default=None, help="benchmark one family only")
    args = harness.parse_args(parser)
    dev = harness.setup(args.device)

    rng = np.random.default_rng(0)
    b, s = args.batch, args.size
    x = rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32)
    z = rng.standard_normal((b, s // 8, s // 8, 4)).astype(np.float32)
    ctx = rng.standard_normal((b, 77, 1024)).astype(np.float32)
    rows = []
    # Each family's PyTorch model is gone (its function returned) before ours is built.
    if args.only in (None, "vae"):
        config = harness.read_config(args.configs, "vae")
        t_enc, t_dec = torch_vae(args, dev, config, x)
        harness.free_torch(dev)
        o_enc, o_dec = ours_vae(args, config, x)
        rows += [("VAE encode", o_enc, t_enc), ("VAE decode", o_dec, t_dec)]
    if args.only in (None, "unet"):
        config = harness.read_config(args.configs, "unet")
        t_unet = torch_unet(args, dev, config, z, ctx)
        harness.free_torch(dev)
        rows.append(("UNet forward", ours_unet(args, config, z, ctx), t_unet))

    ref_dtype = str(torch_dtype(args)).removeprefix("torch.")
    harness.print_table(
        f"SD-2.1-base models on {jax.devices()[0].device_kind} ({args.device}): {s}x{s} pixels / {s // 8}x{s // 8} "
        f"latent, batch {b}; ours {args.dtype} (attention {args.attention}) vs diffusers {ref_dtype}; "
        f"median of {args.iters} after a warm-up",
        ["model", "ours ms", "diffusers ms", "ratio diffusers/ours"],
        [[name, f"{o:.1f}", f"{t:.1f}", f"{t / o:.2f}"] for name, o, t in rows])


if __name__ == "__main__":
    main()
