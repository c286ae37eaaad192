"""PSNR, SSIM and NIQE of the authors' RealSR outputs against the per-image values they logged
with pyiqa 0.1.10 (../shared/data/realsr/osediff_official_metrics.log)."""

import re

import numpy as np
import pytest

from osediff_jax.files.images import read_rgb
from osediff_jax.metrics.niqe import niqe
from osediff_jax.metrics.psnr_ssim import psnr, ssim
from tests.references import SHARED

REALSR = SHARED / "data" / "realsr"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared is absent (outside CI)")


@pytest.fixture(scope="module")
def logged() -> dict[str, dict[str, float]]:
    text = (REALSR / "osediff_official_metrics.log").read_text()
    rows = re.findall(r"results_osediff/(\S+)\.png \| (.*?) \| Runtime", text)
    out = {name: {k.lower(): float(v) for k, v in re.findall(r"(\w+): ([-\d.]+)", vals)} for name, vals in rows}
    assert len(out) == 100
    return out


@pytest.fixture(scope="module")
def ours(logged) -> dict[str, dict[str, float]]:
    out = {}
    for name in logged:
        pred = read_rgb(REALSR / "osediff_official" / f"{name}.png")
        gt = read_rgb(REALSR / "HR" / f"{name}.png")
        out[name] = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt), "niqe": niqe(pred)}
    return out


def test_psnr_ssim_per_image_and_means(logged, ours):
    names = sorted(logged)
    for metric, tol in (("psnr", 1e-4), ("ssim", 1e-5)):
        a = np.array([ours[n][metric] for n in names])
        b = np.array([logged[n][metric] for n in names])
        worst = int(np.abs(a - b).argmax())
        assert np.abs(a - b).max() <= tol, (metric, names[worst], a[worst], b[worst])
    assert round(np.mean([ours[n]["psnr"] for n in names]), 4) == 25.1511
    assert round(np.mean([ours[n]["ssim"] for n in names]), 4) == 0.7341


def test_niqe_per_image_and_mean(logged, ours):
    names = sorted(logged)
    a = np.array([ours[n]["niqe"] for n in names])
    b = np.array([logged[n]["niqe"] for n in names])
    worst = int(np.abs(a - b).argmax())
    assert np.abs(a - b).max() <= 0.03, (names[worst], a[worst], b[worst])
    assert abs(a.mean() - 5.6476) <= 0.002
