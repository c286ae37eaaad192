"""Builds diffusers/transformers reference models with random weights and saves them as real
diffusers folders, for the parity tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from tests.references import SHARED

# OSEDIFF_SD21_BASE: another copy of these configs, for machines without ../shared (benchmarks/gpu.sh).
SHARED_SD = Path(os.environ.get("OSEDIFF_SD21_BASE") or SHARED / "reference" / "sd21-base")

SMALL_UNET = dict(
    block_out_channels=(32, 64, 64), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(2, 4, 4), cross_attention_dim=24, norm_num_groups=8,
    use_linear_projection=True, transformer_layers_per_block=(1, 2, 1), sample_size=16,
)
SMALL_VAE = dict(
    block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
)


def randomize_(module: torch.nn.Module, seed: int, std: float = 0.5) -> torch.nn.Module:
    """Non-trivial random values for every parameter (norm affines too, which init leaves at 1/0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            scale = std / np.sqrt(fan_in) if p.ndim > 1 else 0.1
            base = 1.0 if name.endswith("weight") and p.ndim == 1 else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return module.eval()


def shared_config(name: str) -> dict:
    return json.loads((SHARED_SD / name / "config.json").read_text())


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())
