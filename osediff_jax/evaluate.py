"""Evaluate super-resolved images against ground truth with the OSEDiff paper's metrics.

    python -m osediff_jax.evaluate --pred DIR --gt DIR [--metrics psnr,ssim,niqe,lpips,dists,fid]
        [--weights DIR] [--json FILE]

Images are paired by file stem. Prints a per-image table and the means in the paper's column
order; `--json` writes {"per_image": {name: {metric: value}}, "mean": {metric: value}} (FID only
under "mean"). PSNR, SSIM and NIQE need no setup; LPIPS, DISTS and FID read weight files from
`--weights` (see osediff_jax/metrics/weights.py for each file and its origin)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from osediff_jax.imageio import SUFFIXES, ImageReadError, list_images, read_rgb

PAPER_ORDER = ("psnr", "ssim", "lpips", "dists", "fid", "niqe")
FULL_REFERENCE = {"psnr", "ssim", "lpips", "dists"}
NEEDS_WEIGHTS = {"lpips", "dists", "fid"}
DEFAULT_METRICS = "psnr,ssim,niqe"


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (unpaired files, size mismatches, unreadable images)."""


def parse_metrics(spec: str) -> list[str]:
    """'psnr,ssim' -> ['psnr', 'ssim'] in the paper's order; 'all' -> every metric."""
    names = list(PAPER_ORDER) if spec.strip().lower() == "all" else [
        s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in PAPER_ORDER]
    if unknown or not names:
        raise EvaluationError(f"--metrics {spec!r}: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(PAPER_ORDER)} or 'all'")
    return [m for m in PAPER_ORDER if m in names]


def pair_images(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(stem, pred path, gt path) for every stem, or EvaluationError naming what does not pair."""
    sides = {}
    for label, folder in (("pred", pred_dir), ("gt", gt_dir)):
        files = list_images(folder)
        by_stem: dict[str, Path] = {}
        for p in files:
            if p.stem in by_stem:
                raise EvaluationError(f"{folder}: two images share the name '{p.stem}' ({by_stem[p.stem].name}, {p.name})")
            by_stem[p.stem] = p
        if not by_stem:
            raise EvaluationError(f"{folder}: no images (looked for {', '.join(SUFFIXES)})")
        sides[label] = by_stem
    only_pred = sorted(set(sides["pred"]) - set(sides["gt"]))
    only_gt = sorted(set(sides["gt"]) - set(sides["pred"]))
    if only_pred or only_gt:
        def show(names):
            return ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")
        msg = []
        if only_pred:
            msg.append(f"in {pred_dir} without a match in {gt_dir}: {show(only_pred)}")
        if only_gt:
            msg.append(f"in {gt_dir} without a match in {pred_dir}: {show(only_gt)}")
        raise EvaluationError("unpaired images (paired by file name without extension): " + "; ".join(msg))
    return [(s, sides["pred"][s], sides["gt"][s]) for s in sorted(sides["pred"])]


class Metrics:
    """The per-image metric functions, built once (network weights loaded and jitted)."""

    def __init__(self, metrics: list[str], weights_dir: str | os.PathLike | None):
        self.metrics = metrics
        self.fns: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
        if "psnr" in metrics or "ssim" in metrics:
            from osediff_jax.metrics import psnr_ssim
            self.fns.update({m: getattr(psnr_ssim, m) for m in ("psnr", "ssim") if m in metrics})
        if "lpips" in metrics:
            from osediff_jax.metrics.lpips import lpips_distance, lpips_params
            params_l = _on_device(lpips_params("alex", weights_dir))
            self.fns["lpips"] = lambda p, g: float(lpips_distance(params_l, _unit(p)[None] * 2 - 1,
                                                                   _unit(g)[None] * 2 - 1)[0])
        if "dists" in metrics:
            from osediff_jax.metrics.dists import dists_distance, dists_params
            params_d = _on_device(dists_params(weights_dir))
            self.fns["dists"] = lambda p, g: float(dists_distance(params_d, _unit(p)[None], _unit(g)[None])[0])
        if "niqe" in metrics:
            from osediff_jax.metrics.niqe import niqe
            self.fns["niqe"] = lambda p, g: niqe(p)
        self.features: Callable[[np.ndarray], np.ndarray] | None = None
        if "fid" in metrics:
            from osediff_jax.metrics.fid import inception_features, inception_params, preprocess
            params_f = _on_device(inception_params(weights_dir))
            self.features = lambda imgs: np.asarray(inception_features(params_f, np.stack([preprocess(i) for i in imgs])))


def _on_device(params: dict) -> dict:
    """Parameters moved to the accelerator once, not with every image."""
    import jax
    return jax.device_put(params)


def _unit(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / np.float32(255.0)


def evaluate(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, metrics: list[str],
             weights_dir: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """{"per_image": {stem: {metric: value}}, "mean": {metric: value}}; raises EvaluationError
    listing every unreadable image and size mismatch after the pass."""
    pairs = pair_images(pred_dir, gt_dir)
    m = Metrics(metrics, weights_dir)
    per_image: dict[str, dict[str, float]] = {}
    problems: list[str] = []
    feats_pred, feats_gt = [], []
    for stem, pp, gp in tqdm(pairs, desc="evaluating", unit="img", disable=not progress):
        decoded = []
        for path in (pp, gp):
            try:
                decoded.append(read_rgb(path))
            except ImageReadError as e:
                problems.append(str(e))
        if len(decoded) < 2:
            continue
        pred, gt = decoded
        if pred.shape != gt.shape and FULL_REFERENCE & set(metrics):
            problems.append(f"{pp} is {pred.shape[1]}x{pred.shape[0]} but {gp} is {gt.shape[1]}x{gt.shape[0]} "
                            f"(width x height): {', '.join(sorted(FULL_REFERENCE & set(metrics)))} need equal sizes")
            continue
        try:
            per_image[stem] = {k: fn(pred, gt) for k, fn in m.fns.items()}
        except ValueError as e:
            problems.append(f"{pp}: {e}")
            continue
        if m.features is not None:
            f = m.features([pred, gt])
            feats_pred.append(f[0])
            feats_gt.append(f[1])
    if problems:
        raise EvaluationError(f"{len(problems)} of {len(pairs)} image pairs could not be evaluated:\n  "
                              + "\n  ".join(problems))
    mean = {}
    for k in metrics:
        if k == "fid":
            from osediff_jax.metrics.fid import fid_from_features
            mean[k] = fid_from_features(np.stack(feats_pred), np.stack(feats_gt))
        else:
            mean[k] = float(np.mean([v[k] for v in per_image.values()]))
    return {"per_image": per_image, "mean": mean}


def format_table(result: dict, metrics: list[str]) -> str:
    """Per-image rows and a mean row, columns in the paper's order."""
    cols = [m for m in metrics if m != "fid"]
    width = max([len("mean")] + [len(s) for s in result["per_image"]])
    head = f"{'image':<{width}}  " + "  ".join(f"{c.upper():>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for stem, vals in result["per_image"].items():
        lines.append(f"{stem:<{width}}  " + "  ".join(f"{vals[c]:>9.4f}" for c in cols))
    lines.append("-" * len(head))
    lines.append("mean: " + "; ".join(f"{m.upper()} {result['mean'][m]:.4f}" for m in metrics))
    return "\n".join(lines)


def write_json(path: str | os.PathLike, result: dict) -> None:
    """Writes `result` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osediff_jax.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--pred", required=True, help="folder of super-resolved images")
    ap.add_argument("--gt", required=True, help="folder of ground-truth images (same file stems)")
    ap.add_argument("--metrics", default=DEFAULT_METRICS,
                    help=f"comma-separated subset of {','.join(PAPER_ORDER)}, or 'all' (default {DEFAULT_METRICS})")
    ap.add_argument("--weights", default=None, help="folder with the LPIPS/DISTS/FID weight files")
    ap.add_argument("--json", default=None, help="write per-image values and means to this JSON file")
    args = ap.parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        result = evaluate(args.pred, args.gt, metrics, args.weights)
    except (ValueError, FileNotFoundError, ImportError) as e:
        # Bad inputs, missing or unreadable weight files: one message naming the file.
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result, metrics))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
