"""Where a 3x3 convolution is faster as patches + one matmul than as XLA's library convolution on the
CPU: both jitted, per call, at SD-2.1's channel counts, square images of growing side (batch 1,
float32, batch 1 unless --batch). The size threshold `layers.PATCHES_MAX_PIXELS` is read off this table.

    python -m benchmarks.conv_threshold                 # 320/640/1280 channels, sides 1..64
    python -m benchmarks.conv_threshold --sides 8 16 24 32 --channels 1280

Each cell is the fastest of --iters calls (the minimum is the figure least disturbed by other
processes on a shared machine); both ways are timed alternately, call by call.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import harness
import jax  # noqa: E402
import numpy as np  # noqa: E402

from osediff_jax.models import layers  # noqa: E402

PAD = ((1, 1), (1, 1))


def library(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), PAD, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def patches(x: jax.Array, w: jax.Array) -> jax.Array:
    return layers.conv_patches(x, w, 1, PAD)


def fastest_ms(fns: list, args: tuple, iters: int) -> list[float]:
    """Per function, the fastest of `iters` calls after a warm-up, the functions called in turn."""
    best = [float("inf")] * len(fns)
    for f in fns:
        jax.block_until_ready(f(*args))
    for _ in range(iters):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs="+", default=[320, 640, 1280])
    parser.add_argument("--sides", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    jax.config.update("jax_platforms", "cpu")
    fns = [jax.jit(library), jax.jit(patches)]
    rng = np.random.default_rng(0)
    rows = []
    for c in args.channels:
        w = jax.device_put((rng.standard_normal((3, 3, c, c)) / np.sqrt(9 * c)).astype(np.float32))
        for s in args.sides:
            x = jax.device_put(rng.standard_normal((args.batch, s, s, c)).astype(np.float32))
            lib, pat = fastest_ms(fns, (x, w), args.iters)
            rows.append([str(c), f"{s}x{s}", str(s * s), f"{lib:.2f}", f"{pat:.2f}", f"{lib / pat:.2f}"])
            print(*rows[-1], flush=True)
    harness.print_table(f"3x3 convolution on the CPU, float32, batch {args.batch} (fastest call)",
                        ["channels", "image", "pixels", "library ms", "patches ms", "library / patches"], rows)


if __name__ == "__main__":
    main()
