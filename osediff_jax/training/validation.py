"""Validation while training (the authors' release has none): the generator as it stands, run by
`sr_fn` on a fixed set of LQ/HR pairs, scored with the metric registry's PSNR, SSIM and LPIPS,
and shown as LQ | SR | HR strips.

The set is a folder of LQ images beside a folder of HR images (paired by file stem), or HR images
degraded once with a fixed seed by the training degradation (without resizing back: the LQ is
what a user would upscale). Every HR is centre-cropped to `crop` (its LQ to crop / scale) so that
the images batch together; the LQ is upsampled with PIL bicubic as `upscale` does.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.data import degradation
from osediff_jax.files import images
from osediff_jax.inference.sr import make_sr_fn
from osediff_jax.inference.upsample import upsample
from osediff_jax.metrics.lpips import lpips_distance, lpips_params
from osediff_jax.metrics.registry import METRICS
from osediff_jax.models import lora
from osediff_jax.training.export import host


@dataclasses.dataclass
class ValidationSet:
    names: list[str]
    lq: np.ndarray  # uint8 [N, crop / scale, crop / scale, 3]
    hr: np.ndarray  # uint8 [N, crop, crop, 3]


def _centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def _read(folder: Path, count: int, size: int) -> dict[str, np.ndarray]:
    files = images.list_images(folder)[:count] if count else images.list_images(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no images")
    out = {}
    for f in files:
        rgb = images.read_rgb(f)
        if min(rgb.shape[:2]) < size:
            raise ValueError(f"{f}: {rgb.shape[1]}x{rgb.shape[0]} is smaller than the validation crop {size}")
        out[f.stem] = _centre(rgb, size)
    return out


def load_set(hr_dir: str | Path, lq_dir: str | Path | None, crop: int, count: int, seed: int,
             cfg: degradation.DegradationConfig = degradation.DegradationConfig()) -> ValidationSet:
    """The fixed validation set (see the module's docstring); the first `count` HR images (0: all)."""
    hr = _read(Path(hr_dir), count, crop)
    names = sorted(hr)
    hr_batch = np.stack([hr[n] for n in names])
    if lq_dir:
        lq = _read(Path(lq_dir), 0, crop // cfg.scale)
        missing = [n for n in names if n not in lq]
        if missing:
            raise FileNotFoundError(f"{lq_dir}: no LQ image for {missing[:3]}")
        lq_batch = np.stack([lq[n] for n in names])
    else:
        small = dataclasses.replace(cfg, resize_back=False)
        lq_f, _ = jax.jit(degradation.degrade, static_argnums=2)(jax.random.key(seed), hr_batch, small)
        lq_batch = images.from_float(np.asarray(lq_f))
    return ValidationSet(names, lq_batch, hr_batch)


def make_scorer(lpips_weights: str | None, random_lpips: bool) -> Callable[[np.ndarray, np.ndarray], dict]:
    """scores(sr, hr) -> {"psnr", "ssim", "lpips"} means over uint8 batches, from the registry's
    metrics; `random_lpips` replaces LPIPS-alex's weights by a random backbone (said on stderr)."""
    psnr, ssim = METRICS["psnr"].load(None), METRICS["ssim"].load(None)
    if random_lpips:
        params = jax.device_put(lpips_params("alex", lpips_weights, random_backbone=True))
        lp = lambda p, g: float(lpips_distance(params, images.to_float(p)[None] * 2 - 1,
                                               images.to_float(g)[None] * 2 - 1)[0])
        print("validation LPIPS: random AlexNet backbone, values are not LPIPS", file=sys.stderr)
    else:
        lp = METRICS["lpips"].load(lpips_weights)

    def scores(sr: np.ndarray, hr: np.ndarray) -> dict:
        per = [(psnr(s, h), ssim(s, h), lp(s, h)) for s, h in zip(sr, hr)]
        return dict(zip(("psnr", "ssim", "lpips"), map(float, np.mean(per, axis=0))))

    return scores


def make_generator(model: Any, rank: int) -> Callable[..., jax.Array]:
    """Jitted sr(gen, frozen, lq, prompt_embeds) -> SR in [0, 1]: the generator of a train state
    (`state["gen"]`) merged into the frozen base weights, as inference merges `osediff.pkl`."""
    sr_fn = make_sr_fn(model.modules["unet"], model.modules["vae"], model.alphas_cumprod)

    def sr(gen, frozen, lq, prompt_embeds):
        unet = {**frozen["unet"], "conv_in": jax.tree.map(lambda a, b: a.astype(b.dtype), gen["conv_in"],
                                                           frozen["unet"]["conv_in"])}
        params = {"unet": lora.merge(unet, gen["unet_lora"], rank), "vae": lora.merge(frozen["vae"], gen["vae_lora"], rank)}
        return sr_fn(params, lq, prompt_embeds)

    return jax.jit(sr)


def run(generator: Callable, gen: Any, frozen: dict, vset: ValidationSet, scores: Callable, scale: int,
        place: Callable = jnp.asarray, batch: int = 4) -> tuple[dict, np.ndarray, np.ndarray]:
    """(scores, SR uint8 [N, crop, crop, 3], strips uint8 [N * crop, 3 * crop, 3]: LQ | SR | HR);
    `place` puts an LQ batch where `gen` and `frozen` are (every device of the mesh)."""
    up = np.stack([upsample(x, scale) for x in vset.lq])
    sr = []
    for i in range(0, len(up), batch):
        out = generator(gen, frozen, place(up[i:i + batch]), frozen["prompt_embeds"])
        sr.append(images.from_float(host(out).astype(np.float32)))
    sr = np.concatenate(sr)
    lq_shown = images.from_float(up)
    strips = np.concatenate([np.concatenate([a, b, c], axis=1) for a, b, c in zip(lq_shown, sr, vset.hr)])
    return scores(sr, vset.hr), sr, strips
