"""Real-ESRGAN second-order degradation with OSEDiff's parameters, on device.

The authors run basicsr's degradations per sample on the CPU inside the data loader; here every
random choice is still per sample, drawn from a PRNG key, and the whole pipeline is one jitted,
vmapped function of (key, GT batch). Random intermediate sizes live on fixed canvases (multiples of
16, so DiffJPEG's zero padding is the canvas) with traced valid sizes: one compilation per GT size.
Invariant between steps: canvas values outside the valid region are zero.

The building blocks are public and follow basicsr 1.4.2 with explicit parameters: blur kernels
(padded to 21x21), `filter2d` (reflect padding), Gaussian and Poisson noise from explicit draws.
Resizing is `osediff_jax.data.resize`, JPEG is `osediff_jax.data.diffjpeg`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.data.diffjpeg import diffjpeg_single, divide_exactly
from osediff_jax.data.resize import MODES, apply_resize, resize_matrix, scaled_size

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
SINC, PULSE = 6, 7  # kernel kinds beyond KERNEL_TYPES' indices
KERNEL_CANVAS = 21
KERNEL_SIZES = tuple(range(7, 22, 2))
UP, DOWN, KEEP = 0, 1, 2
# uint8 -> float32 as float64 division then rounding (x / 255. in NumPy), bit for bit.
_U8_TO_FLOAT = (np.arange(256) / 255.0).astype(np.float32)


# ------------------------------------------------------------------ configuration


@dataclasses.dataclass(frozen=True)
class DegradationConfig:
    """OSEDiff's `params_realesrgan.yml` (names as there); defaults are the paper's values."""

    scale: int = 4
    resize_back: bool = True  # OSEDiff resizes the LQ back to the GT size (random mode)
    # first degradation
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second degradation
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # kernels (kernel_info)
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8

    def __post_init__(self):
        for name in ("kernel_prob", "kernel_prob2"):
            if len(getattr(self, name)) != len(KERNEL_TYPES):
                raise ValueError(f"{name} needs one probability per kernel type {KERNEL_TYPES}")
        for name in ("resize_prob", "resize_prob2"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs 3 probabilities (up, down, keep), got {getattr(self, name)}")
        for name in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= 1 <= hi:
                raise ValueError(f"{name} must satisfy 0 < low <= 1 <= high, got {(lo, hi)}")

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> DegradationConfig:
        """From a mapping shaped like `params_realesrgan.yml` (with or without `kernel_info`)."""
        flat = dict(params)
        flat.update(flat.pop("kernel_info", {}) or {})
        for key in ("kernel_list", "kernel_list2"):
            if key in flat and tuple(flat.pop(key)) != KERNEL_TYPES:
                raise ValueError(f"{key} must list the kernel types in the order {KERNEL_TYPES}")
        for key in ("blur_kernel_size", "blur_kernel_size2"):
            if key in flat and flat.pop(key) != KERNEL_CANVAS:
                raise ValueError(f"{key} must be {KERNEL_CANVAS}")
        for key in ("color_jitter_prob", "gray_prob"):
            if key in flat and flat.pop(key) != 0:
                raise ValueError(f"{key} must be 0: colour jitter and grayscale LQ are not implemented")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(flat) - names)
        if unknown:
            raise ValueError(f"unknown degradation parameters {unknown}; expected some of {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()})


# ------------------------------------------------------------------ kernels


def _grid() -> tuple[jax.Array, jax.Array]:
    ax = jnp.arange(KERNEL_CANVAS, dtype=jnp.float32) - KERNEL_CANVAS // 2
    return jnp.meshgrid(ax, ax)  # xx varies along columns, yy along rows (basicsr's mesh_grid)


def _support(size) -> jax.Array:
    xx, yy = _grid()
    half = (jnp.asarray(size, jnp.float32) - 1) / 2
    return (jnp.abs(xx) <= half) & (jnp.abs(yy) <= half)


def _normalized(values: jax.Array, size) -> jax.Array:
    values = jnp.where(_support(size), values, 0.0)
    return values / jnp.sum(values)


def _quadratic_form(sigma_x, sigma_y, theta) -> jax.Array:
    """q = p^T Sigma^-1 p with Sigma = R diag(sx^2, sy^2) R^T, p = (x, y) on the 21x21 grid."""
    xx, yy = _grid()
    c, s = jnp.cos(theta), jnp.sin(theta)
    ix, iy = 1.0 / jnp.square(sigma_x), 1.0 / jnp.square(sigma_y)
    a = c * c * ix + s * s * iy
    b = c * s * (ix - iy)
    d = s * s * ix + c * c * iy
    return a * xx * xx + 2 * b * xx * yy + d * yy * yy


def gaussian_kernel(size, sigma_x, sigma_y, theta) -> jax.Array:
    """Bivariate Gaussian exp(-q/2), normalized, size x size centred in 21x21 (iso: sy = sx, theta = 0)."""
    return _normalized(jnp.exp(-0.5 * _quadratic_form(sigma_x, sigma_y, theta)), size)


def generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta) -> jax.Array:
    """Generalized Gaussian exp(-q**beta / 2), normalized, centred in 21x21."""
    return _normalized(jnp.exp(-0.5 * jnp.power(_quadratic_form(sigma_x, sigma_y, theta), beta)), size)


def plateau_kernel(size, sigma_x, sigma_y, theta, beta) -> jax.Array:
    """Plateau 1 / (q**beta + 1), normalized, centred in 21x21."""
    return _normalized(1.0 / (jnp.power(_quadratic_form(sigma_x, sigma_y, theta), beta) + 1.0), size)


def bessel_j1(x: jax.Array) -> jax.Array:
    """J1(x) = (1/2pi) * integral over one period of cos(t - x sin t): the trapezoid rule on a
    periodic integrand converges spectrally; 96 nodes reach float32 precision for |x| < 60."""
    t = jnp.arange(96, dtype=jnp.float32) * (2 * np.pi / 96)
    x = jnp.asarray(x, jnp.float32)[..., None]
    return jnp.mean(jnp.cos(t - x * jnp.sin(t)), axis=-1)


def sinc_kernel(size, omega) -> jax.Array:
    """Circular low-pass omega * J1(omega r) / (2 pi r), centre omega^2 / (4 pi), normalized, in 21x21."""
    xx, yy = _grid()
    r = jnp.sqrt(xx * xx + yy * yy)
    safe_r = jnp.where(r == 0, 1.0, r)
    values = omega * bessel_j1(omega * safe_r) / (2 * np.pi * safe_r)
    values = jnp.where(r == 0, omega * omega / (4 * np.pi), values)
    return _normalized(values, size)


def pulse_kernel() -> jax.Array:
    """The identity kernel (no blur)."""
    return jnp.zeros((KERNEL_CANVAS, KERNEL_CANVAS), jnp.float32).at[KERNEL_CANVAS // 2, KERNEL_CANVAS // 2].set(1.0)


class KernelParams(NamedTuple):
    """One blur kernel: kind indexes KERNEL_TYPES, or SINC / PULSE."""

    kind: jax.Array
    size: jax.Array
    sigma_x: jax.Array
    sigma_y: jax.Array
    theta: jax.Array
    beta: jax.Array
    omega: jax.Array


def make_kernel(p: KernelParams) -> jax.Array:
    """The 21x21 kernel of any kind (traced kind: every formula is evaluated, 21x21 is cheap)."""
    gauss = gaussian_kernel(p.size, p.sigma_x, p.sigma_y, p.theta)
    general = generalized_gaussian_kernel(p.size, p.sigma_x, p.sigma_y, p.theta, p.beta)
    plateau = plateau_kernel(p.size, p.sigma_x, p.sigma_y, p.theta, p.beta)
    options = jnp.stack([gauss, gauss, general, general, plateau, plateau, sinc_kernel(p.size, p.omega), pulse_kernel()])
    return options[p.kind]


# ------------------------------------------------------------------ filtering


def _reflect(idx: jax.Array, n: jax.Array) -> jax.Array:
    """PyTorch 'reflect' padding index (edge not repeated), folded again for pads >= n."""
    period = jnp.maximum(2 * (n - 1), 1)
    m = jnp.mod(idx, period)
    return jnp.minimum(m, period - m)


def _valid_mask(shape: tuple[int, int], h, w) -> jax.Array:
    rows = jnp.arange(shape[0])[:, None] < h
    cols = jnp.arange(shape[1])[None, :] < w
    return (rows & cols)[..., None]


def filter2d_canvas(img: jax.Array, kernel: jax.Array, h, w) -> jax.Array:
    """Cross-correlate the valid [h, w] region of a canvas [Hc, Wc, C] with an odd kernel [k, k],
    reflect-padded at the valid edges; zero outside the valid region."""
    k = kernel.shape[-1]
    pad = k // 2
    hc, wc, c = img.shape
    rows = _reflect(jnp.arange(hc + 2 * pad) - pad, h)
    cols = _reflect(jnp.arange(wc + 2 * pad) - pad, w)
    padded = img[rows][:, cols]

    # Shift-and-multiply-add, one kernel row per loop step: XLA's CPU grouped (depthwise)
    # convolution is about 8x slower, and this fuses well on GPUs too.
    def row(dy, acc):
        band = jax.lax.dynamic_slice_in_dim(padded, dy, hc, axis=0)
        for dx in range(k):
            acc = acc + kernel[dy, dx] * band[:, dx : dx + wc]
        return acc

    out = jax.lax.fori_loop(0, k, row, jnp.zeros((hc, wc, c), jnp.float32))
    return jnp.where(_valid_mask((hc, wc), h, w), out, 0.0)


def filter2d(img: jax.Array, kernel: jax.Array) -> jax.Array:
    """basicsr's `filter2D` for NHWC images [B, H, W, C]: per-sample kernels [B, k, k] (or one [k, k]),
    odd k, reflect padding k // 2."""
    if img.ndim != 4:
        raise ValueError(f"filter2d expects images [B, H, W, C], got shape {img.shape}")
    if kernel.shape[-1] % 2 == 0 or kernel.shape[-1] != kernel.shape[-2]:
        raise ValueError(f"filter2d needs square odd kernels, got shape {kernel.shape}")
    kernel = jnp.broadcast_to(kernel, (img.shape[0],) + kernel.shape[-2:])
    h, w = img.shape[1:3]
    return jax.vmap(lambda im, k: filter2d_canvas(im, k, h, w))(img, kernel)


# ------------------------------------------------------------------ noise


def rgb_to_gray(img: jax.Array) -> jax.Array:
    """torchvision's rgb_to_grayscale: 0.2989 R + 0.587 G + 0.114 B, [..., 3] -> [...]."""
    return 0.2989 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def gaussian_noise(img, sigma, gray, normal, normal_gray) -> jax.Array:
    """clip(img + noise): noise = normal * sigma / 255 (colour) or normal_gray broadcast to all
    channels (gray); sigma in 0..255 units, normal [..., C] and normal_gray [...] standard normals."""
    color = divide_exactly(normal * sigma, 255.0)
    mono = divide_exactly(normal_gray * sigma, 255.0)[..., None]
    g = jnp.asarray(gray, jnp.float32)
    return jnp.clip(img + (color * (1 - g) + mono * g), 0.0, 1.0)


def _levels(img: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """8-bit levels (int), the image rounded to them, and 2**ceil(log2(#distinct levels in the
    valid region))."""
    level = jnp.clip(jnp.round(img * 255.0), 0.0, 255.0).astype(jnp.int32)
    hist = jnp.zeros(256, jnp.int32).at[level.ravel()].add(jnp.broadcast_to(valid, level.shape).astype(jnp.int32).ravel())
    distinct = jnp.sum(hist > 0)
    vals = jnp.left_shift(1, jnp.sum(distinct > 2 ** jnp.arange(9))).astype(jnp.float32)  # exp2 is inexact
    return level, divide_exactly(level.astype(jnp.float32), 255.0), vals


def poisson_levels(img: jax.Array, valid: jax.Array | None = None):
    """For one image [H, W, 3]: (rate, vals) of the colour draw and (rate_gray, vals_gray) of the
    gray draw, rate = xr * vals with xr the 8-bit rounded image (gray: its luma) and
    vals = 2**ceil(log2(#distinct values in the valid region, mask [H, W, 1]))."""
    valid = jnp.ones(img.shape[:2] + (1,), bool) if valid is None else valid
    _, xr, vals = _levels(img, valid)
    _, gr, gvals = _levels(rgb_to_gray(img), valid[..., 0])
    return (xr * vals, vals), (gr * gvals, gvals)


_POISSON_MAX = 512  # P(count >= 512) < 1e-50 at the largest rate, 256


def _poisson_table_draw(key: jax.Array, level: jax.Array, vals: jax.Array) -> jax.Array:
    """Poisson(level / 255 * vals) counts by inverse transform sampling.

    An image's rates take at most 256 values (one per 8-bit level), so one [256, 512] table of
    CDFs (log-space pmf, float32: about 1e-4 relative accuracy per probability, like a float32
    rejection sampler's lgamma) and a 9-step binary search per pixel replace jax.random.poisson,
    whose rejection loop over a whole canvas is about 15x slower on a CPU."""
    lam = divide_exactly(jnp.arange(256, dtype=jnp.float32), 255.0) * vals
    n = jnp.arange(_POISSON_MAX, dtype=jnp.float32)
    safe = jnp.where(lam > 0, lam, 1.0)[:, None]
    pmf = jnp.exp(n * jnp.log(safe) - safe - jax.lax.lgamma(n + 1.0))
    pmf = jnp.where(lam[:, None] > 0, pmf, (n == 0).astype(jnp.float32))
    cdf = jnp.cumsum(pmf, axis=1)
    cdf = (cdf / cdf[:, -1:]).ravel()  # last entry exactly 1 > u: the search always ends inside
    u = jax.random.uniform(key, level.shape)
    base = level * _POISSON_MAX
    count = jnp.zeros(level.shape, jnp.int32)  # number of table entries <= u
    step = _POISSON_MAX // 2
    while step:
        count = jnp.where(cdf[base + count + step - 1] <= u, count + step, count)
        step //= 2
    return count.astype(jnp.float32)


def poisson_deviations(key: jax.Array, img: jax.Array, valid: jax.Array | None = None):
    """Centred Poisson draws (counts - rate) for one image [H, W, 3]: colour [H, W, 3] and gray
    [H, W], at the rates of `poisson_levels`."""
    valid = jnp.ones(img.shape[:2] + (1,), bool) if valid is None else valid
    out = []
    for k, plane, mask in zip(jax.random.split(key), (img, rgb_to_gray(img)), (valid, valid[..., 0])):
        level, xr, vals = _levels(plane, mask)
        out.append(_poisson_table_draw(k, level, vals) - xr * vals)
    return out[0], out[1]


def poisson_noise(img, scale, gray, deviation, deviation_gray, valid: jax.Array | None = None) -> jax.Array:
    """clip(img + scale * noise) for one image [H, W, 3] from the centred Poisson draws
    deviation = counts - rate ([H, W, 3]; counts ~ Poisson(rate), see poisson_levels) and
    deviation_gray ([H, W], broadcast to the channels when gray).

    basicsr's noise counts / vals - xr equals deviation / vals; written this way, injected draws
    do not depend on how x rounds to 8 bits (float noise would flip a few roundings)."""
    (_, vals), (_, gvals) = poisson_levels(img, valid)
    color = deviation / vals
    mono = (deviation_gray / gvals)[..., None]
    g = jnp.asarray(gray, jnp.float32)
    return jnp.clip(img + (color * (1 - g) + mono * g) * scale, 0.0, 1.0)


# ------------------------------------------------------------------ sampling


class StageParams(NamedTuple):
    """Resize and noise draws of one degradation stage."""

    resize: jax.Array  # UP, DOWN or KEEP
    scale: jax.Array  # 1 for KEEP
    mode: jax.Array  # index into resize.MODES
    gaussian: jax.Array  # bool: Gaussian, else Poisson
    sigma: jax.Array  # Gaussian sigma, 0..255 units
    poisson_scale: jax.Array
    gray: jax.Array  # bool
    quality: jax.Array  # JPEG quality


class DegradationParams(NamedTuple):
    """Every random choice of one sample (batched: a leading axis on every leaf)."""

    kernel1: KernelParams
    kernel2: KernelParams
    sinc: KernelParams  # final sinc filter, or PULSE
    stage1: StageParams
    stage2: StageParams
    second_blur: jax.Array  # bool
    resize_first: jax.Array  # bool: [resize to LQ + sinc] then JPEG, else JPEG first
    lq_mode: jax.Array  # mode of the resize to the LQ size
    back_mode: jax.Array  # mode of the resize back to the GT size


def _uniform(key, lo, hi):
    return jax.random.uniform(key, (), jnp.float32, lo, hi)


def _sample_kernel(key, probs, sigma_range, betag, betap, sinc_prob) -> KernelParams:
    k = jax.random.split(key, 9)
    size = jax.random.choice(k[0], jnp.array(KERNEL_SIZES))
    kind = jax.random.choice(k[1], len(KERNEL_TYPES), p=jnp.array(probs))
    sinc = jax.random.uniform(k[2]) < sinc_prob
    aniso = (kind % 2) == 1
    sigma_x = _uniform(k[3], *sigma_range)
    sigma_y = jnp.where(aniso, _uniform(k[4], *sigma_range), sigma_x)
    theta = jnp.where(aniso, _uniform(k[5], -np.pi, np.pi), 0.0)
    low_beta = jax.random.uniform(k[6]) < 0.5
    beta_g = jnp.where(low_beta, _uniform(k[7], betag[0], 1.0), _uniform(k[7], 1.0, betag[1]))
    beta_p = jnp.where(low_beta, _uniform(k[7], betap[0], 1.0), _uniform(k[7], 1.0, betap[1]))
    beta = jnp.where(kind < 2, 1.0, jnp.where(kind < 4, beta_g, beta_p))
    omega = jnp.where(size < 13, _uniform(k[8], np.pi / 3, np.pi), _uniform(k[8], np.pi / 5, np.pi))
    return KernelParams(jnp.where(sinc, SINC, kind), size, sigma_x, sigma_y, theta, beta, omega)


def _sample_stage(key, resize_prob, resize_range, gauss_prob, noise_range, poisson_range, gray_prob, jpeg_range):
    k = jax.random.split(key, 9)
    resize = jax.random.choice(k[0], 3, p=jnp.array(resize_prob))
    scale = jnp.where(
        resize == UP,
        _uniform(k[1], 1.0, resize_range[1]),
        jnp.where(resize == DOWN, _uniform(k[1], resize_range[0], 1.0), 1.0),
    )
    return StageParams(
        resize=resize,
        scale=scale,
        mode=jax.random.randint(k[2], (), 0, 3),
        gaussian=jax.random.uniform(k[3]) < gauss_prob,
        sigma=_uniform(k[4], *noise_range),
        poisson_scale=_uniform(k[5], *poisson_range),
        gray=jax.random.uniform(k[6]) < gray_prob,
        quality=_uniform(k[7], *jpeg_range),
    )


def sample_params(key: jax.Array, cfg: DegradationConfig = DegradationConfig()) -> DegradationParams:
    """Draw every random choice of one sample from `key` (vmap over keys for a batch)."""
    k = jax.random.split(key, 11)
    one = jnp.float32(1.0)
    final = KernelParams(
        kind=jnp.where(jax.random.uniform(k[2]) < cfg.final_sinc_prob, SINC, PULSE),
        size=jax.random.choice(k[3], jnp.array(KERNEL_SIZES)),
        sigma_x=one,
        sigma_y=one,
        theta=jnp.float32(0.0),
        beta=one,
        omega=_uniform(k[4], np.pi / 3, np.pi),
    )
    return DegradationParams(
        kernel1=_sample_kernel(k[0], cfg.kernel_prob, cfg.blur_sigma, cfg.betag_range, cfg.betap_range, cfg.sinc_prob),
        kernel2=_sample_kernel(
            k[1], cfg.kernel_prob2, cfg.blur_sigma2, cfg.betag_range2, cfg.betap_range2, cfg.sinc_prob2
        ),
        sinc=final,
        stage1=_sample_stage(
            k[5],
            cfg.resize_prob,
            cfg.resize_range,
            cfg.gaussian_noise_prob,
            cfg.noise_range,
            cfg.poisson_scale_range,
            cfg.gray_noise_prob,
            cfg.jpeg_range,
        ),
        stage2=_sample_stage(
            k[6],
            cfg.resize_prob2,
            cfg.resize_range2,
            cfg.gaussian_noise_prob2,
            cfg.noise_range2,
            cfg.poisson_scale_range2,
            cfg.gray_noise_prob2,
            cfg.jpeg_range2,
        ),
        second_blur=jax.random.uniform(k[7]) < cfg.second_blur_prob,
        resize_first=jax.random.uniform(k[8]) < 0.5,
        lq_mode=jax.random.randint(k[9], (), 0, 3),
        back_mode=jax.random.randint(k[10], (), 0, 3),
    )


# ------------------------------------------------------------------ pipeline


def _ceil16(n: int) -> int:
    return -(-n // 16) * 16


class Canvases(NamedTuple):
    """Static canvas sizes (rows, cols) of one GT size."""

    stage1: tuple[int, int]
    stage2: tuple[int, int]
    lq: tuple[int, int]


def canvases(gt_hw: tuple[int, int], cfg: DegradationConfig = DegradationConfig()) -> Canvases:
    """Largest intermediate sizes, rounded up to multiples of 16 (DiffJPEG's block padding)."""
    h, w = gt_hw
    if h % 16 or w % 16 or h < 16 or w < 16:
        raise ValueError(f"GT height and width must be positive multiples of 16, got {gt_hw}")
    if h % cfg.scale or w % cfg.scale:
        raise ValueError(f"GT size {gt_hw} is not divisible by the scale {cfg.scale}")
    up1, up2 = cfg.resize_range[1], cfg.resize_range2[1]
    return Canvases(
        stage1=(_ceil16(math.floor(h * up1)), _ceil16(math.floor(w * up1))),
        stage2=(_ceil16(math.floor(h // cfg.scale * up2)), _ceil16(math.floor(w // cfg.scale * up2))),
        lq=(_ceil16(h // cfg.scale), _ceil16(w // cfg.scale)),
    )


class NoiseDraws(NamedTuple):
    """Explicit random fields of one noise stage, on its canvas; Poisson deviations of None are
    drawn from the stage key with the actual rates."""

    normal: jax.Array  # [Hc, Wc, 3]
    normal_gray: jax.Array  # [Hc, Wc]
    deviation: jax.Array | None = None  # counts - rate, [Hc, Wc, 3]
    deviation_gray: jax.Array | None = None  # [Hc, Wc]


def _resize_any(x, mode, in_hw, out_hw, ratio, out_canvas):
    """Resize the valid in_hw region of canvas x to out_hw on out_canvas, mode traced."""
    mats = []
    for axis in range(2):
        options = [
            resize_matrix(in_hw[axis], out_hw[axis], m, ratio, in_canvas=x.shape[axis], out_canvas=out_canvas[axis])
            for m in MODES
        ]
        mats.append(jnp.stack(options)[mode])
    return apply_resize(x, mats[0], mats[1])


def _noise(x, p: StageParams, hw, key, draws: NoiseDraws | None):
    valid = _valid_mask(x.shape[:2], *hw)
    kn, kg, kp = jax.random.split(key, 3)
    if draws is None:
        draws = NoiseDraws(jax.random.normal(kn, x.shape), jax.random.normal(kg, x.shape[:2]))
    dev, dev_gray = draws.deviation, draws.deviation_gray
    if dev is None:
        dev, dev_gray = poisson_deviations(kp, x, valid)
    noisy = jnp.where(
        p.gaussian,
        gaussian_noise(x, p.sigma, p.gray, draws.normal, draws.normal_gray),
        poisson_noise(x, p.poisson_scale, p.gray, dev, dev_gray, valid),
    )
    return jnp.where(valid, noisy, 0.0)


def _jpeg(x, quality, hw):
    return jnp.where(_valid_mask(x.shape[:2], *hw), diffjpeg_single(jnp.clip(x, 0.0, 1.0), quality), 0.0)


def degrade_one(
    params: DegradationParams,
    gt: jax.Array,
    key: jax.Array,
    cfg: DegradationConfig = DegradationConfig(),
    draws: tuple[NoiseDraws, NoiseDraws] | None = None,
) -> jax.Array:
    """LQ of one GT image [H, W, 3] (float32 in [0, 1]) under explicit parameters.

    `key` draws the noise fields; `draws` replaces them (stage 1 and stage 2 canvases), for
    reproducing another implementation's draws exactly.
    """
    h, w = gt.shape[:2]
    cv = canvases((h, w), cfg)
    k1, k2 = jax.random.split(key)
    d1, d2 = (None, None) if draws is None else draws
    lq_hw = (h // cfg.scale, w // cfg.scale)

    # first degradation: blur, resize by a scale factor, noise, JPEG
    x = filter2d_canvas(gt, make_kernel(params.kernel1), h, w)
    s1 = params.stage1
    hw1 = (scaled_size(h, s1.scale), scaled_size(w, s1.scale))
    x = _resize_any(x, s1.mode, (h, w), hw1, 1.0 / s1.scale, cv.stage1)
    x = _noise(x, s1, hw1, k1, d1)
    x = _jpeg(x, s1.quality, hw1)

    # second degradation: optional blur, resize to a size scaled from the LQ size, noise
    x = jnp.where(params.second_blur, filter2d_canvas(x, make_kernel(params.kernel2), *hw1), x)
    s2 = params.stage2
    hw2 = (scaled_size(lq_hw[0], s2.scale), scaled_size(lq_hw[1], s2.scale))
    x = _resize_any(x, s2.mode, hw1, hw2, None, cv.stage2)
    x = _noise(x, s2, hw2, k2, d2)

    # [resize to LQ + final sinc] and JPEG, in either order
    sinc = make_kernel(params.sinc)
    a = _resize_any(x, params.lq_mode, hw2, lq_hw, None, cv.lq)
    a = _jpeg(filter2d_canvas(a, sinc, *lq_hw), s2.quality, lq_hw)
    b = _resize_any(_jpeg(x, s2.quality, hw2), params.lq_mode, hw2, lq_hw, None, cv.lq)
    b = filter2d_canvas(b, sinc, *lq_hw)
    x = jnp.where(params.resize_first, a, b)

    if cfg.resize_back:
        x = _resize_any(x, params.back_mode, lq_hw, (h, w), None, (h, w))
    else:
        x = x[: lq_hw[0], : lq_hw[1]]
    return to_float(jnp.clip(jnp.round(x * 255.0), 0.0, 255.0).astype(jnp.int32))


def to_float(gt_uint8: jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1], bit-identical to NumPy's `x / 255.` cast to float32."""
    return jnp.asarray(_U8_TO_FLOAT)[gt_uint8]


@functools.partial(jax.jit, static_argnames="cfg")
def degrade(
    key: jax.Array, gt: jax.Array, cfg: DegradationConfig = DegradationConfig()
) -> tuple[jax.Array, jax.Array]:
    """OSEDiff's training pair from a GT batch [B, H, W, 3] (uint8, or float32 in [0, 1]).

    Returns (lq, gt), float32 in [0, 1]; lq is [B, H, W, 3] (resized back, as OSEDiff trains) or
    [B, H/scale, W/scale, 3] when `cfg.resize_back` is False. Every random choice is per sample
    and determined by `key`; one compilation per GT shape.
    """
    if gt.ndim != 4 or gt.shape[-1] != 3:
        raise ValueError(f"degrade expects GT images [B, H, W, 3], got shape {gt.shape}")
    gt = to_float(gt) if gt.dtype == jnp.uint8 else gt.astype(jnp.float32)
    keys = jax.random.split(key, gt.shape[0])
    param_keys, noise_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    params = jax.vmap(lambda k: sample_params(k, cfg))(param_keys)
    lq = jax.vmap(lambda p, g, k: degrade_one(p, g, k, cfg))(params, gt, noise_keys)
    return lq, gt
