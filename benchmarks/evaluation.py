"""Images per second of our PSNR, SSIM and NIQE against pyiqa 0.1.10 on the same CPU, and the
per-image agreement of the two, on the RealSR outputs (../shared/data/realsr by default).

With --networks N (default 20) it also runs pyiqa's own LPIPS, DISTS and FID (folder vs folder)
and ours on the first N pairs with the same random network weights, written in the real files'
formats into a temporary torch hub cache that pyiqa reads instead of downloading: an end-to-end
check of the protocols (resizing, normalisation, pooling, statistics), not of the real values;
agreement only (no timings: these networks are not part of the CPU throughput comparison).

pyiqa cannot be imported beside jax (numpy 2 vs imgaug), so it runs in its own virtual
environment (--pyiqa-python), made once with

    python -m venv --system-site-packages .venv-pyiqa
    .venv-pyiqa/bin/pip install "numpy<2" "setuptools<70" pyiqa==0.1.10

in the repository root (setuptools for the `pkg_resources` that pyiqa's CLIP dependency imports).
pyiqa downloads its NIQE model file on first use; offline, this script hands it the same pristine
parameters (our niqe_pris_params.npz) as a .mat file.
These metrics run on the CPU in both libraries (NumPy here), so there is no GPU variant.

    python -m benchmarks.evaluation --pyiqa-python .venv-pyiqa/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from osediff_jax.files.images import read_rgb
from osediff_jax.metrics.niqe import niqe
from osediff_jax.metrics.psnr_ssim import psnr, ssim

PYIQA_SCRIPT = r"""
import json, sys, time, numpy as np, scipy.io, torch, pyiqa
from pyiqa.utils.img_util import imread2tensor
pairs, mat, repeats = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
d = np.load(sys.argv[4])
scipy.io.savemat(mat, {"mu_prisparam": d["mu_pris_param"], "cov_prisparam": d["cov_pris_param"]})
metrics = {
    "psnr": pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", device="cpu"),
    "ssim": pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", device="cpu"),
    "niqe": pyiqa.create_metric("niqe", device="cpu", pretrained_model_path=mat),
}
imgs = [(imread2tensor(p).unsqueeze(0), imread2tensor(g).unsqueeze(0)) for p, g in pairs]
out = {"torch_threads": torch.get_num_threads()}
for name, m in metrics.items():
    vals, best = [], float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            v = [float(m(x, y)) if name != "niqe" else float(m(x)) for x, y in imgs]
        best = min(best, time.perf_counter() - t)
        vals = v
    out[name] = {"seconds": best, "values": vals}
print(json.dumps(out))
"""


PYIQA_NETS_SCRIPT = r"""
import json, sys, torch, pyiqa
from pyiqa.utils.img_util import imread2tensor
pairs, pred_dir, gt_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
imgs = [(imread2tensor(p).unsqueeze(0), imread2tensor(g).unsqueeze(0)) for p, g in pairs]
for name in ("lpips", "dists"):
    m = pyiqa.create_metric(name, device="cpu")
    with torch.no_grad():
        out[name] = [float(m(x, y)) for x, y in imgs]
m = pyiqa.create_metric("fid", device="cpu")
out["fid"] = float(m(pred_dir, gt_dir, mode="clean", num_workers=0, verbose=False))
print(json.dumps(out))
"""


def write_random_weights(hub: Path, ours: Path) -> None:
    """Random AlexNet/VGG16/FID-Inception weights plus the packages' own LPIPS linear layers and
    DISTS alpha/beta, under pyiqa's/torchvision's cache names (hub) and our names (ours)."""
    import shutil
    import sys
    from unittest import mock

    import lpips
    import torch
    import torchvision
    from pytorch_fid import inception as pfi

    hub.mkdir(parents=True)
    ours.mkdir(parents=True)
    torch.manual_seed(0)
    for name, net in (("alexnet-owt-7be5be79.pth", torchvision.models.alexnet),
                      ("vgg16-397923af.pth", torchvision.models.vgg16)):
        torch.save(net(weights=None).state_dict(), hub / name)
        shutil.copy(hub / name, ours / name)
    shutil.copy(f"{lpips.__path__[0]}/weights/v0.1/alex.pth", hub / "LPIPS_v0.1_alex-df73285e.pth")
    shutil.copy(f"{lpips.__path__[0]}/weights/v0.1/alex.pth", ours / "lpips_alex.pth")
    shutil.copy(f"{sys.prefix}/weights.pt", hub / "DISTS_weights-f5e65c96.pth")
    shutil.copy(f"{sys.prefix}/weights.pt", ours / "dists_weights.pt")
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, sd, **k: None):
        inc = pfi.fid_inception_v3()
    for m in inc.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(inc.state_dict(), hub / "pt_inception-2015-12-05-6726825d.pth")
    shutil.copy(hub / "pt_inception-2015-12-05-6726825d.pth", ours / "pt_inception-2015-12-05-6726825d.pth")


def compare_networks(pairs: list[tuple[str, str]], pyiqa_python: str) -> dict:
    import os

    from osediff_jax.metrics.evaluation import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for side, k in (("pred", 0), ("gt", 1)):
            (tmp / side).mkdir()
            for pair in pairs:
                (tmp / side / Path(pair[k]).name).symlink_to(pair[k])
        write_random_weights(tmp / "torch_home" / "hub" / "checkpoints", tmp / "weights")
        env = dict(os.environ, TORCH_HOME=str(tmp / "torch_home"))
        res = subprocess.run([pyiqa_python, "-c", PYIQA_NETS_SCRIPT, json.dumps(pairs), str(tmp / "pred"),
                              str(tmp / "gt")], capture_output=True, text=True, check=True, env=env)
        ref = json.loads(res.stdout.strip().splitlines()[-1])
        ours = evaluate(tmp / "pred", tmp / "gt", ["lpips", "dists", "fid"], tmp / "weights", progress=False)
    out = {}
    for name in ("lpips", "dists"):
        a = np.array([v[name] for v in ours["per_image"].values()])
        b = np.array(ref[name])
        out[name] = {"max_rel_diff": float(np.abs(a - b).max() / np.abs(b).max()),
                     "max_abs_diff": float(np.abs(a - b).max())}
    out["fid"] = {"ours": ours["mean"]["fid"], "pyiqa": ref["fid"],
                  "rel_diff": abs(ours["mean"]["fid"] - ref["fid"]) / abs(ref["fid"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "realsr"))
    ap.add_argument("--pyiqa-python", default=".venv-pyiqa/bin/python")
    ap.add_argument("--repeats", type=int, default=2, help="best of N timed passes")
    ap.add_argument("--networks", type=int, default=20,
                    help="pairs for the random-weight LPIPS/DISTS/FID comparison with pyiqa (0: skip)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    data = Path(args.data)
    names = sorted(p.stem for p in (data / "osediff_official").glob("*.png"))
    pairs = [(str(data / "osediff_official" / f"{n}.png"), str(data / "HR" / f"{n}.png")) for n in names]
    imgs = [(read_rgb(p), read_rgb(g)) for p, g in pairs]

    fns = {"psnr": lambda p, g: psnr(p, g), "ssim": lambda p, g: ssim(p, g), "niqe": lambda p, g: niqe(p)}
    ours = {}
    for name, fn in fns.items():
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            vals = [fn(p, g) for p, g in imgs]
            best = min(best, time.perf_counter() - t)
        ours[name] = {"seconds": best, "values": vals}

    npz = Path(__file__).resolve().parents[1] / "osediff_jax" / "metrics" / "niqe_pris_params.npz"
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([args.pyiqa_python, "-c", PYIQA_SCRIPT, json.dumps(pairs), f"{tmp}/niqe.mat",
                              str(args.repeats), str(npz)], capture_output=True, text=True, check=True)
    ref = json.loads(res.stdout.strip().splitlines()[-1])

    n = len(imgs)
    report = {"images": n, "size": list(imgs[0][0].shape), "pyiqa_torch_threads": ref["torch_threads"]}
    print(f"{n} image pairs of {imgs[0][0].shape[1]}x{imgs[0][0].shape[0]}, best of {args.repeats}; "
          f"pyiqa torch threads {ref['torch_threads']}")
    print(f"{'metric':<6} {'ours img/s':>11} {'pyiqa img/s':>12} {'speed-up':>9} {'max |diff|':>11} {'mean diff':>10}")
    for name in fns:
        a, b = np.array(ours[name]["values"]), np.array(ref[name]["values"])
        row = {"ours_img_per_s": n / ours[name]["seconds"], "pyiqa_img_per_s": n / ref[name]["seconds"],
               "max_abs_diff": float(np.abs(a - b).max()), "mean_diff": float(a.mean() - b.mean())}
        report[name] = row
        print(f"{name:<6} {row['ours_img_per_s']:>11.2f} {row['pyiqa_img_per_s']:>12.2f} "
              f"{row['ours_img_per_s'] / row['pyiqa_img_per_s']:>8.2f}x {row['max_abs_diff']:>11.2e} "
              f"{row['mean_diff']:>10.2e}")
    if args.networks:
        nets = compare_networks(pairs[:args.networks], args.pyiqa_python)
        report["networks_random_weights"] = nets
        print(f"\nsame random network weights, first {args.networks} pairs, ours vs pyiqa:")
        for name in ("lpips", "dists"):
            r = nets[name]
            print(f"{name:<6} max |diff| {r['max_abs_diff']:.2e}, relative to the largest value {r['max_rel_diff']:.2e}")
        r = nets["fid"]
        print(f"fid    ours {r['ours']:.6f}, pyiqa {r['pyiqa']:.6f}, relative difference {r['rel_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
