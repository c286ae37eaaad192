"""UNet and VAE against diffusers on the same random weights, loaded through the real file formats."""


import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from osediff_jax.weights import diffusers_format
from tests.references.sd import SMALL_UNET, SMALL_VAE, nchw, nhwc, randomize_, rel_err

pytestmark = pytest.mark.reference

torch.set_grad_enabled(False)


@pytest.mark.parametrize("linear_projection,size,fmt", [(True, (11, 13), "safetensors"), (False, (8, 6), "bin")])
def test_small_unet_matches_diffusers(tmp_path, linear_projection, size, fmt):
    ref = randomize_(UNet2DConditionModel(**{**SMALL_UNET, "use_linear_projection": linear_projection}), seed=1)
    ref.save_pretrained(tmp_path / "unet", safe_serialization=fmt == "safetensors")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 4)).astype(np.float32)
    ctx = rng.standard_normal((2, 5, 24)).astype(np.float32)
    t = np.array([999, 17])
    want = nhwc(ref(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample)

    module, params, _ = diffusers_format.load_component(tmp_path, "unet")
    got = jax.jit(module.apply)({"params": params}, x, t, ctx)
    assert got.shape == want.shape
    assert rel_err(got, want) <= 1e-5


def test_small_vae_matches_diffusers(tmp_path):
    ref = randomize_(AutoencoderKL(**SMALL_VAE), seed=2)
    ref.save_pretrained(tmp_path / "vae")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 20, 12, 3)).astype(np.float32)
    post = ref.encode(nchw(x)).latent_dist
    z = np.random.default_rng(2).standard_normal((1, 5, 3, 4)).astype(np.float32)
    want_dec = nhwc(ref.decode(nchw(z)).sample)

    module, params, _ = diffusers_format.load_component(tmp_path, "vae")
    mean, logvar = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))(params, x)
    dec = jax.jit(lambda p, z: module.apply({"params": p}, z, method="decode"))(params, z)
    assert rel_err(mean, nhwc(post.mean)) <= 1e-5
    assert rel_err(logvar, nhwc(post.logvar)) <= 1e-5
    assert rel_err(dec, want_dec) <= 1e-5
