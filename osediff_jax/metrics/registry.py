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
    the same size, unless it is a set metric). A network metric's `load` reads its params through
    `network_params`, so from release files or from a checkpoint of `convert metrics` alike."""

    name: str
    needs_gt: bool
    weight_files: tuple[str, ...]
    load: Callable[[WeightsDir], Callable]
    set_score: Callable[[np.ndarray, np.ndarray], float] | None = None
    # The network's params from a folder of its release files (what `convert metrics` stores).
    params: Callable[[WeightsDir], dict] | None = None


def network_params(name: str, weights_dir: WeightsDir) -> dict:
    """Params of metric `name`: from a converted metric checkpoint when `weights_dir` is one,
    else from its release files."""
    from osediff_jax.metrics.weights import restore_metric
    restored = restore_metric(weights_dir, name)
    return restored if restored is not None else METRICS[name].params(weights_dir)


def check_weights(names: list[str], weights_dir: WeightsDir) -> None:
    """Before any work: MissingWeightsError naming every weight file the metrics `names` need that
    `weights_dir` lacks, each with its origin (or the metrics a converted checkpoint lacks)."""
    from pathlib import Path

    from osediff_jax.metrics.weights import CONVERTED_INDEX, WEIGHT_FILES, MissingWeightsError, is_converted
    needed = [m for m in names if METRICS[m].weight_files]
    if is_converted(weights_dir):
        import json
        held = json.loads((Path(weights_dir) / CONVERTED_INDEX).read_text())["metrics"]
        absent = [m for m in needed if m not in held]
        if absent:
            raise MissingWeightsError(f"{weights_dir}: this converted metric checkpoint has no weights for "
                                      f"{', '.join(absent)}; convert a folder that holds their files too")
        return
    files = list(dict.fromkeys(f for m in needed for f in METRICS[m].weight_files))
    missing = [f for f in files if weights_dir is None or not (Path(weights_dir) / f).is_file()]
    if missing and weights_dir is None:
        raise MissingWeightsError("; ".join(f"{f} is needed (from {WEIGHT_FILES[f]})" for f in missing)
                                  + ": pass the folder holding them (--weights DIR)")
    if missing:
        raise MissingWeightsError(f"{weights_dir}: missing " + "; ".join(f"{f} ({WEIGHT_FILES[f]})" for f in missing))


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

    from osediff_jax.metrics.lpips import lpips_distance
    params = jax.device_put(network_params("lpips", weights_dir))  # on the device once, not per image
    return lambda p, g: float(lpips_distance(params, _unit(p)[None] * 2 - 1, _unit(g)[None] * 2 - 1)[0])


def _dists(weights_dir: WeightsDir) -> PairFn:
    import jax

    from osediff_jax.metrics.dists import dists_distance
    params = jax.device_put(network_params("dists", weights_dir))
    return lambda p, g: float(dists_distance(params, _unit(p)[None], _unit(g)[None])[0])


def _fid_features(weights_dir: WeightsDir) -> Callable[[list[np.ndarray]], np.ndarray]:
    import jax

    from osediff_jax.metrics.fid import inception_features, preprocess
    params = jax.device_put(network_params("fid", weights_dir))
    return lambda imgs: np.asarray(inception_features(params, np.stack([preprocess(i) for i in imgs])))


def _fid_score(pred: np.ndarray, gt: np.ndarray) -> float:
    from osediff_jax.metrics.fid import fid_from_features
    return fid_from_features(pred, gt)


def _niqe(_: WeightsDir) -> PairFn:
    from osediff_jax.metrics.niqe import niqe
    return lambda p, g: niqe(p)


def _musiq(weights_dir: WeightsDir) -> PairFn:
    from osediff_jax.metrics.musiq import musiq_scorer
    return musiq_scorer(network_params("musiq", weights_dir))


def _maniqa(weights_dir: WeightsDir) -> PairFn:
    from osediff_jax.metrics.maniqa import maniqa_scorer
    return maniqa_scorer(network_params("maniqa", weights_dir))


def _clipiqa(weights_dir: WeightsDir) -> PairFn:
    from osediff_jax.metrics.clipiqa import clipiqa_scorer
    return clipiqa_scorer(network_params("clipiqa", weights_dir))


def _lpips_params(weights_dir: WeightsDir) -> dict:
    from osediff_jax.metrics.lpips import lpips_params
    return lpips_params("alex", weights_dir)


def _dists_params(weights_dir: WeightsDir) -> dict:
    from osediff_jax.metrics.dists import dists_params
    return dists_params(weights_dir)


def _fid_params(weights_dir: WeightsDir) -> dict:
    from osediff_jax.metrics.fid import inception_params
    return inception_params(weights_dir)


def _musiq_params(weights_dir: WeightsDir) -> dict:
    from osediff_jax.metrics.musiq import musiq_params
    return musiq_params(weights_dir)


def _maniqa_params(weights_dir: WeightsDir) -> dict:
    from osediff_jax.metrics.maniqa import maniqa_params
    return maniqa_params(weights_dir)


def _clipiqa_params(weights_dir: WeightsDir) -> dict:
    from osediff_jax.metrics.clipiqa import clipiqa_params
    return clipiqa_params(weights_dir)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("psnr", True, (), _psnr),
    Metric("ssim", True, (), _ssim),
    Metric("lpips", True, ("alexnet-owt-7be5be79.pth", "lpips_alex.pth"), _lpips, params=_lpips_params),
    Metric("dists", True, ("vgg16-397923af.pth", "dists_weights.pt"), _dists, params=_dists_params),
    Metric("fid", True, ("pt_inception-2015-12-05-6726825d.pth",), _fid_features, set_score=_fid_score,
           params=_fid_params),
    Metric("niqe", False, (), _niqe),
    Metric("musiq", False, ("musiq_koniq_ckpt-e95806b9.pth",), _musiq, params=_musiq_params),
    Metric("maniqa", False, ("MANIQA_PIPAL-ae6d356b.pth",), _maniqa, params=_maniqa_params),
    Metric("clipiqa", False, ("RN50.pt",), _clipiqa, params=_clipiqa_params),
)}


def convert_weights(src: WeightsDir, dst: str | os.PathLike) -> list[str]:
    """One converted metric checkpoint at `dst` holding the params of every network metric whose
    release files are all in folder `src` (read with torch); returns those metrics' names.
    MissingWeightsError when no metric is complete, naming every file and its origin."""
    from pathlib import Path

    from osediff_jax.metrics.weights import WEIGHT_FILES, MissingWeightsError, save_converted
    nets = [m for m in METRICS.values() if m.params is not None]
    complete = [m for m in nets if all((Path(src) / f).is_file() for f in m.weight_files)]
    if not complete:
        files = dict.fromkeys(f for m in nets for f in m.weight_files)
        raise MissingWeightsError(f"{src}: no metric's weight files are all there; expected e.g. "
                                  + "; ".join(f"{f} ({WEIGHT_FILES[f]})" for f in files))
    save_converted(dst, {m.name: m.params(src) for m in complete})
    return [m.name for m in complete]


def describe() -> str:
    """One line per metric: what it compares and the weight files it reads (for --help)."""
    lines = []
    for m in METRICS.values():
        kind = "image set against the GT set" if m.set_score else "per image, " + (
            "against the GT" if m.needs_gt else "no reference")
        files = f"weights: {', '.join(m.weight_files)}" if m.weight_files else "no weight files"
        lines.append(f"  {m.name:<7} {kind}; {files}")
    return "\n".join(lines)
