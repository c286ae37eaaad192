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
