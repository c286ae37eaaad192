"""The metric networks' weight files: where each comes from, reading them, converting to Flax.

Files are PyTorch checkpoints (`torch.save` pickles, legacy or zip format), read with torch on
the CPU; torch is needed only when one of these metrics is used. Convolution kernels are
converted from torch's OIHW to Flax's HWIO; parameter trees follow the torch module names
with '.' replaced by '_' (e.g. `features.0.weight` -> params['features_0']['kernel'])."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from osediff_jax.weights import read_tensors

# file name expected in the weights folder -> where the user gets it.
WEIGHT_FILES: dict[str, str] = {
    "alexnet-owt-7be5be79.pth": "torchvision's ImageNet AlexNet (AlexNet_Weights.IMAGENET1K_V1), "
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16-397923af.pth": "torchvision's ImageNet VGG16 (VGG16_Weights.IMAGENET1K_V1), "
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    "lpips_alex.pth": "the lpips package's linear layers, lpips/weights/v0.1/alex.pth inside "
    "`pip install lpips` (copy it under this name)",
    "lpips_vgg.pth": "the lpips package's linear layers, lpips/weights/v0.1/vgg.pth inside "
    "`pip install lpips` (copy it under this name)",
    "dists_weights.pt": "DISTS alpha/beta, the weights.pt that the DISTS-pytorch wheel installs "
    "(`pip install DISTS-pytorch`; it lands in sys.prefix; copy it under this name)",
    "pt_inception-2015-12-05-6726825d.pth": "pytorch-fid's FID Inception weights, https://github.com/"
    "mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
}


class MissingWeightsError(FileNotFoundError):
    """A metric's weight file is absent; the message names it and where it comes from."""


def weight_path(weights_dir: str | os.PathLike | None, name: str) -> Path:
    """Path of weight file `name` in `weights_dir`, or MissingWeightsError saying what to get."""
    where = WEIGHT_FILES[name]
    if weights_dir is None:
        raise MissingWeightsError(f"{name} is needed (from {where}): pass the folder holding it "
                                  f"(--weights DIR)")
    path = Path(weights_dir) / name
    if not path.is_file():
        raise MissingWeightsError(f"{path}: missing; this file is {where}")
    return path


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A torch checkpoint's tensors (keys as stored) as arrays; `fill_params` converts those it uses."""
    return dict(read_tensors([Path(path)]))


def fill_params(template, key_of, sd: dict, path: str | os.PathLike) -> dict:
    """A Flax param tree shaped like `template` (a pytree of arrays or ShapeDtypeStructs), each
    leaf taken from `sd[key_of(path_tuple)]`; 4-D conv kernels are transposed OIHW -> HWIO and
    vectors stored with singleton axes (DISTS' alpha [1, C, 1, 1]) are flattened."""
    import jax

    def leaf(p, t):
        names = tuple(k.key for k in p)
        w = sd.get(key_of(names))
        if w is None:
            raise ValueError(f"{path}: key '{key_of(names)}' missing")
        w = np.asarray(w, np.float32)
        if w.ndim == 4 and names[-1] == "kernel":
            w = w.transpose(2, 3, 1, 0)
        w = w.reshape(t.shape) if w.size == int(np.prod(t.shape)) and w.ndim != len(t.shape) else w
        if w.shape != tuple(t.shape):
            raise ValueError(f"{path}: '{key_of(names)}' has shape {w.shape}, expected {tuple(t.shape)}")
        return np.asarray(w, np.float32)

    return jax.tree_util.tree_map_with_path(leaf, template)
