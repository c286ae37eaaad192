"""Every metric the package computes, in the paper's column order: what it needs and how to build
it. A new metric is one module in this package plus one entry in `METRICS`; `evaluate` and
training's validation read this table."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

WeightsDir = str | os.PathLike | None
PairFn = Callable[[np.ndarray, np.ndarray], float]


@dataclasses.dataclass(frozen=True)
class Metric:
    """`load(weights_dir)` builds the scorer once (networks loaded, jitted). A per-image metric's
    scorer maps (pred, gt), HxWx3 uint8, to a float (no-reference ones ignore gt); a set metric's
    (FID) maps a list of images to their features [N, D], and `set_score(pred_features,
    gt_features)` gives its one value. `needs_gt`: compared with the ground truth (per image, of
    the same size, unless it is a set metric)."""

    name: str
    needs_gt: bool
    weight_files: tuple[str, ...]
    load: Callable[[WeightsDir], Callable]
    set_score: Callable[[np.ndarray, np.ndarray], float] | None = None


def _unit(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / np.float32(255.0)


def _psnr(_: WeightsDir) -> PairFn:
    from osediff_jax.metrics.psnr_ssim import psnr
    return psnr


def _ssim(_: WeightsDir) -> PairFn:
    from osediff_jax.metrics.psnr_ssim import ssim
    return ssim


def _lpips(weights_dir: WeightsDir) -> PairFn:
    import jax

    from osediff_jax.metrics.lpips import lpips_distance, lpips_params
    params = jax.device_put(lpips_params("alex", weights_dir))  # on the device once, not per image
    return lambda p, g: float(lpips_distance(params, _unit(p)[None] * 2 - 1, _unit(g)[None] * 2 - 1)[0])


def _dists(weights_dir: WeightsDir) -> PairFn:
    import jax

    from osediff_jax.metrics.dists import dists_distance, dists_params
    params = jax.device_put(dists_params(weights_dir))
    return lambda p, g: float(dists_distance(params, _unit(p)[None], _unit(g)[None])[0])


def _fid_features(weights_dir: WeightsDir) -> Callable[[list[np.ndarray]], np.ndarray]:
    import jax

    from osediff_jax.metrics.fid import inception_features, inception_params, preprocess
    params = jax.device_put(inception_params(weights_dir))
    return lambda imgs: np.asarray(inception_features(params, np.stack([preprocess(i) for i in imgs])))


def _fid_score(pred: np.ndarray, gt: np.ndarray) -> float:
    from osediff_jax.metrics.fid import fid_from_features
    return fid_from_features(pred, gt)


def _niqe(_: WeightsDir) -> PairFn:
    from osediff_jax.metrics.niqe import niqe
    return lambda p, g: niqe(p)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("psnr", True, (), _psnr),
    Metric("ssim", True, (), _ssim),
    Metric("lpips", True, ("alexnet-owt-7be5be79.pth", "lpips_alex.pth"), _lpips),
    Metric("dists", True, ("vgg16-397923af.pth", "dists_weights.pt"), _dists),
    Metric("fid", True, ("pt_inception-2015-12-05-6726825d.pth",), _fid_features, set_score=_fid_score),
    Metric("niqe", False, (), _niqe),
)}


def describe() -> str:
    """One line per metric: what it compares and the weight files it reads (for --help)."""
    lines = []
    for m in METRICS.values():
        kind = "image set against the GT set" if m.set_score else "per image, " + (
            "against the GT" if m.needs_gt else "no reference")
        files = f"weights: {', '.join(m.weight_files)}" if m.weight_files else "no weight files"
        lines.append(f"  {m.name:<6} {kind}; {files}")
    return "\n".join(lines)
