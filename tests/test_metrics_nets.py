"""LPIPS, DISTS and the FID Inception against their reference packages (lpips, DISTS-pytorch,
pytorch-fid) with random weights saved in the real file formats; FID against clean-fid's
formula; weight-file errors; the random-backbone LPIPS option."""

import sys
from unittest import mock

import jax
import numpy as np
import pytest
import torch
import torchvision

from osediff_jax.metrics import weights
from osediff_jax.metrics.dists import DISTS, dists_params
from osediff_jax.metrics.fid import (
    InceptionV3FID,
    fid_from_features,
    inception_params,
    preprocess,
)
from osediff_jax.metrics.lpips import LPIPS, lpips_distance, lpips_params

pytestmark = pytest.mark.reference

RTOL = 1e-5  # max |ours - reference| / max |reference|, float32 on both sides


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 80, 96, 3)).astype(np.float32)
    y = np.clip(0.6 * x[:, ::-1] + rng.normal(0.2, 0.3, x.shape), 0, 1).astype(np.float32)
    return x, y


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package(net, images, tmp_path):
    import lpips
    torch.manual_seed(0)
    ref = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    lin_file = f"{lpips.__path__[0]}/weights/v0.1/{net}.pth"
    ref.load_state_dict(torch.load(lin_file, map_location="cpu"), strict=False)
    ref.eval()
    # The random backbone in torchvision's file format (legacy serialisation, like the real file).
    features = {k.replace("net.slice", "").split(".", 1)[1]: v for k, v in ref.state_dict().items()
                if k.startswith("net.")}
    torch.save({f"features.{k}": v for k, v in features.items()}, tmp_path / lpips_file(net),
               _use_new_zipfile_serialization=False)
    (tmp_path / f"lpips_{net}.pth").write_bytes(open(lin_file, "rb").read())

    x, y = images[0] * 2 - 1, images[1] * 2 - 1
    with torch.no_grad():
        want = ref(nchw(x), nchw(y)).numpy().reshape(-1)
    got = jax.jit(LPIPS(net).apply)({"params": lpips_params(net, tmp_path)}, x, y)
    assert rel_err(got, want) <= RTOL, (got, want)


def lpips_file(net: str) -> str:
    return {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}[net]


def test_dists_matches_dists_pytorch(images, tmp_path):
    from DISTS_pytorch import DISTS_pt
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None)
    torch.save(vgg.state_dict(), tmp_path / "vgg16-397923af.pth")  # the whole model, as the real file
    # The wheel's own alpha/beta file, as the package ships it.
    ab = torch.load(f"{sys.prefix}/weights.pt", map_location="cpu")
    torch.save(ab, tmp_path / "dists_weights.pt")
    with mock.patch.object(DISTS_pt.models, "vgg16", lambda **kw: vgg):
        ref = DISTS_pt.DISTS(load_weights=False)
    ref.alpha.data, ref.beta.data = ab["alpha"], ab["beta"]
    x, y = images
    with torch.no_grad():
        want = ref(nchw(x), nchw(y)).numpy().reshape(-1)
    got = jax.jit(DISTS().apply)({"params": dists_params(tmp_path)}, x, y)
    assert rel_err(got, want) <= RTOL, (got, want)


def random_fid_inception(path) -> None:
    """pytorch-fid's FID Inception with random weights (BN statistics too), saved like the real file."""
    from pytorch_fid import inception as pfi
    torch.manual_seed(0)
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, sd, **k: None):
        net = pfi.fid_inception_v3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):  # variance-preserving, so that 2048-d features stay O(1)
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    torch.save(net.state_dict(), path)


def test_fid_inception_matches_pytorch_fid(tmp_path):
    from pytorch_fid import inception as pfi
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    random_fid_inception(path)
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(path)):
        ref = pfi.InceptionV3([3], resize_input=False, normalize_input=False).eval()
    rng = np.random.default_rng(1)
    x = np.stack([preprocess(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)) for _ in range(2)])
    with torch.no_grad():
        want = ref(nchw(x))[0].numpy().reshape(2, -1)
    got = jax.jit(InceptionV3FID().apply)({"params": inception_params(tmp_path)}, x)
    assert got.shape == (2, 2048)
    assert rel_err(got, want) <= RTOL


def test_fid_preprocess_is_clean_fid_resize():
    from PIL import Image
    img = np.random.default_rng(2).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    want = np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize(
        (299, 299), resample=Image.BICUBIC)).clip(0, 255) for c in range(3)], -1)
    np.testing.assert_array_equal(preprocess(img), ((want - 128) / 128).astype(np.float32))


def test_fid_value_matches_reference_formula():
    from scipy import linalg
    rng = np.random.default_rng(3)
    f1 = rng.normal(0, 1, (300, 64)).astype(np.float32)
    f2 = (rng.normal(0.2, 1.1, (250, 64)) @ rng.normal(0, 0.3, (64, 64)) + f1[:1]).astype(np.float32)
    mu1, s1, mu2, s2 = f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2)).real
    want = (mu1 - mu2).dot(mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    got = fid_from_features(f1, f2)
    assert abs(got - want) <= 1e-6 * abs(want)
    assert abs(fid_from_features(f1, f1)) <= 1e-6 * want


def test_missing_weights_name_file_and_origin(tmp_path):
    with pytest.raises(weights.MissingWeightsError, match=r"vgg16-397923af\.pth.*download\.pytorch\.org"):
        dists_params(tmp_path)
    with pytest.raises(weights.MissingWeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*pytorch-fid"):
        inception_params(None)
    with pytest.raises(weights.MissingWeightsError, match=r"lpips_alex\.pth.*lpips/weights/v0\.1/alex\.pth"):
        torch.save({}, tmp_path / "alexnet-owt-7be5be79.pth")
        lpips_params("alex", tmp_path)


def test_corrupt_weight_file_is_named(tmp_path):
    (tmp_path / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"pt_inception-2015-12-05-6726825d\.pth: not a readable PyTorch checkpoint"):
        inception_params(tmp_path)


def test_lpips_vgg_random_backbone_needs_no_files(images, capsys):
    params = lpips_params("vgg", None, random_backbone=True, seed=0)
    assert "random backbone and random linear layers" in capsys.readouterr().err
    x, y = images[0] * 2 - 1, images[1] * 2 - 1
    d = lpips_distance(params, np.concatenate([x, x]), np.concatenate([y, x]), net="vgg")
    assert d.shape == (4,) and bool(np.all(np.asarray(d[:2]) > 0))
    assert float(np.abs(d[2:]).max()) <= 1e-12
    again = lpips_params("vgg", None, random_backbone=True, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(again)))


def test_lpips_gradient_is_finite_where_features_vanish(images):
    from osediff_jax.metrics.lpips import unit_normalize
    a = np.zeros((1, 2, 2, 8), np.float32)
    a[0, 0, 0, 0] = 1.0
    g = jax.grad(lambda v: unit_normalize(v).sum())(a)
    assert bool(np.isfinite(np.asarray(g)).all())
    np.testing.assert_array_equal(np.asarray(unit_normalize(a))[0, 0, 0], a[0, 0, 0] / (1.0 + 1e-10))
    params = lpips_params("alex", None, random_backbone=True, seed=1)
    x = np.full((1, 64, 64, 3), -1.0, np.float32)  # deep features of a black image: mostly zero
    grad = jax.grad(lambda v: lpips_distance(params, v, x * 0.5, net="alex").sum())(x)
    assert bool(np.isfinite(np.asarray(grad)).all())
