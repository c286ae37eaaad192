"""Each degradation operation against basicsr 1.4.2 with identical inputs and parameters (1e-5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from osediff_jax.data import degradation as deg
from tests.references.degradation import degradations as ref
from tests.references.degradation import filter2D, photos

pytestmark = pytest.mark.reference

TOL = 1e-5


def _pad21(k):
    p = (21 - k.shape[0]) // 2
    return np.pad(k, p)


def _kernel_cases(n=160, seed=0):
    """Random parameters for every kernel kind, with the reference kernel of each."""
    rng = np.random.default_rng(seed)
    params, refs = [], []
    for i in range(n):
        kind = i % 7
        size = int(rng.choice(deg.KERNEL_SIZES))
        sx, sy = rng.uniform(0.2, 3.0, 2)
        theta = rng.uniform(-math.pi, math.pi)
        beta = rng.uniform(0.5, 4.0) if kind in (2, 3) else rng.uniform(1.0, 2.0)
        omega = rng.uniform(math.pi / 5, math.pi)
        iso = kind % 2 == 0
        if iso:
            sy, theta = sx, 0.0
        if kind in (0, 1):
            k = ref.bivariate_Gaussian(size, sx, sy, theta, isotropic=iso)
            beta = 1.0
        elif kind in (2, 3):
            k = ref.bivariate_generalized_Gaussian(size, sx, sy, theta, beta, isotropic=iso)
        elif kind in (4, 5):
            k = ref.bivariate_plateau(size, sx, sy, theta, beta, isotropic=iso)
        else:
            k = ref.circular_lowpass_kernel(omega, size, pad_to=False)
        params.append((kind, size, sx, sy, theta, beta, omega))
        refs.append(_pad21(k))
    cols = list(zip(*params))
    p = deg.KernelParams(
        kind=jnp.array(cols[0]), size=jnp.array(cols[1]), **{
            name: jnp.array(c, jnp.float32) for name, c in zip(("sigma_x", "sigma_y", "theta", "beta", "omega"), cols[2:])
        }
    )
    return p, np.stack(refs)


def test_kernels_match_reference():
    p, refs = _kernel_cases()
    out = np.asarray(jax.jit(jax.vmap(deg.make_kernel))(p))
    err = np.abs(out - refs).max(axis=(1, 2))
    assert err.max() < TOL, f"worst kernel error {err.max():.2e} (kind {int(p.kind[err.argmax()])})"
    # The support is exactly the drawn size: zero padding around it.
    for k, size in zip(out, np.asarray(p.size)):
        pad = (21 - size) // 2
        assert not k[:pad].any() and not k[:, :pad].any()


def test_final_sinc_kernel_matches_reference():
    for size, omega in ((7, math.pi / 3), (13, 2.0), (21, math.pi)):
        ref_k = ref.circular_lowpass_kernel(omega, size, pad_to=21)
        ours = deg.sinc_kernel(size, jnp.float32(omega))
        np.testing.assert_allclose(np.asarray(ours), ref_k, atol=TOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(deg.pulse_kernel()), _pad21(np.ones((1, 1))))


@pytest.fixture(scope="module")
def images():
    return photos(4, 160)[:, :131, :118].astype(np.float32) / 255.0


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()


def _nhwc(t):
    return t.permute(0, 2, 3, 1).numpy()


def test_filter2d_matches_reference(images):
    p, _ = _kernel_cases(n=4, seed=1)
    kernels = np.asarray(jax.vmap(deg.make_kernel)(p))
    ref_out = _nhwc(filter2D(_nchw(images), torch.from_numpy(kernels)))
    out = np.asarray(deg.filter2d(jnp.asarray(images), jnp.asarray(kernels)))
    np.testing.assert_allclose(out, ref_out, atol=TOL, rtol=0)
    # one kernel for the whole batch, and a 7x7 one
    small = ref.bivariate_Gaussian(7, 1.3, 0.6, 0.4, isotropic=False).astype(np.float32)
    ref_out = _nhwc(filter2D(_nchw(images), torch.from_numpy(small)[None]))
    out = np.asarray(deg.filter2d(jnp.asarray(images), jnp.asarray(small)))
    np.testing.assert_allclose(out, ref_out, atol=TOL, rtol=0)


def test_filter2d_on_canvas_with_traced_size(images):
    """Valid region of a larger canvas, size traced: reflect padding happens at the valid edge."""
    kernel = np.asarray(deg.gaussian_kernel(21, 2.5, 0.8, 0.7))
    canvas = np.zeros((4, 160, 160, 3), np.float32)
    canvas[:, :131, :118] = images
    f = jax.jit(jax.vmap(deg.filter2d_canvas, in_axes=(0, None, None, None)))
    out = np.asarray(f(jnp.asarray(canvas), jnp.asarray(kernel), 131, 118))
    ref_out = _nhwc(filter2D(_nchw(images), torch.from_numpy(kernel)[None]))
    np.testing.assert_allclose(out[:, :131, :118], ref_out, atol=TOL, rtol=0)
    assert not out[:, 131:].any() and not out[:, :, 118:].any()
    f(jnp.asarray(canvas), jnp.asarray(kernel), 100, 77)
    assert f._cache_size() == 1


class _Recorder:
    """Wraps a torch sampling function and keeps what it returned, in call order."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        self.calls.append(out.clone())
        return out


def test_gaussian_noise_matches_reference(images, monkeypatch):
    sigma = torch.tensor([1.0, 7.5, 18.25, 30.0])
    gray = torch.tensor([0.0, 1.0, 0.0, 1.0])
    rec = _Recorder(torch.randn)
    monkeypatch.setattr(torch, "randn", rec)
    torch.manual_seed(0)
    ref_out = _nhwc(ref.add_gaussian_noise_pt(_nchw(images), sigma=sigma, gray_noise=gray, clip=True, rounds=False))
    z_gray, z_color = rec.calls  # basicsr draws the gray field first (one for the batch), then colour
    z_color = _nhwc(z_color)
    z_gray = np.broadcast_to(z_gray.numpy(), images.shape[:3])
    out = jax.vmap(deg.gaussian_noise)(
        jnp.asarray(images), jnp.asarray(sigma.numpy()), jnp.asarray(gray.numpy() > 0), z_color, z_gray
    )
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=TOL, rtol=0)


def test_poisson_noise_matches_reference(images, monkeypatch):
    # Off the 8-bit grid and, for two images, few distinct levels (vals < 256).
    x = (images * np.array([0.93, 0.17, 1.0, 0.05], np.float32)[:, None, None, None] + 0.0123).astype(np.float32)
    scale = torch.tensor([0.05, 1.1, 2.0, 3.0])
    gray = torch.tensor([1.0, 0.0, 1.0, 0.0])
    rec = _Recorder(torch.poisson)
    monkeypatch.setattr(torch, "poisson", rec)
    torch.manual_seed(0)
    ref_out = _nhwc(ref.add_poisson_noise_pt(_nchw(x), scale=scale, gray_noise=gray, clip=True, rounds=False))
    counts_gray, counts = rec.calls  # gray first, then colour
    (rate, _), (rate_gray, _) = jax.vmap(deg.poisson_levels)(jnp.asarray(x))
    # The rates are the reference's Poisson means exactly (rounded image times 2**ceil(log2(levels))).
    gray_img = ref.rgb_to_grayscale(_nchw(x), num_output_channels=1)
    gr = torch.clamp((gray_img * 255.0).round(), 0, 255) / 255.0
    vals = [2 ** np.ceil(np.log2(len(torch.unique(g)))) for g in gr]
    np.testing.assert_array_equal(np.asarray(rate_gray), (gr * gr.new_tensor(vals).view(4, 1, 1, 1))[:, 0].numpy())
    assert sorted(set(vals)) != [256.0], "the case should exercise vals < 256"
    xr = torch.clamp((_nchw(x) * 255.0).round(), 0, 255) / 255.0
    vals = [2 ** np.ceil(np.log2(len(torch.unique(v)))) for v in xr]
    np.testing.assert_array_equal(np.asarray(rate), _nhwc(xr * xr.new_tensor(vals).view(4, 1, 1, 1)))
    out = jax.vmap(deg.poisson_noise)(
        jnp.asarray(x),
        jnp.asarray(scale.numpy()),
        jnp.asarray(gray.numpy() > 0),
        jnp.asarray(_nhwc(counts)) - rate,
        jnp.asarray(counts_gray[:, 0].numpy()) - rate_gray,
    )
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=TOL, rtol=0)


def test_poisson_levels_count_only_the_valid_region(images):
    """On a canvas, the distinct-level count (hence the rate) ignores values outside the valid size."""
    x = images[0] * 0.1  # about 26 levels -> vals 32
    canvas = np.zeros((160, 160, 3), np.float32)
    canvas[:131, :118] = x
    canvas[131:, :] = np.linspace(0, 1, 160 * 3, dtype=np.float32).reshape(1, 160, 3)  # many levels outside
    valid = np.zeros((160, 160, 1), bool)
    valid[:131, :118] = True
    (rate, _), _ = deg.poisson_levels(jnp.asarray(canvas), jnp.asarray(valid))
    (ref_rate, _), _ = deg.poisson_levels(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(rate)[:131, :118], np.asarray(ref_rate))
