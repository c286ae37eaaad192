"""What a training config points at, checked before any work: the SD-2.1-base weights, the
LPIPS loss weights, the training images and the validation set. Each missing piece is one
`ConfigError` that says what to obtain and which config field to set.

A config without `sd_path` trains a small random SD-shaped model written into the workdir, and one
with `data.skimage_photos` trains on photographs that scikit-image ships (`configs/tiny.py`): they
show the pipeline on any machine; real results need the real weights and data.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from osediff_jax.data import hq_images
from osediff_jax.files import images
from osediff_jax.metrics.lpips import BACKBONE_FILES, LIN_FILES, lpips_params
from osediff_jax.training.config import ConfigError
from osediff_jax.weights import bundle, ram_format, random_sd
from osediff_jax.weights.torch_format import CheckpointError

# scikit-image's bundled colour photographs (no download): training and validation images.
SKIMAGE_TRAIN = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
SKIMAGE_VAL = ("chelsea", "colorwheel")
BACKBONE_NAMES = {"vgg": "VGG16", "alex": "AlexNet"}


def _path(text: str) -> Path:
    return Path(text).expanduser().absolute()


def sd_folder(config: ml_collections.ConfigDict) -> Path | None:
    """`config.sd_path`, checked to exist; None for the random model."""
    if not config.sd_path:
        return None
    path = _path(config.sd_path)
    if not path.is_dir():
        raise ConfigError(f"config.sd_path: {config.sd_path}: no such folder; obtain SD-2.1-base in diffusers format "
                          "(a local copy of stabilityai/stable-diffusion-2-1-base) and set --config.sd_path=DIR")
    return path


def load_model(config: ml_collections.ConfigDict, workdir: Path) -> Any:
    """The SD-2.x model of `config.sd_path` (a diffusers folder or our bundle), or a random small one."""
    path = sd_folder(config)
    if path is None:
        path = workdir / "random_sd"
        if not path.is_dir():
            random_sd.write_random_sd(path, seed=config.seed)
        print(f"model: a small RANDOM SD-shaped model ({path}); real results need SD-2.1-base "
              "(set --config.sd_path)", file=sys.stderr)
    try:
        return bundle.load(path, dtype=jnp.dtype(config.dtype))
    except CheckpointError as e:
        raise ConfigError(f"config.sd_path: {e}") from None


def load_lpips(config: ml_collections.ConfigDict) -> dict:
    """LPIPS of the generator's loss (`config.train.lpips_net`) from `config.lpips_weights`; a random
    backbone only with a random model (the tiny config)."""
    net = config.train.lpips_net
    if config.random_lpips:
        if config.sd_path:
            raise ConfigError("config.random_lpips: a random LPIPS backbone is only for the random model (empty "
                              f"config.sd_path); set --config.lpips_weights=DIR with the {BACKBONE_NAMES[net]} "
                              "and LPIPS weights")
        return lpips_params(net, config.lpips_weights or None, random_backbone=True, seed=config.seed)
    folder = _path(config.lpips_weights) if config.lpips_weights else None
    needed = [BACKBONE_FILES[net], LIN_FILES[net]]
    if config.val.every:
        needed += [f for f in (BACKBONE_FILES["alex"], LIN_FILES["alex"]) if f not in needed]
    missing = [f for f in needed if folder is None or not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"config.lpips_weights: {config.lpips_weights or '(unset)'}: missing {', '.join(missing)}; "
                          f"put torchvision's ImageNet {BACKBONE_NAMES[net]} ({BACKBONE_FILES[net]}) and the lpips "
                          f"package's lpips/weights/v0.1/{net}.pth as {LIN_FILES[net]} (validation: AlexNet "
                          "alexnet-owt-7be5be79.pth and alex.pth as lpips_alex.pth) in a folder and set "
                          "--config.lpips_weights=DIR")
    return lpips_params(net, folder)


def load_ram(config: ml_collections.ConfigDict) -> tuple[Any, Any] | None:
    """(RAM module, params) of `config.ram_path` for the authors' training prompts, or None."""
    if not config.ram_path:
        return None
    path = _path(config.ram_path)
    if not path.exists():
        raise ConfigError(f"config.ram_path: {config.ram_path}: no such file or folder; obtain RAM's "
                          "ram_swin_large_14m.pth (optionally `python -m osediff_jax.convert ram`) and set "
                          "--config.ram_path, or --config.ram_path='' for the fixed prompt (config.train.prompt)")
    try:
        return ram_format.load(path)
    except (CheckpointError, ValueError) as e:
        raise ConfigError(f"config.ram_path: {e}") from None


def _write_photos(folder: Path, names: tuple[str, ...]) -> Path:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("config.data.skimage_photos: the photographs come from scikit-image: "
                          "pip install 'osediff-jax[demo]'") from None
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (folder / f"{name}.png").exists():
            images.write_png(folder / f"{name}.png", np.asarray(getattr(data, name)())[..., :3])
    return folder


def build_dataset(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """The built training shards (built once, then reused) of `config.data.sources`."""
    d = config.data
    if d.skimage_photos:
        sources = [hq_images.Source(str(_write_photos(workdir / "photos" / "train", SKIMAGE_TRAIN)))]
        data_dir = workdir / "tfds"
    else:
        if not d.sources:
            raise ConfigError("config.data.sources: empty; set --config.data.sources=\"('LSDIR/HR', 'ffhq:10000')\" "
                              "(folders or list files of HQ images, ':N' keeps the first N)")
        sources = []
        for s in d.sources:
            path, _, limit = s.rpartition(":") if s.rpartition(":")[2].isdigit() else (s, "", "")
            sources.append(hq_images.Source(str(_path(path)), int(limit) if limit else None))
        data_dir = _path(d.dir)
    try:
        folder, report = hq_images.build_dataset(sources, data_dir, d.name, min_size=d.crop)
    except FileNotFoundError as e:
        raise ConfigError(f"config.data.sources: {e}; obtain the HQ images (the paper: LSDIR and the first 10k FFHQ "
                          "faces) and set --config.data.sources") from None
    if report.stored < 1:
        raise ConfigError(f"config.data.sources: no usable image in {[s.path for s in sources]} ({report.summary()})")
    return folder


def validation_dirs(config: ml_collections.ConfigDict, workdir: Path) -> tuple[Path, Path | None]:
    """(HR folder, LQ folder or None) of the validation set."""
    v = config.val
    if config.data.skimage_photos and not v.hr_dir:
        return _write_photos(workdir / "photos" / "val", SKIMAGE_VAL), None
    if not v.hr_dir or not _path(v.hr_dir).is_dir():
        raise ConfigError(f"config.val.hr_dir: {v.hr_dir or '(unset)'}: no such folder; set --config.val.hr_dir to "
                          "HR images (with --config.val.lq_dir for LQ/HR pairs), or --config.val.every=0")
    if v.lq_dir and not _path(v.lq_dir).is_dir():
        raise ConfigError(f"config.val.lq_dir: {v.lq_dir}: no such folder")
    return _path(v.hr_dir), _path(v.lq_dir) if v.lq_dir else None
