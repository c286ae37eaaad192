"""FID with pyiqa 0.1.10's folder-vs-folder protocol (clean-fid "clean" mode):
each channel resized as a float32 PIL 'F' image with BICUBIC to 299x299, clipped to [0, 255],
(x - 128) / 128; 2048-d pool features of pytorch-fid's FID Inception (the TF 2015-12-05 graph:
FIDInceptionA/C/E_1 average pools exclude padding, E_2 max-pools); means and `np.cov` of the
features; Frechet distance with `scipy.linalg.sqrtm`."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from osediff_jax.data.resize import pil_bicubic_float
from osediff_jax.metrics.weights import load_params, weight_path

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
SIZE = 299


def preprocess(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 299x299x3 float32 network input in about [-1, 1]."""
    x = pil_bicubic_float(img.astype(np.float32), (SIZE, SIZE))
    return ((np.clip(x, 0, 255) - 128) / 128).astype(np.float32)


class BasicConv(nn.Module):
    """Conv (no bias) + inference BatchNorm (eps 1e-3) + ReLU, as torchvision's BasicConv2d."""

    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        x = nn.Conv(self.features, self.kernel, self.stride, padding=((p[0], p[0]), (p[1], p[1])),
                    use_bias=False, precision=self.precision, name="conv")(x)
        bn = {k: self.param(k, nn.initializers.zeros, (self.features,)) for k in ("weight", "bias", "running_mean")}
        var = self.param("running_var", nn.initializers.ones, (self.features,))
        x = (x - bn["running_mean"]) / jnp.sqrt(var + 1e-3) * bn["weight"] + bn["bias"]
        return nn.relu(x)


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    n = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype), 0.0, jax.lax.add, (3, 3), (1, 1), pad[1:3])
    return s / n[None, :, :, None]


def _max_pool(x: jax.Array, stride: int, pad: int) -> jax.Array:
    return nn.max_pool(x, (3, 3), (stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionV3FID(nn.Module):
    """pytorch-fid's `InceptionV3` (FID weights) up to the 2048-d average pool; NHWC input."""

    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def c(name, f, k, s=1, p=(0, 0)):
            return BasicConv(f, k if isinstance(k, tuple) else (k, k), s, p if isinstance(p, tuple) else (p, p),
                             self.precision, name=name)

        def block_a(name, x, pool_features):
            b1 = c(f"{name}_branch1x1", 64, 1)(x)
            b5 = c(f"{name}_branch5x5_2", 64, 5, p=2)(c(f"{name}_branch5x5_1", 48, 1)(x))
            b3 = c(f"{name}_branch3x3dbl_1", 64, 1)(x)
            b3 = c(f"{name}_branch3x3dbl_3", 96, 3, p=1)(c(f"{name}_branch3x3dbl_2", 96, 3, p=1)(b3))
            bp = c(f"{name}_branch_pool", pool_features, 1)(_avg_pool_exclude_pad(x))
            return jnp.concatenate([b1, b5, b3, bp], -1)

        def block_b(name, x):
            b3 = c(f"{name}_branch3x3", 384, 3, 2)(x)
            bd = c(f"{name}_branch3x3dbl_1", 64, 1)(x)
            bd = c(f"{name}_branch3x3dbl_3", 96, 3, 2)(c(f"{name}_branch3x3dbl_2", 96, 3, p=1)(bd))
            return jnp.concatenate([b3, bd, _max_pool(x, 2, 0)], -1)

        def block_c(name, x, c7):
            b1 = c(f"{name}_branch1x1", 192, 1)(x)
            b7 = c(f"{name}_branch7x7_1", c7, 1)(x)
            b7 = c(f"{name}_branch7x7_2", c7, (1, 7), p=(0, 3))(b7)
            b7 = c(f"{name}_branch7x7_3", 192, (7, 1), p=(3, 0))(b7)
            bd = c(f"{name}_branch7x7dbl_1", c7, 1)(x)
            bd = c(f"{name}_branch7x7dbl_2", c7, (7, 1), p=(3, 0))(bd)
            bd = c(f"{name}_branch7x7dbl_3", c7, (1, 7), p=(0, 3))(bd)
            bd = c(f"{name}_branch7x7dbl_4", c7, (7, 1), p=(3, 0))(bd)
            bd = c(f"{name}_branch7x7dbl_5", 192, (1, 7), p=(0, 3))(bd)
            bp = c(f"{name}_branch_pool", 192, 1)(_avg_pool_exclude_pad(x))
            return jnp.concatenate([b1, b7, bd, bp], -1)

        def block_d(name, x):
            b3 = c(f"{name}_branch3x3_2", 320, 3, 2)(c(f"{name}_branch3x3_1", 192, 1)(x))
            b7 = c(f"{name}_branch7x7x3_1", 192, 1)(x)
            b7 = c(f"{name}_branch7x7x3_2", 192, (1, 7), p=(0, 3))(b7)
            b7 = c(f"{name}_branch7x7x3_3", 192, (7, 1), p=(3, 0))(b7)
            b7 = c(f"{name}_branch7x7x3_4", 192, 3, 2)(b7)
            return jnp.concatenate([b3, b7, _max_pool(x, 2, 0)], -1)

        def block_e(name, x, max_pool):
            b1 = c(f"{name}_branch1x1", 320, 1)(x)
            b3 = c(f"{name}_branch3x3_1", 384, 1)(x)
            b3 = jnp.concatenate([c(f"{name}_branch3x3_2a", 384, (1, 3), p=(0, 1))(b3),
                                  c(f"{name}_branch3x3_2b", 384, (3, 1), p=(1, 0))(b3)], -1)
            bd = c(f"{name}_branch3x3dbl_2", 384, 3, p=1)(c(f"{name}_branch3x3dbl_1", 448, 1)(x))
            bd = jnp.concatenate([c(f"{name}_branch3x3dbl_3a", 384, (1, 3), p=(0, 1))(bd),
                                  c(f"{name}_branch3x3dbl_3b", 384, (3, 1), p=(1, 0))(bd)], -1)
            # The FID graph max-pools in its last block (a quirk of the TF model, kept by pytorch-fid).
            pooled = _max_pool(x, 1, 1) if max_pool else _avg_pool_exclude_pad(x)
            bp = c(f"{name}_branch_pool", 192, 1)(pooled)
            return jnp.concatenate([b1, b3, bd, bp], -1)

        x = c("Conv2d_1a_3x3", 32, 3, 2)(x)
        x = c("Conv2d_2a_3x3", 32, 3)(x)
        x = c("Conv2d_2b_3x3", 64, 3, p=1)(x)
        x = _max_pool(x, 2, 0)
        x = c("Conv2d_3b_1x1", 80, 1)(x)
        x = c("Conv2d_4a_3x3", 192, 3)(x)
        x = _max_pool(x, 2, 0)
        x = block_a("Mixed_5b", x, 32)
        x = block_a("Mixed_5c", x, 64)
        x = block_a("Mixed_5d", x, 64)
        x = block_b("Mixed_6a", x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = block_c(name, x, c7)
        x = block_d("Mixed_7a", x)
        x = block_e("Mixed_7b", x, max_pool=False)
        x = block_e("Mixed_7c", x, max_pool=True)
        return x.mean(axis=(1, 2))


@jax.jit
def inception_features(params: dict, x: jax.Array) -> jax.Array:
    """Jitted 2048-d FID features of preprocessed NHWC batches -> [N, 2048]."""
    return InceptionV3FID().apply({"params": params}, x)


def _torch_key(names: tuple[str, ...]) -> str:
    """('Mixed_5b_branch1x1', 'conv', 'kernel') -> 'Mixed_5b.branch1x1.conv.weight'."""
    block, leaf = names[0], names[-1]
    top = block if block.startswith("Conv2d_") else block[:8] + "." + block[9:]
    if names[1] == "conv":
        return f"{top}.conv.weight"
    return f"{top}.bn.{leaf}"


def inception_params(weights_dir: str | os.PathLike | None) -> dict:
    """Flax params of the FID Inception from pytorch-fid's weight file."""
    x = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    template = jax.eval_shape(InceptionV3FID().init, jax.random.key(0), x)["params"]
    path = weight_path(weights_dir, WEIGHTS_FILE)
    return load_params(template, path, _torch_key)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), with clean-fid's fallback for a singular
    product (eps added to both diagonals)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has an imaginary component of {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID of two [N, 2048] feature sets (N >= 2 each), statistics as pyiqa takes them."""
    for name, f in (("first", feats1), ("second", feats2)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 images per set; the {name} set has shape {f.shape}")
    return frechet_distance(np.mean(feats1, axis=0), np.cov(feats1, rowvar=False),
                            np.mean(feats2, axis=0), np.cov(feats2, rowvar=False))
