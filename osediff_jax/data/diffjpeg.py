"""JPEG compression as basicsr's `DiffJPEG(differentiable=False)` computes it, in JAX.

Not libjpeg: float quality factor `(q < 50 ? 5000/q : 200 - 2q) / 100` scaling the standard tables
(the luminance table transposed, as basicsr has it), 4:2:0 chroma by 2x2 averaging, an
orthonormally scaled 8x8 DCT as a 64x64 matrix product in full float32 (on GPUs the default TF32
would flip quantization roundings), round half to even, nearest chroma upsampling, and no rounding
of the decoded pixels. Images are zero-padded to multiples of 16 and cropped back.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST

_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
).T  # basicsr transposes the standard table
_CHROMA = np.full((8, 8), 99, dtype=np.float32)
_CHROMA[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]).T

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
).T
_YCBCR_TO_RGB = np.array([[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], dtype=np.float32).T


def _dct_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fwd = np.zeros((8, 8, 8, 8), dtype=np.float32)
    inv = np.zeros((8, 8, 8, 8), dtype=np.float32)
    for x, y, u, v in itertools.product(range(8), repeat=4):
        fwd[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos((2 * y + 1) * v * np.pi / 16)
        inv[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos((2 * v + 1) * y * np.pi / 16)
    alpha = np.array([1.0 / np.sqrt(2)] + [1] * 7)
    fwd_scale = (np.outer(alpha, alpha) * 0.25).astype(np.float32)
    inv_alpha = np.outer(alpha, alpha).astype(np.float32)
    return fwd.reshape(64, 64), fwd_scale, inv.reshape(64, 64), inv_alpha


_DCT, _DCT_SCALE, _IDCT, _IDCT_ALPHA = _dct_matrices()


def divide_exactly(x: jax.Array, c: float) -> jax.Array:
    """x / c rounded like IEEE division: XLA rewrites division by a constant as a multiplication by
    its reciprocal, which is off by one ulp for about 70% of inputs (PyTorch divides). The divisor
    is made data-dependent (`x * 0 + c`, so finite x only; a constant-filled array stays constant
    under vmap) and the barriers keep the simplifier from folding or reassociating it."""
    x = jnp.asarray(x, jnp.float32)
    return jax.lax.optimization_barrier(x / jax.lax.optimization_barrier(x * 0.0 + c))


def quality_to_factor(quality: jax.Array) -> jax.Array:
    """basicsr's table scale for a (float) JPEG quality in (0, 100]."""
    q = jnp.asarray(quality, jnp.float32)
    # 5000 / q as PyTorch evaluates `5000. / tensor`: reciprocal, then product.
    return divide_exactly(jnp.where(q < 50, (1.0 / q) * 5000.0, 200.0 - q * 2), 100.0)


def _blocks(channel: jax.Array) -> jax.Array:
    """[H, W] -> [H/8 * W/8, 8, 8] in row-major block order."""
    h, w = channel.shape
    return channel.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)


def _merge(blocks: jax.Array, h: int, w: int) -> jax.Array:
    return blocks.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(h, w)


def _dct(blocks: jax.Array) -> jax.Array:
    flat = jnp.matmul((blocks - 128.0).reshape(-1, 64), _DCT, precision=_HIGHEST)
    return _DCT_SCALE * flat.reshape(-1, 8, 8)


def _idct(coefs: jax.Array) -> jax.Array:
    flat = jnp.matmul((coefs * _IDCT_ALPHA).reshape(-1, 64), _IDCT, precision=_HIGHEST)
    return 0.25 * flat.reshape(-1, 8, 8) + 128.0


def _pad16(image: jax.Array) -> jax.Array:
    h, w = image.shape[:2]
    return jnp.pad(image, ((0, -h % 16), (0, -w % 16), (0, 0)))


def _encode_one(image: jax.Array, factor: jax.Array, rounding: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    ycc = jnp.tensordot(image * 255.0, _RGB_TO_YCBCR, axes=1, precision=_HIGHEST) + jnp.array([0.0, 128.0, 128.0])
    h, w = ycc.shape[:2]
    c = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2)
    chroma = (((c[:, 0, :, 0] + c[:, 0, :, 1]) + c[:, 1, :, 0]) + c[:, 1, :, 1]) / 4.0  # avg_pool2d's order
    quant = []
    for plane, table in ((ycc[..., 0], _LUMA), (chroma[..., 0], _CHROMA), (chroma[..., 1], _CHROMA)):
        q = _dct(_blocks(plane)) / (table * factor)
        quant.append(jnp.round(q) if rounding else q)
    return quant[0], quant[1], quant[2]


def _decode_one(y, cb, cr, factor, h: int, w: int) -> jax.Array:
    luma = _merge(_idct(y * (_LUMA * factor)), h, w)
    chroma = [_merge(_idct(c * (_CHROMA * factor)), h // 2, w // 2) for c in (cb, cr)]
    chroma = [jnp.repeat(jnp.repeat(c, 2, axis=0), 2, axis=1) for c in chroma]
    ycc = jnp.stack([luma, chroma[0], chroma[1]], axis=-1)
    rgb = jnp.tensordot(ycc + jnp.array([0.0, -128.0, -128.0]), _YCBCR_TO_RGB, axes=1, precision=_HIGHEST)
    return divide_exactly(jnp.clip(rgb, 0.0, 255.0), 255.0)


def _check(x: jax.Array, quality: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"diffjpeg expects RGB images [B, H, W, 3], got shape {x.shape}")
    quality = jnp.broadcast_to(jnp.asarray(quality, jnp.float32), x.shape[:1])
    return x, quality


def jpeg_coefficients(x: jax.Array, quality: jax.Array, rounding: bool = True):
    """Quantized DCT coefficients (y, cb, cr), each [B, blocks, 8, 8], of RGB images [B, H, W, 3].

    With `rounding=False` the quotients before rounding (for counting rounding-boundary cases).
    """
    x, quality = _check(x, quality)
    return jax.vmap(lambda im, q: _encode_one(_pad16(im), quality_to_factor(q), rounding))(x, quality)


def decode_coefficients(y, cb, cr, quality: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Images [B, H, W, 3] from quantized coefficients as `jpeg_coefficients` returns them."""
    quality = jnp.asarray(quality, jnp.float32)
    ph, pw = -(-size[0] // 16) * 16, -(-size[1] // 16) * 16
    decode = jax.vmap(lambda a, b, c, q: _decode_one(a, b, c, quality_to_factor(q), ph, pw))
    return decode(y, cb, cr, quality)[:, : size[0], : size[1]]


def diffjpeg_single(image: jax.Array, quality: jax.Array) -> jax.Array:
    """`diffjpeg` of one image [H, W, 3] with a scalar quality (for use under vmap)."""
    h, w = image.shape[:2]
    padded = _pad16(image)
    factor = quality_to_factor(quality)
    y, cb, cr = _encode_one(padded, factor, True)
    return _decode_one(y, cb, cr, factor, padded.shape[0], padded.shape[1])[:h, :w]


def diffjpeg(x: jax.Array, quality: jax.Array | float) -> jax.Array:
    """JPEG-compress RGB images [B, H, W, 3] in [0, 1] with per-sample (float) quality [B]."""
    x, quality = _check(x, quality)
    return jax.vmap(diffjpeg_single)(x, quality)
