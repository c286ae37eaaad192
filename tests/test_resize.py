"""osediff_jax.resize against torch.nn.functional.interpolate (align_corners=False, no antialias)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from osediff_jax.data import resize
from osediff_jax.data.resize import (
    MODES,
    apply_resize,
    interpolate,
    resize_matrix,
    scaled_size,
)
from tests.references.degradation import photos

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def images():
    # Two photographs cropped to an odd, non-square size: no symmetry hides an axis mix-up.
    return photos(2, 96)[:, :83, :71].astype(np.float32) / 255.0


def _torch(x, **kw):
    out = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), **kw)
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("mode", MODES)
def test_scale_factor_matches_torch(images, mode):
    for s in (0.15, 0.3337, 0.5, 0.9, 1.0, 1.001, 1.2, 1.4999, 2.0):
        ref = _torch(images, scale_factor=s, mode=mode)
        out = np.asarray(interpolate(jnp.asarray(images), scale_factor=s, mode=mode))
        assert out.shape == ref.shape, (s, out.shape, ref.shape)
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=f"{mode} scale {s}")


@pytest.mark.parametrize("mode", MODES)
def test_size_matches_torch(images, mode):
    for size in ((20, 18), (83, 71), (41, 100), (128, 128), (7, 3)):
        ref = _torch(images, size=size, mode=mode)
        out = np.asarray(interpolate(jnp.asarray(images), size=size, mode=mode))
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=f"{mode} size {size}")


def test_traced_sizes_on_canvas_match_static(images):
    """Sizes traced under jit, on a larger zero canvas, give the static result in the valid region."""
    x = images[0]
    canvas = np.zeros((128, 128, 3), np.float32)
    canvas[:83, :71] = x

    @jax.jit
    def resize(img, out_h, out_w, mode_idx):
        def one(mode):
            rows = resize_matrix(83, out_h, mode, in_canvas=128, out_canvas=160)
            cols = resize_matrix(71, out_w, mode, in_canvas=128, out_canvas=160)
            return apply_resize(img, rows, cols)

        return jnp.stack([one(m) for m in MODES])[mode_idx]

    for m, mode in enumerate(MODES):
        for out_h, out_w in ((30, 150), (83, 71), (160, 9)):
            out = np.asarray(resize(jnp.asarray(canvas), out_h, out_w, m))
            ref = _torch(x[None], size=(out_h, out_w), mode=mode)[0]
            np.testing.assert_allclose(out[:out_h, :out_w], ref, atol=1e-5, rtol=0)
            assert not out[out_h:].any() and not out[:, out_w:].any()
    assert resize._cache_size() == 1


def test_scaled_size_is_exact_floor():
    rng = np.random.default_rng(0)
    s = rng.uniform(0.1, 2.0, 200_000).astype(np.float32)
    n = rng.integers(1, 4096, 200_000)
    ref = np.floor(n * s.astype(np.float64)).astype(np.int64)  # PyTorch: float64, exact here
    out = np.asarray(jax.jit(jax.vmap(scaled_size))(jnp.asarray(n), jnp.asarray(s)))
    naive = np.floor(n.astype(np.float32) * s).astype(np.int64)
    assert (naive != ref).any(), "the test should contain products a float32 multiply gets wrong"
    np.testing.assert_array_equal(out, ref)


def test_bad_arguments_raise():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="exactly one"):
        interpolate(x, size=(4, 4), scale_factor=0.5)
    with pytest.raises(ValueError, match="resize mode"):
        interpolate(x, size=(4, 4), mode="nearest")


@pytest.mark.parametrize("hw,out", [((17, 23), (68, 92)), ((32, 32), (128, 128)), ((50, 40), (23, 61)),
                                    ((1, 1), (4, 4)), ((3, 5), (12, 20))])
def test_pil_bicubic_matches_pil_float_mode(hw, out):
    x = np.random.default_rng(0).uniform(0, 1, (*hw, 2)).astype(np.float32)
    want = np.stack([np.asarray(Image.fromarray(x[..., c], "F").resize(out[::-1], Image.BICUBIC)) for c in range(2)], -1)
    got = np.asarray(jax.jit(resize.pil_bicubic, static_argnums=1)(x, out))
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5  # the bound is 1/255

