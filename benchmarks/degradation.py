"""Throughput of the on-device degradation pipeline against the reference's per-sample CPU path.

    python -m benchmarks.degradation                      # CPU: ours (batch 16, 512x512) and the reference
    python -m benchmarks.degradation --platform gpu --no-reference   # GPU: ours only (target >= 200 images/s)

Ours: `osediff_jax.degradation.degrade`, jitted once, timed over `--iters` batches with fresh keys.
Reference: the authors' per-sample path (basicsr 1.4.2 operations orchestrated as in
cswry/OSEDiff dataloaders/realesrgan.py, see tests/references/degradation.py) on the CPU with PyTorch,
one image at a time, parameters drawn per sample. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gt_batch(batch: int, size: int, folder: Path):
    import numpy as np

    from osediff_jax.files.images import list_images, read_rgb

    files = list_images(folder) if folder.is_dir() else []
    rng = np.random.default_rng(0)
    if not files:  # any content degrades at the same speed
        return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    out = []
    for i in range(batch):
        img = read_rgb(files[i % len(files)])
        if min(img.shape[:2]) < size:
            raise ValueError(f"{files[i % len(files)]}: smaller than {size}x{size}")
        top = rng.integers(0, img.shape[0] - size + 1)
        left = rng.integers(0, img.shape[1] - size + 1)
        out.append(img[top : top + size, left : left + size])
    return np.stack(out)


def bench_ours(gt, iters: int) -> dict:
    import jax
    import jax.numpy as jnp

    from osediff_jax.data.degradation import degrade

    gt = jax.device_put(jnp.asarray(gt))
    t0 = time.perf_counter()
    jax.block_until_ready(degrade(jax.random.key(0), gt))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(iters):
        lq, _ = degrade(jax.random.key(i + 1), gt)
    jax.block_until_ready(lq)
    seconds = time.perf_counter() - t0
    return {
        "device": str(jax.devices()[0]),
        "first_call_s": round(compile_s, 2),
        "images_per_s": round(gt.shape[0] * iters / seconds, 2),
    }


def bench_reference(gt, samples: int) -> dict:
    import jax
    import numpy as np
    import torch

    from tests.references.degradation import reference_degrade

    from osediff_jax.data.degradation import sample_params

    params = jax.tree.map(np.asarray, jax.vmap(sample_params)(jax.random.split(jax.random.key(1), samples)))
    images = [torch.from_numpy(gt[i % len(gt)] / 255.0).float().permute(2, 0, 1)[None] for i in range(samples)]
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(samples):
            reference_degrade(images[i], params, i)
    seconds = time.perf_counter() - t0
    return {"torch_threads": torch.get_num_threads(), "images_per_s": round(samples / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3, help="timed batches of ours after the first call")
    ap.add_argument("--ref-samples", type=int, default=16, help="images through the reference")
    ap.add_argument("--platform", choices=("cpu", "gpu"), default=None, help="JAX platform (default: JAX's)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "realsr" / "HR")
    args = ap.parse_args()
    if args.platform:
        import jax

        jax.config.update("jax_platforms", args.platform)
    gt = _gt_batch(args.batch, args.size, args.images)
    result = {"batch": args.batch, "size": args.size, "ours": bench_ours(gt, args.iters)}
    if not args.no_reference:
        result["reference_cpu_per_sample"] = bench_reference(gt, args.ref_samples)
        result["ratio"] = round(result["ours"]["images_per_s"] / result["reference_cpu_per_sample"]["images_per_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
