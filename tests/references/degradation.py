"""Shared by the degradation tests and benchmark: basicsr 1.4.2 (the reference), the authors'
degradation pipeline built from it, and real photographs.

basicsr's `degradations` imports `torchvision.transforms.functional_tensor`, which torchvision has
removed; registering a module of that name with the `rgb_to_grayscale` it needs lets it import.
Install: `pip install --no-deps --no-build-isolation basicsr==1.4.2 opencv-python-headless`.
"""

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as _tvf

from osediff_jax.files.images import read_rgb

if "torchvision.transforms.functional_tensor" not in sys.modules:
    _shim = types.ModuleType("torchvision.transforms.functional_tensor")
    _shim.rgb_to_grayscale = _tvf.rgb_to_grayscale
    sys.modules["torchvision.transforms.functional_tensor"] = _shim

from basicsr.data import degradations  # noqa: E402
from basicsr.utils import diffjpeg  # noqa: E402
from basicsr.utils.img_process_util import filter2D  # noqa: E402

from tests.references import SHARED

HR = SHARED / "data" / "realsr" / "HR"

__all__ = ["NoiseRecorder", "degradations", "diffjpeg", "filter2D", "photos", "reference_degrade", "reference_kernel"]


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


# ---------------------------------------------------------------- the reference pipeline


def reference_kernel(kp, i: int, final: bool = False) -> torch.Tensor:
    """Sample i's kernel (osediff_jax KernelParams) from basicsr's constructors, padded to 21x21."""
    from osediff_jax.data.degradation import PULSE, SINC

    kind, size = int(kp.kind[i]), int(kp.size[i])
    sx, sy, theta, beta, omega = (float(getattr(kp, f)[i]) for f in ("sigma_x", "sigma_y", "theta", "beta", "omega"))
    if kind == PULSE:
        k = np.zeros((21, 21))
        k[10, 10] = 1
        return torch.FloatTensor(k)
    if kind == SINC:
        k = degradations.circular_lowpass_kernel(omega, size, pad_to=21 if final else False)
    elif kind in (0, 1):
        k = degradations.bivariate_Gaussian(size, sx, sy, theta, isotropic=kind == 0)
    elif kind in (2, 3):
        k = degradations.bivariate_generalized_Gaussian(size, sx, sy, theta, beta, isotropic=kind == 2)
    else:
        k = degradations.bivariate_plateau(size, sx, sy, theta, beta, isotropic=kind == 4)
    return torch.FloatTensor(np.pad(k, (21 - k.shape[0]) // 2))


class NoiseRecorder:
    """Records basicsr's noise draws in call order: torch.randn results, torch.poisson counts minus
    their rate."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(torch, "randn", self._wrap(torch.randn, centred=False))
        monkeypatch.setattr(torch, "poisson", self._wrap(torch.poisson, centred=True))

    def _wrap(self, fn, centred):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            # Poisson: keep counts - rate, the draw itself, free of the rate's 8-bit rounding.
            self.calls.append(out - args[0] if centred else out.clone())
            return out

        return wrapped

    def take(self) -> list[torch.Tensor]:
        calls, self.calls = self.calls, []
        return calls


def _noise(out, sp, i, recorder, stage_draws):
    gray = torch.tensor([float(sp.gray[i])])
    if sp.gaussian[i]:
        out = degradations.add_gaussian_noise_pt(
            out, sigma=torch.tensor([float(sp.sigma[i])]), gray_noise=gray, clip=True
        )
    else:
        out = degradations.add_poisson_noise_pt(
            out, scale=torch.tensor([float(sp.poisson_scale[i])]), gray_noise=gray, clip=True
        )
    if recorder is not None:
        *gray_draw, color_draw = recorder.take()  # basicsr draws the gray field first, when needed
        h, w = out.shape[2:]
        mono = gray_draw[0].reshape(h, w).numpy() if gray_draw else np.zeros((h, w), np.float32)
        stage_draws.append((bool(sp.gaussian[i]), color_draw[0].permute(1, 2, 0).numpy(), mono))
    return out


def reference_degrade(gt: torch.Tensor, p, i: int, recorder: NoiseRecorder | None = None):
    """Sample i of osediff_jax DegradationParams p through the authors' `degrade_process`
    (cswry/OSEDiff dataloaders/realesrgan.py, resize_bak=True) built from basicsr's operations.

    gt: [1, 3, H, W] float32. Returns (lq [1, 3, H, W], per-stage (gaussian, colour, gray) draws
    when a recorder is given)."""
    from osediff_jax.data.degradation import KEEP
    from osediff_jax.data.resize import MODES

    jpeger = diffjpeg.DiffJPEG(differentiable=False)
    h, w = gt.shape[2:]
    draws = []
    out = filter2D(gt, reference_kernel(p.kernel1, i)[None])
    s1 = p.stage1
    scale = float(s1.scale[i]) if s1.resize[i] != KEEP else 1
    out = F.interpolate(out, scale_factor=scale, mode=MODES[int(s1.mode[i])])
    out = _noise(out, s1, i, recorder, draws)
    out = jpeger(torch.clamp(out, 0, 1), quality=torch.tensor([float(s1.quality[i])]))
    if p.second_blur[i]:
        out = filter2D(out, reference_kernel(p.kernel2, i)[None])
    s2 = p.stage2
    scale = float(s2.scale[i]) if s2.resize[i] != KEEP else 1
    out = F.interpolate(out, size=(int(h / 4 * scale), int(w / 4 * scale)), mode=MODES[int(s2.mode[i])])
    out = _noise(out, s2, i, recorder, draws)
    sinc = reference_kernel(p.sinc, i, final=True)[None]
    lq_mode = MODES[int(p.lq_mode[i])]
    quality = torch.tensor([float(s2.quality[i])])
    if p.resize_first[i]:
        out = filter2D(F.interpolate(out, size=(h // 4, w // 4), mode=lq_mode), sinc)
        out = jpeger(torch.clamp(out, 0, 1), quality=quality)
    else:
        out = jpeger(torch.clamp(out, 0, 1), quality=quality)
        out = filter2D(F.interpolate(out, size=(h // 4, w // 4), mode=lq_mode), sinc)
    out = F.interpolate(out, size=(h, w), mode=MODES[int(p.back_mode[i])])
    return torch.clamp((out * 255.0).round(), 0, 255) / 255.0, draws
