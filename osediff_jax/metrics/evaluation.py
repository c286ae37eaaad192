"""Evaluating a folder of outputs against a folder of ground truth, with the metrics of `registry`:
pairing by file stem, per-image values, means, and the printed table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from osediff_jax.files.images import MAX_PIXELS, SUFFIXES, ImageReadError, list_images, read_rgb
from osediff_jax.metrics.registry import METRICS, check_weights

DEFAULT_METRICS = "psnr,ssim,niqe"


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (unpaired files, size mismatches, unreadable images)."""


def parse_metrics(spec: str) -> list[str]:
    """'psnr,ssim' -> ['psnr', 'ssim'] in the paper's order; 'all' -> every metric."""
    names = list(METRICS) if spec.strip().lower() == "all" else [
        s.strip().lower() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise EvaluationError(f"--metrics {spec!r}: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                              f"choose from {', '.join(METRICS)} or 'all'")
    return [m for m in METRICS if m in names]


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


def evaluate(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, metrics: list[str],
             weights_dir: str | os.PathLike | None = None, progress: bool = True, max_pixels: int = MAX_PIXELS,
             per_image: dict[str, dict[str, float]] | None = None) -> dict:
    """{"per_image": {stem: {metric: value}}, "mean": {metric: value}}; raises EvaluationError
    listing every unreadable image and size mismatch after the pass. `per_image`, if given, is
    filled as the pass goes (what was done when an interrupt stops it). Missing weight files stop
    it before any work (MissingWeightsError naming them all)."""
    check_weights(metrics, weights_dir)
    pairs = pair_images(pred_dir, gt_dir)
    scorers = {m: METRICS[m].load(weights_dir) for m in metrics}
    per_pair = {m: f for m, f in scorers.items() if METRICS[m].set_score is None}
    per_set = {m: f for m, f in scorers.items() if METRICS[m].set_score is not None}
    same_size = sorted(m for m in per_pair if METRICS[m].needs_gt)
    per_image = {} if per_image is None else per_image
    features: dict[str, tuple[list, list]] = {m: ([], []) for m in per_set}
    problems: list[str] = []
    for stem, pp, gp in tqdm(pairs, desc="evaluating", unit="img", disable=not progress):
        decoded = []
        for path in (pp, gp):
            try:
                decoded.append(read_rgb(path, max_pixels))
            except ImageReadError as e:
                problems.append(str(e))
        if len(decoded) < 2:
            continue
        pred, gt = decoded
        if pred.shape != gt.shape and same_size:
            problems.append(f"{pp} is {pred.shape[1]}x{pred.shape[0]} but {gp} is {gt.shape[1]}x{gt.shape[0]} "
                            f"(width x height): {', '.join(same_size)} need equal sizes")
            continue
        try:
            per_image[stem] = {m: f(pred, gt) for m, f in per_pair.items()}
        except ValueError as e:
            problems.append(f"{pp}: {e}")
            continue
        for m, f in per_set.items():
            feats = f([pred, gt])
            features[m][0].append(feats[0])
            features[m][1].append(feats[1])
    if problems:
        raise EvaluationError(f"{len(problems)} of {len(pairs)} image pairs could not be evaluated:\n  "
                              + "\n  ".join(problems))
    mean = {}
    for m in metrics:
        if m in per_set:
            mean[m] = METRICS[m].set_score(np.stack(features[m][0]), np.stack(features[m][1]))
        else:
            mean[m] = float(np.mean([v[m] for v in per_image.values()]))
    return {"per_image": per_image, "mean": mean}


def format_table(result: dict, metrics: list[str]) -> str:
    """Per-image rows and a mean row, columns in the paper's order."""
    cols = [m for m in metrics if METRICS[m].set_score is None]
    width = max([len("mean")] + [len(s) for s in result["per_image"]])
    head = f"{'image':<{width}}  " + "  ".join(f"{c.upper():>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for stem, vals in result["per_image"].items():
        lines.append(f"{stem:<{width}}  " + "  ".join(f"{vals[c]:>9.4f}" for c in cols))
    lines.append("-" * len(head))
    lines.append("mean: " + "; ".join(f"{m.upper()} {result['mean'][m]:.4f}" for m in metrics))
    return "\n".join(lines)
