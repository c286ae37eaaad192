"""The evaluation CLI: pairing, table, JSON layout, errors; all six metrics end to end with random
network weights saved in the real file formats."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
import torchvision

from osediff_jax import evaluate as ev
from osediff_jax.files.images import read_rgb, write_png
from osediff_jax.metrics.dists import dists_distance, dists_params
from osediff_jax.metrics.fid import (
    fid_from_features,
    inception_features,
    inception_params,
    preprocess,
)
from osediff_jax.metrics.lpips import lpips_distance, lpips_params
from osediff_jax.metrics.niqe import niqe
from osediff_jax.metrics.psnr_ssim import psnr, ssim
from tests.test_metrics_nets import random_fid_inception

pytestmark = pytest.mark.reference


def make_pairs(root, n=3, size=(104, 200)):
    rng = np.random.default_rng(0)
    (root / "pred").mkdir()
    (root / "gt").mkdir()
    for i in range(n):
        gt = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        pred = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
        write_png(root / "gt" / f"img{i}.png", gt)
        write_png(root / "pred" / f"img{i}.png", pred)
    return root / "pred", root / "gt"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    import lpips
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    # The backbones' `features` only: the classifier weights (most of the real files) are never read.
    for name, net in (("alexnet-owt-7be5be79.pth", torchvision.models.alexnet), ("vgg16-397923af.pth", torchvision.models.vgg16)):
        torch.save({k: v for k, v in net(weights=None).state_dict().items() if k.startswith("features.")}, d / name)
    shutil.copy(f"{lpips.__path__[0]}/weights/v0.1/alex.pth", d / "lpips_alex.pth")
    shutil.copy(f"{sys.prefix}/weights.pt", d / "dists_weights.pt")
    random_fid_inception(d / "pt_inception-2015-12-05-6726825d.pth")
    return d


def test_cli_all_metrics_json_and_table(tmp_path, weights_dir, capsys, monkeypatch):
    from osediff_jax.metrics import fid
    seen = {}

    def spy(f1, f2):  # sqrtm of 2048x2048 takes tens of seconds here: run it once
        seen.update(pred=f1, gt=f2, value=fid_from_features(f1, f2))
        return seen["value"]

    monkeypatch.setattr(fid, "fid_from_features", spy)
    pred_dir, gt_dir = make_pairs(tmp_path)
    out = tmp_path / "res" / "metrics.json"
    rc = ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "niqe,fid,psnr,dists,ssim,lpips",
                  "--weights", str(weights_dir), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert list(res["mean"]) == ["psnr", "ssim", "lpips", "dists", "fid", "niqe"]
    assert sorted(res["per_image"]) == ["img0", "img1", "img2"]
    assert all(list(v) == ["psnr", "ssim", "lpips", "dists", "niqe"] for v in res["per_image"].values())
    # Per-image values are the metric functions' on the decoded files; means are their means.
    p, g = read_rgb(pred_dir / "img1.png"), read_rgb(gt_dir / "img1.png")
    x, y = p[None].astype(np.float32) / 255, g[None].astype(np.float32) / 255
    want = {"psnr": psnr(p, g), "ssim": ssim(p, g), "niqe": niqe(p),
            "lpips": float(lpips_distance(lpips_params("alex", weights_dir), x * 2 - 1, y * 2 - 1)[0]),
            "dists": float(dists_distance(dists_params(weights_dir), x, y)[0])}
    for k, v in want.items():
        assert res["per_image"]["img1"][k] == pytest.approx(v, rel=1e-6, abs=1e-6), k
        assert res["mean"][k] == pytest.approx(np.mean([r[k] for r in res["per_image"].values()]), rel=1e-12)
    names = sorted(res["per_image"])
    imgs = [(read_rgb(pred_dir / f"{n}.png"), read_rgb(gt_dir / f"{n}.png")) for n in names]
    params = inception_params(weights_dir)
    f = np.stack([np.asarray(inception_features(params, np.stack([preprocess(a), preprocess(b)]))) for a, b in imgs])
    fp, fg = f[:, 0], f[:, 1]
    np.testing.assert_allclose(seen["pred"], fp, rtol=1e-5, atol=1e-5 * np.abs(fp).max())
    np.testing.assert_allclose(seen["gt"], fg, rtol=1e-5, atol=1e-5 * np.abs(fg).max())
    assert res["mean"]["fid"] == seen["value"] > 1.0
    table = capsys.readouterr().out
    assert table.index("PSNR") < table.index("SSIM") < table.index("LPIPS") < table.index("DISTS") < table.index("NIQE")
    assert "FID" in table.splitlines()[-1] and table.count("img") == 3


def test_default_metrics_need_no_weights(tmp_path, capsys):
    pred_dir, gt_dir = make_pairs(tmp_path, n=2)
    assert ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("mean: PSNR")


def test_unpaired_files_are_named(tmp_path, capsys):
    pred_dir, gt_dir = make_pairs(tmp_path, n=2)
    (gt_dir / "img1.png").rename(gt_dir / "other.png")
    assert ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir)]) == 2
    err = capsys.readouterr().err
    assert "unpaired" in err and "img1" in err and "other" in err


def test_size_mismatch_and_unreadable_are_all_reported(tmp_path, capsys):
    pred_dir, gt_dir = make_pairs(tmp_path, n=3)
    write_png(pred_dir / "img0.png", np.zeros((100, 200, 3), np.uint8))
    (gt_dir / "img2.png").write_bytes(b"not a png")
    out = tmp_path / "m.json"
    assert ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 image pairs" in err
    assert "img0.png is 200x100" in err and "200x104" in err
    assert "img2.png" in err and "not a readable image" in err
    assert not out.exists()


def test_missing_weights_and_bad_metric_names(tmp_path, capsys):
    pred_dir, gt_dir = make_pairs(tmp_path, n=2)
    assert ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "dists"]) == 2
    assert "vgg16-397923af.pth is needed" in capsys.readouterr().err
    assert ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr,brisque"]) == 2
    assert "unknown metric(s) brisque" in capsys.readouterr().err
