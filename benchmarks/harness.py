"""Shared pieces of the benchmark scripts: device selection for JAX and PyTorch, timing, random
parameter trees of a given shape, and the markdown table every script prints.

Import this module before anything imports JAX's backends: it keeps JAX from preallocating GPU
memory, so PyTorch and JAX can share one GPU in the same run.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

DEFAULT_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "sd21-base"


def add_common_args(parser: argparse.ArgumentParser, *, size: int, iters: int | None = None) -> None:
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--configs", type=Path, default=DEFAULT_CONFIGS,
                        help="SD-2.1-base folder whose unet/ and vae/ config.json give the architecture")
    parser.add_argument("--size", type=int, default=size, help="image side in pixels (a multiple of 8)")
    parser.add_argument("--attention", choices=("xla", "cudnn"), default=None,
                        help="our attention kernel (default: cudnn on the GPU, xla on the CPU)")
    if iters is not None:
        parser.add_argument("--iters", type=int, default=iters, help="timed calls after one warm-up call")


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses, checks --size, and fills in --attention's device default."""
    args = parser.parse_args()
    if args.size % 8:
        parser.error(f"--size {args.size}: expected a multiple of 8")
    args.attention = args.attention or ("cudnn" if args.device == "gpu" else "xla")
    return args


def setup(device: str) -> str:
    """Points JAX at the device and returns the matching PyTorch device name."""
    jax.config.update("jax_platforms", "cpu" if device == "cpu" else "cuda")
    import torch

    torch.set_grad_enabled(False)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # not the dtype-cast notices of `.to(dtype)`
    if device == "gpu":
        if not torch.cuda.is_available():
            raise SystemExit("--device gpu: PyTorch sees no CUDA device")
        # Float32 references must be float32, not TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return "cuda"
    return "cpu"


def read_config(configs: Path, name: str) -> dict:
    path = configs / name / "config.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; pass --configs DIR, a folder with the SD-2.1-base configs")
    import json

    return json.loads(path.read_text())


def time_ms(fn: Callable[[], Any], iters: int, sync: Callable[[Any], Any]) -> float:
    """Median wall time in ms of `iters` calls after one warm-up call (compilation excluded)."""
    sync(fn())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sync(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def jax_sync(x: Any) -> Any:
    return jax.block_until_ready(x)


def torch_sync(device: str) -> Callable[[Any], Any]:
    import torch

    def sync(x: Any) -> Any:
        if device == "cuda":
            torch.cuda.synchronize()
        return x

    return sync


def random_params(shapes: Any, seed: int, dtype: Any) -> Any:
    """A parameter tree of the given shapes with small random values, on the default JAX device
    (put there once, so calls do not copy it). Speed does not depend on the values."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        x = rng.standard_normal(s.shape, dtype=np.float32)
        if len(s.shape) > 1:
            x /= np.sqrt(np.prod(s.shape[:-1]), dtype=np.float32)
        elif path[-1].key == "scale":
            x = 1.0 + 0.1 * x
        else:
            x *= 0.1
        return jax.device_put(x.astype(dtype))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def free_torch(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(flush=True)
