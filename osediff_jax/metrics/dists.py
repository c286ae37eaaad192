"""DISTS (Ding et al. 2020) as a Flax module: the DISTS-pytorch package's network, NHWC.

VGG16 with L2 pooling in place of max pooling; weights: torchvision's `vgg16-397923af.pth` and
the wheel's alpha/beta (`dists_weights.pt`, see `weights.WEIGHT_FILES`). No resizing."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.metrics.backbones import VGG16Features, torchvision_key
from osediff_jax.metrics.weights import load_params, weight_path

VGG_FILE = "vgg16-397923af.pth"
ALPHA_BETA_FILE = "dists_weights.pt"
CHANNELS = (3, 64, 128, 256, 512, 512)
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


class DISTS(nn.Module):
    """DISTS distance of NHWC image batches in [0, 1]; returns shape [N]."""

    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        vgg = VGG16Features(pool="l2", precision=self.precision, name="backbone")
        fx = [x] + vgg((x - _MEAN) / _STD)
        fy = [y] + vgg((y - _MEAN) / _STD)
        alpha = self.param("alpha", nn.initializers.constant(0.1), (sum(CHANNELS),))
        beta = self.param("beta", nn.initializers.constant(0.1), (sum(CHANNELS),))
        w_sum = alpha.sum() + beta.sum()
        splits = np.cumsum(CHANNELS)[:-1]
        alphas, betas = jnp.split(alpha / w_sum, splits), jnp.split(beta / w_sum, splits)
        c1 = c2 = 1e-6
        dist1 = dist2 = 0.0
        for a, b, wa, wb in zip(fx, fy, alphas, betas):
            am, bm = a.mean(axis=(1, 2)), b.mean(axis=(1, 2))
            s1 = (2 * am * bm + c1) / (am ** 2 + bm ** 2 + c1)
            dist1 = dist1 + (wa * s1).sum(axis=-1)
            av = ((a - am[:, None, None]) ** 2).mean(axis=(1, 2))
            bv = ((b - bm[:, None, None]) ** 2).mean(axis=(1, 2))
            cov = (a * b).mean(axis=(1, 2)) - am * bm
            s2 = (2 * cov + c2) / (av + bv + c2)
            dist2 = dist2 + (wb * s2).sum(axis=-1)
        return 1 - (dist1 + dist2)


@jax.jit
def dists_distance(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Jitted DISTS of NHWC batches in [0, 1] -> [N]."""
    return DISTS().apply({"params": params}, x, y)


def dists_params(weights_dir: str | os.PathLike | None) -> dict:
    """Flax params of DISTS from the weights folder."""
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    template = jax.eval_shape(DISTS().init, jax.random.key(0), x, x)["params"]
    vgg_path = weight_path(weights_dir, VGG_FILE)
    ab_path = weight_path(weights_dir, ALPHA_BETA_FILE)
    params = {"backbone": load_params(template["backbone"], vgg_path, torchvision_key)}
    params.update(load_params({"alpha": template["alpha"], "beta": template["beta"]}, ab_path, lambda n: n[0]))
    return params
