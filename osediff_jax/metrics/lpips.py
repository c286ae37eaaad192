"""LPIPS v0.1 (Zhang et al. 2018) as a Flax module: the lpips package's network, NHWC.

`alex` is the evaluation metric (pyiqa's `lpips`), `vgg` the OSEDiff training loss. Weights: the
torchvision ImageNet backbone plus the lpips package's linear layers (see `weights.WEIGHT_FILES`).
`lpips_params(..., random_backbone=True)` builds the network without any file, for training on a
fresh machine: it says so on stderr, and its values are not LPIPS."""

from __future__ import annotations

import functools
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.metrics.backbones import (
    AlexNetFeatures,
    VGG16Features,
    torchvision_key,
)
from osediff_jax.metrics.weights import load_params, weight_path

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
LIN_FILES = {"alex": "lpips_alex.pth", "vgg": "lpips_vgg.pth"}
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def unit_normalize(a: jax.Array, eps: float = 1e-10) -> jax.Array:
    """a / (||a||_channels + eps), as lpips' normalize_tensor, with a zero (not NaN) gradient
    where a feature vector is exactly zero (all ReLUs off), which the training loss can hit."""
    ss = jnp.sum(a * a, axis=-1, keepdims=True)
    norm = jnp.where(ss > 0, jnp.sqrt(jnp.where(ss > 0, ss, 1.0)), 0.0)
    return a / (norm + eps)


class LPIPS(nn.Module):
    """LPIPS distance of NHWC image batches in [-1, 1]; returns shape [N]."""

    net: str = "alex"
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if self.net not in BACKBONE_FILES:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {self.net!r}")
        backbone = (AlexNetFeatures if self.net == "alex" else VGG16Features)(
            precision=self.precision, name="backbone")
        fx = backbone((x - _SHIFT) / _SCALE)
        fy = backbone((y - _SHIFT) / _SCALE)
        total = 0.0
        for k, (a, b) in enumerate(zip(fx, fy)):
            a, b = unit_normalize(a), unit_normalize(b)
            lin = nn.Conv(1, (1, 1), use_bias=False, precision=self.precision, name=f"lin{k}")
            total = total + jnp.mean(lin((a - b) ** 2), axis=(1, 2, 3))
        return total


@functools.partial(jax.jit, static_argnames="net")
def lpips_distance(params: dict, x: jax.Array, y: jax.Array, net: str = "alex") -> jax.Array:
    """Jitted LPIPS-`net` of NHWC batches in [-1, 1] -> [N]."""
    return LPIPS(net).apply({"params": params}, x, y)


def _template(net: str) -> dict:
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(LPIPS(net).init, jax.random.key(0), x, x)["params"]


def _lin_key(names: tuple[str, ...]) -> str:
    return f"{names[0]}.model.1.weight"  # lpips' NetLinLayer: Sequential(Dropout, Conv)


def lpips_params(net: str, weights_dir: str | os.PathLike | None, random_backbone: bool = False,
                 seed: int = 0) -> dict:
    """Flax params of LPIPS-`net` from the weights folder.

    random_backbone=True needs no backbone file: the ImageNet backbone is replaced by a seeded
    random initialisation, and the lpips linear layers are used when their file is present, else
    drawn at random too. The result is a deterministic perceptual-style loss, not LPIPS."""
    template = _template(net)
    if random_backbone:
        # Flax's default Conv initialisation (LeCun normal kernels, zero biases), drawn directly
        # from the parameter shapes so no forward pass is needed.
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        init = nn.initializers.lecun_normal()
        # One compiled program for all draws: drawn one by one, each kernel shape compiled its own.
        kernels = jax.jit(lambda ks: [init(k, t.shape, jnp.float32) for k, (p, t) in zip(ks, leaves)
                                      if p[-1].key == "kernel"])(keys)
        drawn = iter(kernels)
        params = jax.tree_util.tree_unflatten(treedef, [
            np.asarray(next(drawn)) if p[-1].key == "kernel" else np.zeros(t.shape, np.float32) for p, t in leaves])
        what = "random backbone"
        try:
            lin_path = weight_path(weights_dir, LIN_FILES[net])
        except FileNotFoundError:
            lin_path = None
        if lin_path is not None:
            lins = load_params({k: v for k, v in template.items() if k != "backbone"}, lin_path, _lin_key)
            params.update(lins)
        else:
            # Trained lpips linear weights are non-negative: keep the random ones so.
            params.update({k: {"kernel": np.abs(v["kernel"])} for k, v in params.items() if k != "backbone"})
            what += " and random linear layers"
        print(f"LPIPS-{net}: {what} (seed {seed}); values are not LPIPS", file=sys.stderr)
        return params
    bb_path = weight_path(weights_dir, BACKBONE_FILES[net])
    lin_path = weight_path(weights_dir, LIN_FILES[net])
    params = {"backbone": load_params(template["backbone"], bb_path, torchvision_key)}
    params.update(load_params({k: v for k, v in template.items() if k != "backbone"}, lin_path, _lin_key))
    return params
