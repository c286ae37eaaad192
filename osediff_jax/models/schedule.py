"""The DDPM noise schedule of SD-2.x, computed in float32 as diffusers computes it."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

SUPPORTED = {
    "beta_schedule": ("scaled_linear", "linear"),
    "prediction_type": ("epsilon",),
}


def _torch_linspace(start: float, end: float, n: int) -> np.ndarray:
    """float32 `torch.linspace`, bit for bit: float32 ends and step, halves filled from each end."""
    s, e = np.float64(np.float32(start)), np.float64(np.float32(end))
    step = np.float64(np.float32(e) - np.float32(s)) / np.float64(np.float32(n - 1))
    step = np.float64(np.float32(step))
    i = np.arange(n)
    return np.where(i < n // 2, s + step * i, e - step * (n - 1 - i)).astype(np.float32)


def alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
) -> np.ndarray:
    """alpha_bar_t for t in [0, num_train_timesteps), float32 (diffusers' arithmetic order)."""
    if beta_schedule == "scaled_linear":
        betas = _torch_linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps) ** 2
    elif beta_schedule == "linear":
        betas = _torch_linspace(beta_start, beta_end, num_train_timesteps)
    else:
        raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; expected one of "
                         f"{SUPPORTED['beta_schedule']}")
    # torch's CPU cumprod accumulates float32 in float64; diffusers computes it that way.
    return np.cumprod((1.0 - betas).astype(np.float64), axis=0).astype(np.float32)


def alphas_cumprod_from_config(config: Mapping[str, Any], source: str = "scheduler config") -> np.ndarray:
    """alpha_bar from a diffusers `scheduler_config.json` dict; unsupported values are errors."""
    for key, allowed in SUPPORTED.items():
        value = config.get(key, allowed[0])
        if value not in allowed:
            raise ValueError(f"{source}: {key}={value!r} is not supported; expected one of {allowed}")
    if config.get("trained_betas") is not None:
        raise ValueError(f"{source}: trained_betas is not supported; expected null")
    return alphas_cumprod(
        int(config.get("num_train_timesteps", 1000)),
        float(config.get("beta_start", 0.00085)),
        float(config.get("beta_end", 0.012)),
        config.get("beta_schedule", "scaled_linear"),
    )
