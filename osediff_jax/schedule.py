"""The DDPM noise schedule of SD-2.x, computed in float32 as diffusers computes it."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

SUPPORTED = {
    "beta_schedule": ("scaled_linear", "linear"),
    "prediction_type": ("epsilon",),
}


def alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
) -> np.ndarray:
    """alpha_bar_t for t in [0, num_train_timesteps), float32 (diffusers' arithmetic order)."""
    if beta_schedule == "scaled_linear":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float32) ** 2
    elif beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float32)
    else:
        raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; expected one of "
                         f"{SUPPORTED['beta_schedule']}")
    return np.cumprod(1.0 - betas, axis=0).astype(np.float32)


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
