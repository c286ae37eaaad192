"""The no-reference metrics (CLIPIQA, MUSIQ, MANIQA) against pyiqa 0.1.10's own architecture code,
on random weights saved in the real file formats and on RealSR images, float32 on both sides:
per-image scores within 1e-4 relative.

pyiqa is not imported as a package (its `__init__` imports imgaug, which fails under numpy 2):
`tests/references/pyiqa.py` loads only its architecture files from the installed pyiqa 0.1.10
distribution (bare parent packages over the real folders, see there). Its downloads are
intercepted: CLIP's `_download` returns the TorchScript archive the test wrote, and MANIQA's
`timm.create_model(..., pretrained=True)` is patched to build the ViT without weights (the
MANIQA file holds the ViT's weights too and is loaded over it, as pyiqa does)."""

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from osediff_jax.files.images import read_rgb
from osediff_jax.metrics import clipiqa, maniqa, musiq, weights
from tests.references import SHARED
from tests.references.pyiqa import (
    arch,
    clipiqa_reference,
    maniqa_reference,
    musiq_reference,
    nchw,
    write_clip_rn50,
    write_maniqa,
    write_musiq,
)

pytestmark = pytest.mark.reference

ROOT = Path(__file__).resolve().parents[1]
REALSR = SHARED / "data" / "realsr" / "osediff_official"
RTOL = 1e-4  # per-image |ours - pyiqa| / |pyiqa|


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64).reshape(-1), np.asarray(ref, np.float64).reshape(-1)
    return float(np.max(np.abs(ours - ref) / np.abs(ref)))


@pytest.fixture(scope="module")
def realsr() -> list[np.ndarray]:
    """Two RealSR outputs of the authors, in sorted order, and a 384x512 crop of the first
    (a non-square image: MUSIQ's padding masks, MANIQA's crop range)."""
    imgs = [read_rgb(p) for p in sorted(REALSR.glob("*.png"))[:2]]
    return imgs + [imgs[0][64:448]]


def test_clip_prompt_tokens_are_clip_tokenize():
    clipiqa_arch = arch("clipiqa_arch")
    with mock.patch.object(clipiqa_arch, "load", lambda *a, **k: torch.nn.Linear(1, 1)):
        ref = clipiqa_arch.CLIPIQA()
    np.testing.assert_array_equal(clipiqa.prompt_tokens(), ref.prompt_pairs.numpy())


def test_clipiqa_matches_pyiqa(realsr, tmp_path):
    path = tmp_path / "RN50.pt"
    write_clip_rn50(path)
    ref = clipiqa_reference(path)
    imgs = realsr[:2]  # one size: one compilation (CLIP has no size-dependent step here)
    with torch.no_grad():
        want = [float(ref(nchw(img))) for img in imgs]
    score = clipiqa.clipiqa_scorer(clipiqa.clipiqa_params(tmp_path))
    got = [score(img, None) for img in imgs]
    assert rel_err(got, want) <= RTOL, (got, want)
    # The images' scores differ by more than the tolerance: the comparison is not of constants.
    assert np.ptp(want) > 3 * RTOL * np.abs(want).max(), want


def test_missing_nr_weights_name_file_and_origin(tmp_path):
    with pytest.raises(weights.MissingWeightsError, match=r"RN50\.pt.*openaipublic"):
        clipiqa.clipiqa_params(tmp_path)


def test_musiq_matches_pyiqa(realsr, tmp_path):
    from pyiqa.data.multiscale_trans_util import get_multiscale_patches
    path = tmp_path / "musiq_koniq_ckpt-e95806b9.pth"
    write_musiq(path)
    ref = musiq_reference(path)
    imgs = [realsr[0], realsr[2]]
    with torch.no_grad():
        want = [float(ref(nchw(img))) for img in imgs]
    score = musiq.musiq_scorer(musiq.musiq_params(tmp_path))
    got = [score(img, None) for img in imgs]
    assert rel_err(got, want) <= RTOL, (got, want)
    assert np.ptp(want) > 3 * RTOL * np.abs(want).max(), want
    # The input handling itself, on the non-square image (resizes, padding, masks, positions).
    img = realsr[-1]
    theirs = get_multiscale_patches((nchw(img) - 0.5) * 2, **ref.data_preprocess_opts)[0].numpy()
    patches, spatial, scale, mask = musiq.preprocess(img)
    np.testing.assert_array_equal(theirs[:, -3:], np.stack([spatial, scale, mask], 1))
    ours = patches.transpose(0, 3, 1, 2).reshape(len(patches), -1)
    assert np.abs(ours - theirs[:, :-3]).max() <= 1e-5


def test_maniqa_matches_pyiqa(realsr, tmp_path):
    """One crop per image instead of 20 (ViT-B/8 on the CPU; the score still pools 784
    positions); the crop sequence of 20 is checked in test_maniqa_crops_follow_pyiqa_seeding."""
    path = tmp_path / "MANIQA_PIPAL-ae6d356b.pth"
    write_maniqa(path)
    ref = maniqa_reference(path, test_sample=1)
    imgs = [realsr[0], realsr[2]]
    np.random.seed(maniqa.SEED)  # as pyiqa's InferenceModel seeds after building the metric
    with torch.no_grad():
        want = [float(ref(nchw(img))) for img in imgs]
    score = maniqa.maniqa_scorer(maniqa.maniqa_params(tmp_path), n_crops=1)
    got = [score(img, None) for img in imgs]
    assert rel_err(got, want) <= RTOL, (got, want)
    assert np.ptp(want) > 3 * RTOL * np.abs(want).max(), want


def test_maniqa_crops_follow_pyiqa_seeding(realsr):
    """pyiqa's random_crop (20 crops, NumPy's global generator seeded once) over a sequence of
    images, one of them small enough to be enlarged first, against ours from one RandomState."""
    arch_util = arch("arch_util")
    imgs = [realsr[0], realsr[1][:200, :300], realsr[2]]
    np.random.seed(maniqa.SEED)
    rng = np.random.RandomState(maniqa.SEED)
    for img in imgs:
        want = arch_util.random_crop((nchw(img) - 0.5) / 0.5, crop_size=224, crop_num=20).numpy()
        got = maniqa.crops(img, rng)
        # Same corners; the enlarged image's values differ by float32 rounding of the weights.
        assert np.abs(got.transpose(0, 3, 1, 2) - want).max() <= 1e-5


def test_convert_metrics_and_evaluate_from_either(tmp_path, monkeypatch, capsys):
    """`convert metrics` on a folder holding only MUSIQ's file, run as users run it (a subprocess,
    relative paths); evaluate reads the checkpoint and gives the raw file's values; a metric the
    checkpoint lacks and a folder lacking files stop before any work, naming what is missing."""
    import json
    import os
    import subprocess
    import sys

    from osediff_jax import evaluate as ev
    from osediff_jax.files.images import write_png
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    write_musiq(tmp_path / "w" / musiq.WEIGHTS_FILE)
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        write_png(tmp_path / "pred" / f"{i}.png", img)
        write_png(tmp_path / "gt" / f"{i}.png", img)
    run = subprocess.run([sys.executable, "-m", "osediff_jax.convert", "metrics", "--src", "w", "--dst", "ckpt"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert "converted: musiq; not converted (files absent): lpips, dists, fid, maniqa, clipiqa" in run.stdout
    results = []
    for weights_dir in ("w", "ckpt"):
        assert ev.main(["--pred", "pred", "--gt", "gt", "--metrics", "musiq", "--weights", weights_dir,
                        "--json", f"{weights_dir}.json"]) == 0
        results.append(json.loads((tmp_path / f"{weights_dir}.json").read_text()))
    assert results[0] == results[1]
    capsys.readouterr()
    assert ev.main(["--pred", "pred", "--gt", "gt", "--metrics", "musiq,clipiqa", "--weights", "ckpt"]) == 2
    assert "has no weights for clipiqa" in capsys.readouterr().err
    assert ev.main(["--pred", "pred", "--gt", "gt", "--metrics", "all", "--weights", "w"]) == 2
    err = capsys.readouterr().err
    for name in ("RN50.pt", "MANIQA_PIPAL-ae6d356b.pth", "vgg16-397923af.pth"):
        assert name in err
    assert "openaipublic" in err and "IQA-PyTorch/releases" in err and musiq.WEIGHTS_FILE not in err
    assert "%" not in err.splitlines()[-1]  # stopped before the progress bar started
