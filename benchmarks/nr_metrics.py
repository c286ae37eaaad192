"""Images per second of our MUSIQ, MANIQA and CLIPIQA against pyiqa 0.1.10's own architecture code
(PyTorch) in the same run, on the authors' RealSR outputs (../shared/data/realsr/osediff_official),
with random weights written in the release files' formats (speed does not depend on the values),
and the per-image agreement of the two (relative).

pyiqa's architecture files are loaded as the parity tests load them (tests/references/pyiqa.py),
so it runs in this environment. Each side is timed after one warm-up image (our compilation),
best of --repeats passes over --images images, one image at a time as `evaluate` scores them.
MANIQA runs pyiqa's 20 random crops per image: about 3 TFLOP per 512x512 image, minutes per image
on a small CPU.

    python -m benchmarks.nr_metrics [--device cpu|gpu] [--images 5] [--repeats 2] [--metrics musiq,maniqa,clipiqa]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from osediff_jax.files.images import read_rgb
from tests.references import SHARED

REALSR = SHARED / "data" / "realsr" / "osediff_official"


def build(name: str, tmp: Path):
    """(our scorer factory, pyiqa's network) for metric `name`, on the same random weights."""
    from osediff_jax.metrics import clipiqa, maniqa, musiq
    from tests.references import pyiqa
    if name == "clipiqa":
        pyiqa.write_clip_rn50(tmp / clipiqa.WEIGHTS_FILE)
        return (lambda: clipiqa.clipiqa_scorer(clipiqa.clipiqa_params(tmp))), pyiqa.clipiqa_reference(tmp / clipiqa.WEIGHTS_FILE)
    if name == "musiq":
        pyiqa.write_musiq(tmp / musiq.WEIGHTS_FILE)
        return (lambda: musiq.musiq_scorer(musiq.musiq_params(tmp))), pyiqa.musiq_reference(tmp / musiq.WEIGHTS_FILE)
    pyiqa.write_maniqa(tmp / maniqa.WEIGHTS_FILE)
    return (lambda: maniqa.maniqa_scorer(maniqa.maniqa_params(tmp))), pyiqa.maniqa_reference(tmp / maniqa.WEIGHTS_FILE)


def run(name: str, imgs: list[np.ndarray], repeats: int, device: str) -> dict:
    import torch

    from tests.references.pyiqa import nchw
    with tempfile.TemporaryDirectory() as tmp:
        make_ours, ref = build(name, Path(tmp))
        ref = ref.to(device)
        tensors = [nchw(i).to(device) for i in imgs]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        ours_s, ref_s, ours_vals, ref_vals = [], [], None, None
        for r in range(repeats):
            score = make_ours()  # a fresh scorer: MANIQA's crop generator restarts at its seed
            score(imgs[0], None)  # warm-up: compilation
            score = make_ours()
            t = time.perf_counter()
            vals = [score(i, None) for i in imgs]
            ours_s.append(time.perf_counter() - t)
            ours_vals = ours_vals or vals
            np.random.seed(123)  # pyiqa's seeding when a metric is built
            with torch.no_grad():
                ref(tensors[0])
                sync()
                np.random.seed(123)
                t = time.perf_counter()
                vals = [float(ref(x)) for x in tensors]
                sync()
            ref_s.append(time.perf_counter() - t)
            ref_vals = ref_vals or vals
    a, b = np.array(ours_vals), np.array(ref_vals)
    return {"images": len(imgs), "ours_img_per_s": len(imgs) / min(ours_s), "pyiqa_img_per_s": len(imgs) / min(ref_s),
            "speedup": min(ref_s) / min(ours_s), "max_rel_diff": float(np.max(np.abs(a - b) / np.abs(b)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--images", type=int, default=5, help="first N RealSR outputs in sorted order")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--metrics", default="musiq,maniqa,clipiqa")
    args = ap.parse_args()
    jax.config.update("jax_platforms", "cpu" if args.device == "cpu" else "cuda")
    import torch
    torch.set_grad_enabled(False)
    if args.device == "gpu":  # float32 on both sides, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    imgs = [read_rgb(p) for p in sorted(REALSR.glob("*.png"))[:args.images]]
    out = {"device": args.device, "jax_device": str(jax.devices()[0]), "torch_threads": torch.get_num_threads()}
    for name in args.metrics.split(","):
        out[name] = run(name, imgs, args.repeats, "cuda" if args.device == "gpu" else "cpu")
        print(name, json.dumps(out[name]), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
