"""The trained generator as files others read, written atomically under `workdir/export/step_N/`:

    osediff/      our OSEDiff checkpoint (`osediff_pkl.save`): LoRA trees, conv_in, ranks, lists
    merged/       SD-2.1 with the LoRA folded in, for `python -m osediff_jax.upscale --checkpoint`
    osediff.pkl   the authors' format (their `test_osediff.py` reads it); written when PyTorch is
                  installed, otherwise the log says how to write it later with `convert export-osediff`
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from osediff_jax.models import lora
from osediff_jax.weights import osediff_pkl


def host(tree: Any) -> Any:
    """Every array of `tree` as a whole numpy array on this host (gathered across processes)."""
    if jax.process_count() > 1:
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, tree)


def weights(gen: Any, model: Any, rank: int) -> osediff_pkl.OSEDiffWeights:
    """The generator's trainable tree (`state["gen"]`) as OSEDiff weights over `model`'s base UNet/VAE."""
    unet, vae = model.params["unet"], model.params["vae"]
    gen = host(gen)
    return osediff_pkl.OSEDiffWeights(gen["unet_lora"], gen["vae_lora"], gen["conv_in"], rank, rank,
                                      lora.unet_target_lists(unet), lora.vae_target_list(vae))


def export(w: osediff_pkl.OSEDiffWeights, model: Any, folder: Path) -> list[str]:
    """Writes `folder/{osediff, merged, osediff.pkl}`; returns the lines to log."""
    osediff_pkl.save(w, folder / "osediff")
    osediff_pkl.save_merged_model(model, w, folder / "merged")
    lines = [f"exported {folder}/osediff and {folder}/merged (python -m osediff_jax.upscale --checkpoint "
             f"{folder}/merged ...)"]
    if importlib.util.find_spec("torch") is not None:
        osediff_pkl.write_pkl(w, folder / "osediff.pkl")
        lines.append(f"exported {folder}/osediff.pkl (the authors' format)")
    else:
        lines.append(f"osediff.pkl not written (needs PyTorch): python -m osediff_jax.convert export-osediff "
                     f"--src {folder}/osediff --dst {folder}/osediff.pkl")
    return lines
