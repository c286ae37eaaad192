"""The metric networks' weight files: where each comes from, reading them, converting to Flax.

Files are PyTorch checkpoints (`torch.save` pickles, legacy or zip format), read with torch on
the CPU; torch is needed only when one of these metrics is used, and converted by the package's
one torch -> Flax converter (`weights.torch_format.torch_to_flax`) with each network's key names."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from osediff_jax.weights.torch_format import CheckpointError, read_tensors, torch_to_flax

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
    "RN50.pt": "OpenAI's CLIP RN50 (a TorchScript archive), https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "musiq_koniq_ckpt-e95806b9.pth": "pyiqa's MUSIQ KonIQ-10k weights, https://github.com/chaofengc/"
    "IQA-PyTorch/releases/download/v0.1-weights/musiq_koniq_ckpt-e95806b9.pth",
    "MANIQA_PIPAL-ae6d356b.pth": "pyiqa's MANIQA PIPAL weights (maniqa-pipal), https://github.com/chaofengc/"
    "IQA-PyTorch/releases/download/v0.1-weights/MANIQA_PIPAL-ae6d356b.pth",
}
# A folder written by `convert metrics`: this file lists the metrics held, each an Orbax tree in
# a subfolder of that name.
CONVERTED_INDEX = "metric_weights.json"


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


def load_params(template: Any, path: str | os.PathLike, key_of: Callable[[tuple[str, ...]], str],
                tensors: Iterable[tuple[str, np.ndarray]] | None = None) -> dict:
    """float32 numpy params shaped like `template` (arrays or ShapeDtypeStructs) from the torch
    file `path` (or the (key, array) pairs `tensors` read from it), leaf `p` read from key
    `key_of(p)`; other keys in the file are ignored."""
    tensors = read_tensors([Path(path)]) if tensors is None else tensors
    return torch_to_flax(tensors, template, str(path), key_of=key_of, dtype=np.float32, unexpected="ignore",
                         put=np.asarray)


def read_torchscript(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """(key, array) pairs of a TorchScript archive's state dict (OpenAI's CLIP files), or of a
    plain `torch.save`d state dict, as OpenAI's `clip.load` accepts both."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading it needs PyTorch (pip install 'osediff-jax[torch]'), or convert "
                              f"the weights folder once with `python -m osediff_jax.convert metrics`") from None
    try:
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not a TorchScript archive
        yield from read_tensors([Path(path)])
        return
    except Exception as e:  # corrupt or foreign files raise many types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    for key, t in state.items():
        yield key, t.detach().float().numpy() if t.is_floating_point() else t.numpy()


def is_converted(weights_dir: str | os.PathLike | None) -> bool:
    """Whether `weights_dir` is a metric checkpoint written by `convert metrics`."""
    return weights_dir is not None and (Path(weights_dir) / CONVERTED_INDEX).is_file()


def restore_metric(weights_dir: str | os.PathLike | None, name: str) -> dict | None:
    """Params of metric `name` from a converted checkpoint, or None when `weights_dir` is a
    folder of release files (or None)."""
    if not is_converted(weights_dir):
        return None
    from osediff_jax.weights.bundle import restore_tree
    held = json.loads((Path(weights_dir) / CONVERTED_INDEX).read_text())["metrics"]
    if name not in held:
        raise MissingWeightsError(f"{weights_dir}: this converted metric checkpoint holds {', '.join(held)} but "
                                  f"not {name}; convert a folder that also has its weight files")
    return restore_tree(Path(weights_dir) / name)


def save_converted(dst: str | os.PathLike, params: dict[str, dict]) -> None:
    """Writes {metric: params} as one converted checkpoint folder `dst`, atomically."""
    from osediff_jax.files.atomic import atomic_dir
    from osediff_jax.weights.bundle import save_tree
    with atomic_dir(dst) as tmp:
        for name, tree in params.items():
            save_tree(tmp / name, tree)
        (tmp / CONVERTED_INDEX).write_text(json.dumps({"metrics": list(params)}, indent=2))
