"""Resizing with each reference's exact semantics: PyTorch `F.interpolate` (align_corners=False,
no antialiasing) for the degradation, PIL's BICUBIC (`pil_bicubic`, `pil_bicubic_float`) for the
generator's input and FID, and MATLAB's `imresize` for NIQE.

Every mode is a pair of interpolation matrices (rows, columns), so sizes may be traced values:
the degradation pipeline resizes between fixed canvases whose valid sizes are drawn on device,
without recompiling. The matrices reproduce PyTorch's CPU kernels: source index
`ratio * (dst + 0.5) - 0.5` in float32 with ratio = 1/scale_factor when a scale factor is given and
in/out otherwise; bilinear clamps negative sources to 0 and copies when the sizes are equal;
bicubic uses A = -0.75 with replicated edges; area is adaptive average pooling (integer windows).
`jax.image.resize` differs on all three counts (antialiasing, A = -0.5, TF-style area).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

MODES = ("area", "bilinear", "bicubic")
_CUBIC_A = -0.75
_HIGHEST = jax.lax.Precision.HIGHEST


def scaled_size(n: jax.Array | int, scale: jax.Array | float) -> jax.Array:
    """Exact `floor(n * scale)` for an integer n < 2**19 and a float32 scale in (2**-100, 2048).

    PyTorch computes output sizes in float64, where the product of an integer and a float32 is
    exact; a float32 product can round across an integer, so this works on the integer mantissa.
    """
    n = jnp.asarray(n, jnp.int32)
    bits = jax.lax.bitcast_convert_type(jnp.asarray(scale, jnp.float32), jnp.int32)
    mant = (bits & 0x7FFFFF) | 0x800000
    shift = 150 - ((bits >> 23) & 0xFF)  # scale = mant * 2**-shift
    hi = n * (mant >> 12) + ((n * (mant & 0xFFF)) >> 12)  # floor(n * mant / 2**12)
    return jnp.right_shift(hi, jnp.clip(shift - 12, 0, 31))


def _ratio(in_size, out_size, ratio):
    if ratio is None:
        return jnp.asarray(in_size, jnp.float32) / jnp.asarray(out_size, jnp.float32)
    return jnp.asarray(ratio, jnp.float32)


def _cubic_weights(t):
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return jnp.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_matrix(
    in_size: jax.Array | int,
    out_size: jax.Array | int,
    mode: str,
    ratio: jax.Array | float | None = None,
    *,
    in_canvas: int,
    out_canvas: int,
) -> jax.Array:
    """Interpolation matrix [out_canvas, in_canvas] for one axis; zero outside the valid sizes.

    `in_size` and `out_size` may be traced. `ratio` is the source/destination coordinate ratio:
    PyTorch uses float32(1 / scale_factor) when given a scale factor; None means in/out (resizing
    to a size). Area mode ignores it (adaptive pooling depends on the sizes only).
    """
    if mode not in MODES:
        raise ValueError(f"resize mode must be one of {MODES}, got {mode!r}")
    in_size = jnp.asarray(in_size, jnp.int32)
    out_size = jnp.asarray(out_size, jnp.int32)
    i = jnp.arange(out_canvas, dtype=jnp.int32)
    j = jnp.arange(in_canvas, dtype=jnp.int32)
    row_valid = (i < out_size)[:, None]
    if mode == "area":
        start = (i * in_size) // out_size
        end = ((i + 1) * in_size + out_size - 1) // out_size
        inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
        w = inside.astype(jnp.float32) / (end - start).astype(jnp.float32)[:, None]
        return jnp.where(row_valid, w, 0.0)
    ratio = _ratio(in_size, out_size, ratio)
    src = ratio * (i.astype(jnp.float32) + 0.5) - 0.5
    last = in_size - 1
    if mode == "bilinear":
        src = jnp.maximum(src, 0.0)
        i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
        lam = jnp.clip(src - i0.astype(jnp.float32), 0.0, 1.0)
        i1 = i0 + (i0 < last).astype(jnp.int32)
        w = (j[None, :] == i0[:, None]) * (1.0 - lam)[:, None] + (j[None, :] == i1[:, None]) * lam[:, None]
        copy = (j[None, :] == i[:, None]).astype(jnp.float32)
        w = jnp.where(in_size == out_size, copy, w)
        return jnp.where(row_valid, w, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
    t = jnp.clip(src - i0.astype(jnp.float32), 0.0, 1.0)
    taps = jnp.clip(i0[:, None] + jnp.arange(-1, 3, dtype=jnp.int32)[None, :], 0, last)  # [out, 4]
    weights = _cubic_weights(t)  # [out, 4]
    w = jnp.sum((taps[:, :, None] == j[None, None, :]) * weights[:, :, None], axis=1)
    return jnp.where(row_valid, w, 0.0)


def apply_resize(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """Resize x [..., H, W, C] with row matrix [H', H] and column matrix [W', W] in full float32."""
    y = jnp.einsum("ih,...hwc->...iwc", rows, x, precision=_HIGHEST)
    return jnp.einsum("jw,...iwc->...ijc", cols, y, precision=_HIGHEST)


def interpolate(
    x: jax.Array,
    size: tuple[int, int] | None = None,
    scale_factor: float | None = None,
    mode: str = "bilinear",
) -> jax.Array:
    """`torch.nn.functional.interpolate(x, size, scale_factor, mode)` for NHWC (or HWC) arrays.

    Exactly one of `size` and `scale_factor` must be given; with a scale factor the output is
    floor(in * scale_factor) and bilinear/bicubic sample with ratio 1/scale_factor, like PyTorch.
    """
    if (size is None) == (scale_factor is None):
        raise ValueError(f"give exactly one of size and scale_factor, got size={size}, scale_factor={scale_factor}")
    if x.ndim < 3:
        raise ValueError(f"interpolate expects [..., H, W, C], got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    if size is not None:
        out_h, out_w = (int(v) for v in size)
        ratio = None
    else:
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be positive, got {scale_factor}")
        out_h, out_w = math.floor(h * float(scale_factor)), math.floor(w * float(scale_factor))
        ratio = float(jnp.float32(1.0 / float(scale_factor)))  # PyTorch: 1/scale in float64, then float32
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size must be positive, got {(out_h, out_w)} from input {(h, w)}")
    return _interpolate_static(x, (out_h, out_w), mode, ratio)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _interpolate_static(x, out_hw, mode, ratio):
    h, w = x.shape[-3], x.shape[-2]
    rows = resize_matrix(h, out_hw[0], mode, ratio, in_canvas=h, out_canvas=out_hw[0])
    cols = resize_matrix(w, out_hw[1], mode, ratio, in_canvas=w, out_canvas=out_hw[1])
    return apply_resize(x, rows, cols)


def _pil_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


def pil_filter_matrix(n_in: int, n_out: int, kernel: Callable[[np.ndarray], np.ndarray], support: float) -> np.ndarray:
    """[n_out, n_in] float64 weights of PIL's resampling along one axis: `kernel` of half-width
    `support`, widened by the scale when shrinking (antialiasing), taps cut at the border and
    renormalised. PyTorch's `antialias=True` interpolation implements the same algorithm."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = support * filterscale
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        w = kernel((np.arange(lo, hi) - center + 0.5) / filterscale)
        m[i, lo:hi] = w / w.sum()
    return m


def pil_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL's BICUBIC (A = -0.5) along one axis (`pil_filter_matrix`)."""
    return pil_filter_matrix(n_in, n_out, _pil_cubic, 2.0)


def _separable(x: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
    y = jnp.einsum("wj,...ijc->...iwc", jnp.asarray(cols, jnp.float32), x.astype(jnp.float32), precision=_HIGHEST)
    return jnp.einsum("hi,...iwc->...hwc", jnp.asarray(rows, jnp.float32), y, precision=_HIGHEST)


def pil_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Jittable PIL BICUBIC resize of float images [..., H, W, C] to `size` = (height, width), as
    PIL's float ('F') mode computes it; the 8-bit path of the upscale command uses PIL itself."""
    return _separable(x, pil_bicubic_matrix(x.shape[-3], size[0]), pil_bicubic_matrix(x.shape[-2], size[1]))


def bilinear_antialiased(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.interpolate(x, size, mode="bilinear", antialias=True)` (PIL's BILINEAR) of float images
    [..., H, W, C]: torchvision's tensor `Resize` since 0.17; without antialiasing use `interpolate`."""
    return _separable(x, pil_filter_matrix(x.shape[-3], size[0], _triangle, 1.0),
                      pil_filter_matrix(x.shape[-2], size[1], _triangle, 1.0))


def _matlab_cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return (near + far).astype(x.dtype)


def _matlab_taps(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and float32 weights, both [taps, n_out], of MATLAB `imresize` bicubic along
    one axis, built as pyiqa's torch port does it (float32 positions, kernel widened by 1/scale
    when shrinking, weights normalised per output, symmetric edge padding folded into indices)."""
    f32 = np.float32
    aa = scale < 1
    width = (math.ceil(4 / scale) if aa else 4) + 2
    pos = np.linspace(0, n_out - 1, n_out, dtype=f32)
    pos = (pos + f32(0.5)) / f32(scale) - f32(0.5)
    base = np.floor(pos) - f32(width // 2) + f32(1)
    dist = pos - base
    taps = (dist[None, :] - np.arange(width, dtype=f32)[:, None]) * f32(scale if aa else 1.0)
    w = _matlab_cubic(taps)
    w = w / w.sum(axis=0, keepdims=True)
    idx = base.astype(np.int64)[None, :] + np.arange(width)[:, None]
    # MATLAB's symmetric padding repeats the edge sample: [a, a, b, c, d, d].
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
    return idx, w


def _resize_axis(x: np.ndarray, axis: int, scale: float) -> np.ndarray:
    x = np.moveaxis(x, axis, 0)
    idx, w = _matlab_taps(x.shape[0], math.ceil(x.shape[0] * scale), scale)
    w = w.reshape(w.shape + (1,) * (x.ndim - 1))
    # Tap by tap, in the reference's order: the float32 sums then agree bit for bit.
    out = x[idx[0]] * w[0]
    for k in range(1, idx.shape[0]):
        out = out + x[idx[k]] * w[k]
    return np.moveaxis(out, 0, axis)


def imresize_matlab(x: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(x, scale)` (bicubic, antialiased) of [..., H, W] arrays, in float32 like
    pyiqa 0.1.10 (which casts every input to float32); returns float32 of size ceil(H*scale)."""
    x = np.asarray(x, np.float32)
    return _resize_axis(_resize_axis(x, -2, scale), -1, scale)


def pil_bicubic_8bit(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An 8-bit HxWxC (C = 1 or 3) image resized by PIL's BICUBIC to `size` = (height, width), uint8,
    as the authors' release upsamples its input (PIL's 8-bit path rounds between its two passes)."""
    c = pixels.shape[-1]
    img = Image.fromarray(pixels if c == 3 else pixels[..., 0], "RGB" if c == 3 else "L")
    return np.asarray(img.resize((size[1], size[0]), Image.BICUBIC)).reshape(size[0], size[1], c)


def pil_bicubic_float(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each channel of an HxWxC array resized as a float32 PIL 'F' image with BICUBIC to
    `size` = (height, width): clean-fid's (and pyiqa's FID) resize."""
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c], np.float32)).resize(
        (size[1], size[0]), resample=Image.BICUBIC)) for c in range(x.shape[-1])]
    return np.stack(out, axis=-1)
