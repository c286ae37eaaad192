"""Shared by the degradation tests: basicsr 1.4.2 (the reference) and real photographs.

basicsr's `degradations` imports `torchvision.transforms.functional_tensor`, which torchvision has
removed; registering a module of that name with the `rgb_to_grayscale` it needs lets it import.
Install: `pip install --no-deps --no-build-isolation basicsr==1.4.2 opencv-python-headless`.
"""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torchvision.transforms.functional as _tvf

from osediff_jax.imageio import read_rgb

if "torchvision.transforms.functional_tensor" not in sys.modules:
    _shim = types.ModuleType("torchvision.transforms.functional_tensor")
    _shim.rgb_to_grayscale = _tvf.rgb_to_grayscale
    sys.modules["torchvision.transforms.functional_tensor"] = _shim

from basicsr.data import degradations  # noqa: E402
from basicsr.utils import diffjpeg  # noqa: E402
from basicsr.utils.img_process_util import filter2D  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
HR = SHARED / "data" / "realsr" / "HR"

__all__ = ["degradations", "diffjpeg", "filter2D", "photos"]


def photos(n: int, size: int | None = None, offset: int = 0) -> np.ndarray:
    """n RealSR HR photographs [n, H, W, 3] uint8, centre-cropped to size x size if given."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not present")
    files = sorted(HR.glob("*.png"))[offset : offset + n]
    assert len(files) == n, f"expected {n} PNGs in {HR}, found {len(files)}"
    images = [read_rgb(f) for f in files]
    if size is not None:
        images = [im[(im.shape[0] - size) // 2 :][:size, (im.shape[1] - size) // 2 :][:, :size] for im in images]
    return np.stack(images)
