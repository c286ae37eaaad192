"""Our osediff.pkl import + sr_fn against the authors' diffusers + peft pipeline, and the export."""

import gc

import jax
import numpy as np
import pytest
import torch

from osediff_jax.inference import sr
from osediff_jax.models import lora, schedule
from osediff_jax.weights import diffusers_format, osediff_pkl
from tests.references import osediff as ref_lib
from tests.references.sd import (
    SHARED_SD,
    SMALL_UNET,
    SMALL_VAE,
    nchw,
    nhwc,
    shared_config,
)

pytestmark = pytest.mark.reference

torch.set_grad_enabled(False)


def _ours(folder, lq01, prompt_embeds):
    unet, unet_params, _ = diffusers_format.load_component(folder, "unet")
    vae, vae_params, _ = diffusers_format.load_component(folder, "vae")
    w = osediff_pkl.read_pkl(folder / "osediff.pkl", unet_params, vae_params)
    params = dict(zip(("unet", "vae"), w.merge(unet_params, vae_params)))
    sr_fn = sr.make_sr_fn(unet, vae, schedule.alphas_cumprod(), color_fix="none")
    return np.asarray(jax.jit(sr_fn)(params, lq01, prompt_embeds)) * 2 - 1, w, unet_params, vae_params


@pytest.mark.parametrize("size", [(44, 52), (32, 40)])
def test_small_pipeline_matches_authors(tmp_path, size):
    unet, vae = ref_lib.build(SMALL_UNET, SMALL_VAE, tmp_path, seed=10)
    rng = np.random.default_rng(0)
    lq01 = rng.uniform(0, 1, (2, *size, 3)).astype(np.float32)
    emb = rng.standard_normal((1, 77, SMALL_UNET["cross_attention_dim"])).astype(np.float32)
    want = nhwc(ref_lib.forward(unet, vae, nchw(lq01 * 2 - 1), torch.from_numpy(emb).expand(2, -1, -1)))
    got, w, unet_params, vae_params = _ours(tmp_path, lq01, emb)
    err = float(np.abs(got - want).max())
    print(f"small OSEDiff pipeline {size}: max abs diff {err:.2e} on [-1, 1]")
    assert err <= 1e-4

    # Our target enumeration reproduces the authors' lists, order and duplicates included.
    assert lora.unet_target_lists(unet_params) == w.unet_modules
    assert lora.vae_target_list(vae_params) == w.vae_modules


def test_export_round_trip_is_bit_exact(tmp_path):
    ref_lib.build(SMALL_UNET, SMALL_VAE, tmp_path, seed=11)
    _, unet_params, _ = diffusers_format.load_component(tmp_path, "unet")
    _, vae_params, _ = diffusers_format.load_component(tmp_path, "vae")
    w = osediff_pkl.read_pkl(tmp_path / "osediff.pkl", unet_params, vae_params)
    osediff_pkl.save(w, tmp_path / "converted")
    osediff_pkl.write_pkl(osediff_pkl.load(tmp_path / "converted"), tmp_path / "again.pkl")
    a, b = (torch.load(tmp_path / f, weights_only=True) for f in ("osediff.pkl", "again.pkl"))
    assert sorted(a) == sorted(b)
    for k in a:
        if k.startswith("state_dict"):
            assert sorted(a[k]) == sorted(b[k])
            for name in a[k]:
                assert a[k][name].dtype == b[k][name].dtype and torch.equal(a[k][name], b[k][name]), name
        else:
            assert a[k] == b[k], k


@pytest.mark.skipif(not SHARED_SD.is_dir(), reason="needs ../shared/reference/sd21-base")
def test_full_size_pipeline_matches_authors(tmp_path):
    unet, vae = ref_lib.build(shared_config("unet"), shared_config("vae"), tmp_path, seed=12)
    rng = np.random.default_rng(1)
    lq01 = rng.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    emb = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    want = nhwc(ref_lib.forward(unet, vae, nchw(lq01 * 2 - 1), torch.from_numpy(emb)))
    del unet, vae
    gc.collect()
    got, *_ = _ours(tmp_path, lq01, emb)
    err = float(np.abs(got - want).max())
    print(f"full SD-2.1 OSEDiff pipeline 64x64: max abs diff {err:.2e} on [-1, 1]")
    assert err <= 5e-4
