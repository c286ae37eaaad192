"""pyiqa 0.1.10's own architecture modules, imported without the pyiqa package.

pyiqa's `pyiqa/__init__.py` imports its training and data code, which imports imgaug (broken under
numpy 2), and `pyiqa/archs/__init__.py` imports every architecture. The installed distribution's
files are used as they are: `importlib.util.find_spec` locates the package without running its
`__init__`, and the parent packages (`pyiqa`, `pyiqa.archs`, `pyiqa.utils`, `pyiqa.data`,
`pyiqa.matlab_utils`) are registered as bare namespaces over their real folders, so that importing
`pyiqa.archs.musiq_arch` runs only that file and the modules it imports (`arch_util`,
`utils/registry.py`, `utils/download_util.py`, `matlab_utils/padding.py`,
`data/multiscale_trans_util.py`, `maniqa_swin.py`, `clip_model.py`, ...).

Two more interceptions: openai-clip 1.0.1 (CLIPIQA's tokenizer) imports `packaging` through
`pkg_resources`, which recent setuptools no longer ships, so a `pkg_resources` exposing the
`packaging` library is registered when it is absent; and nothing here downloads (the tests patch
each download with a file they wrote)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np

PACKAGES = ("pyiqa", "pyiqa.archs", "pyiqa.utils", "pyiqa.data", "pyiqa.matlab_utils")


def _root() -> Path:
    if "pyiqa" in sys.modules:
        return Path(sys.modules["pyiqa"].__path__[0])
    spec = importlib.util.find_spec("pyiqa")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyiqa is not installed; the test extra installs pyiqa==0.1.10")
    return Path(list(spec.submodule_search_locations)[0])


def arch(name: str) -> types.ModuleType:
    """`pyiqa.archs.<name>` (e.g. 'musiq_arch'), importing nothing of pyiqa it does not import."""
    root = _root()
    for pkg in PACKAGES:
        if pkg not in sys.modules:
            module = types.ModuleType(pkg)
            module.__path__ = [str(root.joinpath(*pkg.split(".")[1:]))]
            sys.modules[pkg] = module
    # musiq_arch imports ExactPadding2d and exact_padding_2d from the matlab_utils package itself.
    padding = importlib.import_module("pyiqa.matlab_utils.padding")
    for attr in ("ExactPadding2d", "exact_padding_2d"):
        setattr(sys.modules["pyiqa.matlab_utils"], attr, getattr(padding, attr))
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        import packaging.version
        shim = types.ModuleType("pkg_resources")
        shim.packaging = packaging
        sys.modules["pkg_resources"] = shim
    return importlib.import_module(f"pyiqa.archs.{name}")


# ---- random weights in the release files' formats, and pyiqa's networks reading them --------

def nchw(img: np.ndarray):
    """uint8 HxWx3 -> [1, 3, H, W] in [0, 1], as pyiqa's imread2tensor (to_tensor) gives it."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255)[None]


def randomize_norms(model) -> None:
    """Trained-looking normalisation layers: the default ones are the identity (and CLIP's init
    zeroes each bottleneck's last BatchNorm, which would leave that branch untested)."""
    import torch
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


def write_clip_rn50(path, seed: int = 0) -> None:
    """A random CLIP RN50 as OpenAI ships it: a traced TorchScript archive with float16 weights."""
    import torch
    torch.manual_seed(seed)
    model = arch("clip_model").CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12).eval()
    randomize_norms(model)
    with torch.no_grad():
        model.visual.attnpool.positional_embedding.normal_(0, 0.02)
        model.logit_scale.fill_(np.log(100.0))  # the trained value (CLIP clamps it at 100)
        traced = torch.jit.trace(model, (torch.rand(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)),
                                 check_trace=False)
    traced.half().save(str(path))


def clipiqa_reference(path):
    """pyiqa's CLIPIQA (RN50) with CLIP's download returning `path`."""
    clip_model = arch("clip_model")
    with mock.patch.object(clip_model, "_download", lambda url, root: str(path)):
        return arch("clipiqa_arch").CLIPIQA().eval()


def write_musiq(path, seed: int = 0) -> None:
    """A random MUSIQ (KonIQ head) state dict, as pyiqa's release file holds it."""
    import torch
    torch.manual_seed(seed)
    net = arch("musiq_arch").MUSIQ(pretrained=False)
    randomize_norms(net)
    with torch.no_grad():
        net.transformer_encoder.cls.normal_(0, 0.5)
    torch.save(net.state_dict(), path)


def musiq_reference(path):
    """pyiqa's MUSIQ as `musiq` (KonIQ) builds it, reading `path`."""
    return arch("musiq_arch").MUSIQ(pretrained="koniq10k", pretrained_model_path=str(path)).eval()


def _maniqa(path, **kwargs):
    """pyiqa's MANIQA as `maniqa-pipal` builds it, its downloads intercepted: timm's ViT is created
    without weights (`pretrained=True` intercepted) and the PIPAL file is `path`."""
    maniqa_arch, arch_util = arch("maniqa_arch"), arch("arch_util")
    create = maniqa_arch.timm.create_model
    with mock.patch.object(maniqa_arch.timm, "create_model", lambda name, pretrained: create(name, pretrained=False)), \
            mock.patch.object(arch_util, "load_file_from_url", lambda url: str(path)):
        return maniqa_arch.MANIQA(train_dataset="pipal", **kwargs).eval()


def write_maniqa(path, seed: int = 0) -> None:
    """A random MANIQA (ViT included) state dict, as pyiqa's PIPAL release file holds it."""
    import torch
    torch.manual_seed(seed)
    net = _maniqa(path, pretrained=False)
    randomize_norms(net)
    torch.save(net.state_dict(), path)


def maniqa_reference(path, test_sample: int = 20):
    """pyiqa's `maniqa-pipal` reading `path`, `test_sample` crops per image."""
    return _maniqa(path, test_sample=test_sample)
