"""Tiled latent processing: same size out, no seams, the untiled path equal to sr_fn."""

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import data

from osediff_jax.inference import sr, tiling
from osediff_jax.models import attention
from osediff_jax.weights import diffusers_format, random_sd


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "random-sd"
    random_sd.write_random_sd(folder, seed=3)
    m = diffusers_format.load_diffusers(folder, ("unet", "vae"))
    emb = np.random.default_rng(0).standard_normal((1, 77, 64)).astype(np.float32)
    return m, {"unet": m.params["unet"], "vae": m.params["vae"]}, emb


def _fn(m, **kw):
    return jax.jit(tiling.make_upscale_fn(m.modules["unet"], m.modules["vae"], m.alphas_cumprod, color_fix="none", **kw))


def test_tile_layout():
    assert tiling.tile_starts(40, 16, 8) == [0, 8, 16, 24]
    assert tiling.tile_starts(41, 16, 8) == [0, 8, 16, 24, 25]
    assert tiling.tile_starts(10, 16, 8) == [0]
    w = tiling.blend_window(16, 4)
    assert w.min() > 0 and np.all(w[4:12] == 1) and np.allclose(w[:4], w[::-1][:4])


def test_no_seams(model):
    m, params, emb = model
    img = np.asarray(Image.fromarray(data.astronaut()).resize((320, 320), Image.BICUBIC), np.float32)[None] / 255
    tiled = np.asarray(_fn(m, latent_tile=16, latent_overlap=8, tile_batch=4)(params, img, emb))
    whole = np.asarray(_fn(m, latent_tile=64)(params, img, emb))
    diff = np.abs(tiled - whole).mean(axis=(0, 3))
    borders = {8 * s for t in tiling.tile_starts(40, 16, 8) for s in (t, t + 16)} - {0, 320}
    near = np.zeros(320, bool)
    for b in borders:
        near[b - 8:b + 8] = True
    mask = near[:, None] | near[None, :]
    ratio = diff[mask].mean() / diff[~mask].mean()
    print(f"tiled vs untiled (random weights): mean |diff| {diff.mean():.4f}; near tile borders / elsewhere = {ratio:.3f}")
    assert ratio <= 1.5


@pytest.mark.parametrize("size", [(37, 45), (8, 8), (4, 12)])
def test_output_size_is_input_size(model, size):
    m, params, emb = model
    lq = np.random.default_rng(1).uniform(0, 1, (1, *size, 3)).astype(np.float32)
    out = _fn(m, latent_tile=4, latent_overlap=2)(params, lq, emb)
    assert out.shape == lq.shape and np.isfinite(np.asarray(out)).all()


def test_untiled_path_is_sr_fn(model):
    m, params, emb = model
    lq = np.random.default_rng(2).uniform(0, 1, (2, 48, 40, 3)).astype(np.float32)
    sr_fn = jax.jit(sr.make_sr_fn(m.modules["unet"], m.modules["vae"], m.alphas_cumprod, color_fix="none"))
    np.testing.assert_array_equal(np.asarray(_fn(m)(params, lq, emb)), np.asarray(sr_fn(params, lq, emb)))


def test_blockwise_attention_matches(monkeypatch):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, n, 3, 8)).astype(np.float32) for n in (97, 50, 50))
    whole = np.asarray(attention.dot_product_attention(q, k, v))
    monkeypatch.setattr(attention, "MAX_LOGITS", 1000)
    blocks = np.asarray(attention.dot_product_attention(q, k, v))
    assert np.abs(blocks - whole).max() <= 1e-6
