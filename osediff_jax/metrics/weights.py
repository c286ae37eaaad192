"""The metric networks' weight files: where each comes from, reading them, converting to Flax.

Files are PyTorch checkpoints (`torch.save` pickles, legacy or zip format), read with torch on
the CPU; torch is needed only when one of these metrics is used, and converted by the package's
one torch -> Flax converter (`weights.torch_format.torch_to_flax`) with each network's key names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from osediff_jax.weights.torch_format import read_tensors, torch_to_flax

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


def load_params(template: Any, path: str | os.PathLike, key_of: Callable[[tuple[str, ...]], str]) -> dict:
    """float32 numpy params shaped like `template` (arrays or ShapeDtypeStructs) from the torch
    file `path`, leaf `p` read from key `key_of(p)`; other keys in the file are ignored."""
    return torch_to_flax(read_tensors([Path(path)]), template, str(path), key_of=key_of, dtype=np.float32,
                         unexpected="ignore", put=np.asarray)
