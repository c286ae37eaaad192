"""ImageNet feature extractors of torchvision (AlexNet, VGG16 `features`) as Flax NHWC modules,
returning the ReLU outputs that LPIPS and DISTS compare. Conv modules are named after the
torchvision layer index (`features_N` <-> `features.N`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (layer index, output channels) per stage; a 2x2 pool precedes every stage but the first.
VGG16_STAGES = (((0, 64), (2, 64)), ((5, 128), (7, 128)), ((10, 256), (12, 256), (14, 256)),
                ((17, 512), (19, 512), (21, 512)), ((24, 512), (26, 512), (28, 512)))
# (layer index, output channels, kernel, stride, padding, 3x3/2 max-pool before it)
ALEXNET_CONVS = ((0, 64, 11, 4, 2, False), (3, 192, 5, 1, 2, True), (6, 384, 3, 1, 1, True),
                 (8, 256, 3, 1, 1, False), (10, 256, 3, 1, 1, False))


def l2_pool(x: jax.Array) -> jax.Array:
    """DISTS' L2 pooling: sqrt(depthwise 3x3 Hann-window blur of x^2, stride 2, pad 1 + 1e-12)."""
    a = np.hanning(5)[1:-1]
    g = a[:, None] * a[None, :]
    g = jnp.asarray((g / g.sum()).astype(np.float32))
    c = x.shape[-1]
    out = jax.lax.conv_general_dilated(
        x * x, jnp.tile(g[:, :, None, None], (1, 1, 1, c)), (2, 2), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST)
    return jnp.sqrt(out + 1e-12)


class VGG16Features(nn.Module):
    """torchvision VGG16 `features` up to relu5_3; returns [relu1_2, relu2_2, relu3_3, relu4_3,
    relu5_3]. `pool`: 'max' (torchvision, LPIPS) or 'l2' (DISTS)."""

    pool: str = "max"
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        outs = []
        for s, stage in enumerate(VGG16_STAGES):
            if s:
                x = nn.max_pool(x, (2, 2), (2, 2)) if self.pool == "max" else l2_pool(x)
            for idx, ch in stage:
                x = nn.relu(nn.Conv(ch, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision,
                                    name=f"features_{idx}")(x))
            outs.append(x)
        return outs


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet `features`; returns the five ReLU outputs (relu1 ... relu5)."""

    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        outs = []
        for idx, ch, k, s, p, pool in ALEXNET_CONVS:
            if pool:
                x = nn.max_pool(x, (3, 3), (2, 2))
            x = nn.relu(nn.Conv(ch, (k, k), (s, s), padding=((p, p), (p, p)), precision=self.precision,
                                name=f"features_{idx}")(x))
            outs.append(x)
        return outs


def torchvision_key(names: tuple[str, ...]) -> str:
    """('features_0', 'kernel') -> 'features.0.weight'."""
    layer, leaf = names[-2], names[-1]
    return layer.replace("features_", "features.") + (".weight" if leaf == "kernel" else ".bias")
