"""Statistics of the per-sample random choices over 20,000 draws against the configuration."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osediff_jax.data import degradation as deg

N = 20_000
CFG = deg.DegradationConfig()


@pytest.fixture(scope="module")
def draws():
    p = jax.jit(jax.vmap(deg.sample_params))(jax.random.split(jax.random.key(0), N))
    return jax.tree.map(np.asarray, p)


def _freq(values, probs):
    """Frequencies of 0..len(probs)-1 within 5 binomial standard deviations of probs."""
    probs = np.asarray(probs, np.float64)
    freq = np.bincount(values, minlength=len(probs))[: len(probs)] / len(values)
    tol = 5 * np.sqrt(probs * (1 - probs) / len(values)) + 1e-9
    assert (np.abs(freq - probs) <= tol).all(), f"frequencies {freq} vs {probs}"


def _uniform(x, lo, hi):
    """In [lo, hi], spread to both ends, mean within 5 standard errors of the midpoint."""
    assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6, (x.min(), x.max(), lo, hi)
    span = hi - lo
    assert x.min() < lo + 0.01 * span and x.max() > hi - 0.01 * span
    assert abs(x.mean() - (lo + hi) / 2) < 5 * span / math.sqrt(12 * len(x))


@pytest.mark.parametrize("which", ["kernel1", "kernel2"])
def test_blur_kernels(draws, which):
    k = getattr(draws, which)
    sigma = CFG.blur_sigma if which == "kernel1" else CFG.blur_sigma2
    probs = CFG.kernel_prob if which == "kernel1" else CFG.kernel_prob2
    sinc_p = CFG.sinc_prob if which == "kernel1" else CFG.sinc_prob2
    _freq(np.searchsorted(deg.KERNEL_SIZES, k.size), [1 / 8] * 8)
    _freq(k.kind, [p * (1 - sinc_p) for p in probs] + [sinc_p])
    gauss = k.kind < deg.SINC
    _uniform(k.sigma_x[gauss], *sigma)
    aniso = gauss & (k.kind % 2 == 1)
    _uniform(k.sigma_y[aniso], *sigma)
    _uniform(k.theta[aniso], -math.pi, math.pi)
    iso = gauss & (k.kind % 2 == 0)
    assert (k.sigma_y[iso] == k.sigma_x[iso]).all() and (k.theta[iso] == 0).all()
    assert (k.beta[k.kind < 2] == 1).all()
    general = (k.kind == 2) | (k.kind == 3)
    _freq((k.beta[general] >= 1).astype(int), [0.5, 0.5])
    _uniform(k.beta[general & (k.beta < 1)], CFG.betag_range[0], 1)
    _uniform(k.beta[general & (k.beta >= 1)], 1, CFG.betag_range[1])
    plateau = (k.kind == 4) | (k.kind == 5)
    _freq((k.beta[plateau] > 1).astype(int), [0.5, 0.5])  # low branch: U(1, 1) = 1
    _uniform(k.beta[plateau & (k.beta > 1)], 1, CFG.betap_range[1])
    sinc = k.kind == deg.SINC
    _uniform(k.omega[sinc & (k.size < 13)], math.pi / 3, math.pi)
    _uniform(k.omega[sinc & (k.size >= 13)], math.pi / 5, math.pi)


def test_final_sinc(draws):
    s = draws.sinc
    _freq((s.kind == deg.PULSE).astype(int), [CFG.final_sinc_prob, 1 - CFG.final_sinc_prob])
    _uniform(s.omega[s.kind == deg.SINC], math.pi / 3, math.pi)
    _freq(np.searchsorted(deg.KERNEL_SIZES, s.size[s.kind == deg.SINC]), [1 / 8] * 8)


@pytest.mark.parametrize("which", ["stage1", "stage2"])
def test_resize_noise_jpeg(draws, which):
    s = getattr(draws, which)
    two = which == "stage2"
    c = {f: getattr(CFG, f + ("2" if two else "")) for f in (
        "resize_prob", "resize_range", "gaussian_noise_prob", "noise_range", "poisson_scale_range",
        "gray_noise_prob", "jpeg_range")}
    _freq(s.resize, c["resize_prob"])
    _uniform(s.scale[s.resize == deg.UP], 1, c["resize_range"][1])
    _uniform(s.scale[s.resize == deg.DOWN], c["resize_range"][0], 1)
    assert (s.scale[s.resize == deg.KEEP] == 1).all()
    _freq(s.mode, [1 / 3] * 3)
    _freq(s.gaussian.astype(int), [1 - c["gaussian_noise_prob"], c["gaussian_noise_prob"]])
    _uniform(s.sigma[s.gaussian], *c["noise_range"])
    _uniform(s.poisson_scale[~s.gaussian], *c["poisson_scale_range"])
    _freq(s.gray.astype(int), [1 - c["gray_noise_prob"], c["gray_noise_prob"]])
    _uniform(s.quality, *c["jpeg_range"])


def test_order_blur_and_modes(draws):
    _freq(draws.second_blur.astype(int), [1 - CFG.second_blur_prob, CFG.second_blur_prob])
    _freq(draws.resize_first.astype(int), [0.5, 0.5])
    _freq(draws.lq_mode, [1 / 3] * 3)
    _freq(draws.back_mode, [1 / 3] * 3)


def test_draws_are_independent_per_sample(draws):
    """Per-sample choices, not one per batch: neighbouring samples agree only by chance."""
    same = (draws.stage1.mode[1:] == draws.stage1.mode[:-1]).mean()
    assert abs(same - 1 / 3) < 0.03
    assert np.corrcoef(draws.stage1.quality, draws.stage2.quality)[0, 1] < 0.05


def test_config_mirrors_the_parameter_file():
    yml = {
        "scale": 4, "color_jitter_prob": 0.0, "gray_prob": 0.0,
        "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
        "noise_range": [1, 30], "poisson_scale_range": [0.05, 3.0], "gray_noise_prob": 0.4, "jpeg_range": [30, 95],
        "second_blur_prob": 0.8, "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2],
        "gaussian_noise_prob2": 0.5, "noise_range2": [1, 25], "poisson_scale_range2": [0.05, 2.5],
        "gray_noise_prob2": 0.4, "jpeg_range2": [30, 95],
        "kernel_info": {
            "blur_kernel_size": 21, "kernel_list": list(deg.KERNEL_TYPES),
            "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], "sinc_prob": 0.1, "blur_sigma": [0.2, 3],
            "betag_range": [0.5, 4], "betap_range": [1, 2], "blur_kernel_size2": 21,
            "kernel_list2": list(deg.KERNEL_TYPES), "kernel_prob2": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
            "sinc_prob2": 0.1, "blur_sigma2": [0.2, 1.5], "betag_range2": [0.5, 4], "betap_range2": [1, 2],
            "final_sinc_prob": 0.8,
        },
    }
    assert deg.DegradationConfig.from_dict(yml) == CFG
    with pytest.raises(ValueError, match="unknown degradation parameters"):
        deg.DegradationConfig.from_dict({"noise_rnage": [1, 2]})
    with pytest.raises(ValueError, match="gray_prob"):
        deg.DegradationConfig.from_dict({"gray_prob": 0.1})


def test_poisson_draws_follow_the_poisson_law():
    """Counts at every one of the 256 rates of an image: mean, variance, and the pmf itself."""
    from scipy import stats

    levels = np.tile(np.arange(256, dtype=np.float32), 256 * 6)  # 1536 pixels per level
    img = np.repeat((levels / 255.0).reshape(-1, 256, 1), 3, axis=-1)  # gray image, all levels: vals 256
    dev, dev_gray = jax.jit(deg.poisson_deviations)(jax.random.key(0), jnp.asarray(img))
    (rate, vals), _ = deg.poisson_levels(jnp.asarray(img))
    assert float(vals) == 256
    counts = np.asarray(dev + rate)
    np.testing.assert_array_equal(counts, np.round(counts))  # integer counts
    lam = np.asarray(rate)[0, :, 0]
    by_level = counts.transpose(1, 0, 2).reshape(256, -1)  # 4608 draws per level (3 channels)
    n = by_level.shape[1]
    se_mean = np.sqrt(np.maximum(lam, 1e-3) / n)
    assert (np.abs(by_level.mean(1) - lam) < 5 * se_mean + 1e-6).all()
    var_ok = np.abs(by_level.var(1) - lam) < 6 * np.sqrt(2 * np.maximum(lam, 1e-3) ** 2 / n + np.maximum(lam, 1e-3) / n)
    assert var_ok.all()
    assert (by_level[0] == 0).all()
    for level in (3, 40, 255):  # about 3, 40 and 256 expected counts
        k = np.arange(int(lam[level] * 2 + 30))
        freq = np.bincount(by_level[level].astype(int), minlength=len(k))[: len(k)] / n
        tv = 0.5 * np.abs(freq - stats.poisson.pmf(k, lam[level])).sum()
        assert tv < 0.05, (level, tv)
    assert np.asarray(dev_gray).shape == img.shape[:2]

