"""The exact SD-2.1-base UNet and VAE configurations (random weights) against diffusers, at 64x64
pixels / 8x8 latents. One full model alive at a time; the process stays under 14 GB resident."""

import gc
import resource

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from osediff_jax.weights import diffusers_format
from tests.references.sd import (
    SHARED_SD,
    nchw,
    nhwc,
    randomize_,
    rel_err,
    shared_config,
)

pytestmark = [pytest.mark.reference,
              pytest.mark.skipif(not SHARED_SD.is_dir(), reason="needs ../shared/reference/sd21-base")]
torch.set_grad_enabled(False)
MAX_RSS_GB = 14.0


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def test_full_unet(tmp_path):
    ref = randomize_(UNet2DConditionModel(**shared_config("unet")), seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    ctx = rng.standard_normal((1, 77, 1024)).astype(np.float32)
    want = nhwc(ref(nchw(x), torch.tensor([999]), torch.from_numpy(ctx)).sample)
    ref.save_pretrained(tmp_path / "unet")
    del ref
    gc.collect()

    module, params, _ = diffusers_format.load_component(tmp_path, "unet")
    got = jax.jit(module.apply)({"params": params}, x, np.array([999]), ctx)
    err = rel_err(got, want)
    print(f"full UNet rel err {err:.2e}, peak RSS {_peak_rss_gb():.1f} GB")
    assert err <= 1e-4
    assert _peak_rss_gb() < MAX_RSS_GB


def test_full_vae(tmp_path):
    ref = randomize_(AutoencoderKL(**shared_config("vae")), seed=4)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    post = ref.encode(nchw(x)).latent_dist
    want_mean, want_img = nhwc(post.mean), nhwc(ref.decode(post.mean).sample)
    ref.save_pretrained(tmp_path / "vae")
    del ref, post
    gc.collect()

    module, params, _ = diffusers_format.load_component(tmp_path, "vae")
    mean, _ = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))(params, x)
    img = jax.jit(lambda p, z: module.apply({"params": p}, z, method="decode"))(params, want_mean)
    print(f"full VAE rel err: mean {rel_err(mean, want_mean):.2e}, decode {rel_err(img, want_img):.2e}")
    assert rel_err(mean, want_mean) <= 1e-4
    assert rel_err(img, want_img) <= 1e-4
    assert _peak_rss_gb() < MAX_RSS_GB
