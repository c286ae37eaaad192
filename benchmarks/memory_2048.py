"""Memory of the tiled upscaler for a 2048x2048 output with the full SD-2.1-base architecture, from the
compiled function's memory analysis (no weights needed: parameters are abstract shapes).

  python -m benchmarks.memory_2048 [--size 2048] [--dtype bfloat16] [--config-dir ../shared/reference/sd21-base]

On the CPU this shows what XLA plans to allocate for the CPU's program, which differs from the GPU's
in its fast paths (convolutions on small images as patches, attention in smaller query blocks; see
models/layers.py and models/attention.py); the GPU's attention blocks are bounded by MAX_LOGITS alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.inference import tiling
from osediff_jax.models import schedule, sd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--config-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/reference/sd21-base"))
    p.add_argument("--tile", type=int, default=96)
    p.add_argument("--tile-batch", type=int, default=4)
    args = p.parse_args()
    dtype = jnp.dtype(args.dtype)
    configs = {c: json.loads((Path(args.config_dir) / c / "config.json").read_text()) for c in ("unet", "vae")}
    modules = {c: sd.build_module(c, configs[c], dtype=dtype) for c in configs}
    # Parameters stored in the compute dtype, as a bf16 serving checkpoint would hold them.
    params = {c: jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), sd.param_shapes(c, modules[c]))
              for c in configs}
    fn = tiling.make_upscale_fn(modules["unet"], modules["vae"], schedule.alphas_cumprod(),
                                latent_tile=args.tile, tile_batch=args.tile_batch)
    lq = jax.ShapeDtypeStruct((1, args.size, args.size, 3), jnp.float32)
    emb = jax.ShapeDtypeStruct((1, 77, 1024), dtype)
    start = time.time()
    compiled = jax.jit(fn).lower(params, lq, emb).compile()
    m = compiled.memory_analysis()
    gib = lambda n: n / 2**30
    weights = sum(int(np.prod(s.shape)) * dtype.itemsize for s in jax.tree.leaves(params))
    print(f"{args.size}x{args.size} {args.dtype}, latent tile {args.tile} x{args.tile_batch}, compiled in "
          f"{time.time() - start:.0f} s on {jax.devices()[0].platform}")
    print(f"  arguments {gib(m.argument_size_in_bytes):.2f} GiB (weights {gib(weights):.2f} GiB), "
          f"outputs {gib(m.output_size_in_bytes):.2f} GiB, temporaries {gib(m.temp_size_in_bytes):.2f} GiB")
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    print(f"  total {gib(total):.2f} GiB")


if __name__ == "__main__":
    main()
