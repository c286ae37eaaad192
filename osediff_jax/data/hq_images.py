"""Training data: folders of HQ images -> array_record shards -> a grain loader of GT crops.

Building is a tensorflow-datasets builder that runs without TensorFlow: images are decoded once
(`osediff_jax.files.images.read_rgb`: EXIF orientation, gray and alpha handled) and stored as zlib-
compressed uint8 tensors (tfds' Image feature would need TensorFlow to encode). Files that are
not images, cannot be read, or are smaller than the crop are counted and listed in
`build_report.json` beside the shards, never silently dropped. Reading goes through the tfds
array_record data source and grain: random crop, horizontal flip (p = 0.5), per-host sharding,
and an iterator whose state can be saved and restored to resume the exact sequence.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from osediff_jax.files.atomic import write_json
from osediff_jax.files.images import SUFFIXES, ImageReadError, read_rgb

REPORT = "build_report.json"


@dataclasses.dataclass(frozen=True)
class Source:
    """A folder searched recursively in sorted order (LSDIR's and FFHQ's layouts both nest images
    in numbered subfolders), or a text file listing image paths one per line (the reference's
    list files; relative paths are relative to the list file). `limit` keeps the first images
    (OSEDiff: the first 10k FFHQ faces)."""

    path: str
    limit: int | None = None


@dataclasses.dataclass
class BuildReport:
    """What the build stored and what it left out, with the files named."""

    stored: int = 0
    non_image: list[str] = dataclasses.field(default_factory=list)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    too_small: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.stored} images stored; left out: {len(self.too_small)} smaller than the crop, "
            f"{len(self.unreadable)} unreadable, {len(self.non_image)} not images"
        )


def _candidates(source: Source) -> tuple[list[Path], list[Path]]:
    """(image paths, non-image files) of one source."""
    path = Path(source.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines()]
        files = [Path(line) if os.path.isabs(line) else path.parent / line for line in lines if line]
    else:
        raise FileNotFoundError(f"data source {path}: no such folder or list file")
    images = [p for p in files if p.suffix.lower() in SUFFIXES]
    others = [p for p in files if p.suffix.lower() not in SUFFIXES]
    return images[: source.limit] if source.limit is not None else images, others


class HQImagesConfig(tfds.core.BuilderConfig):
    """Which folders or list files to store, and the smallest usable side (the GT crop)."""

    def __init__(self, *, name: str, sources: tuple[Source, ...], min_size: int, **kwargs):
        super().__init__(name=name, **kwargs)
        self.sources = tuple(sources)
        self.min_size = int(min_size)


class HQImages(tfds.core.GeneratorBasedBuilder):
    """HQ training images (LSDIR, FFHQ, or list files) as array_record shards."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []  # always built with an explicit HQImagesConfig

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="HQ images decoded to RGB uint8 for OSEDiff training.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib"),
                    "path": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        report = BuildReport()
        self.build_report = report
        for source in self.builder_config.sources:
            images, others = _candidates(source)
            report.non_image += [str(p) for p in others]
            for path in images:
                try:
                    rgb = read_rgb(path)
                except ImageReadError:
                    report.unreadable.append(str(path))
                    continue
                if min(rgb.shape[:2]) < self.builder_config.min_size:
                    report.too_small.append(str(path))
                    continue
                report.stored += 1
                yield str(path), {"image": rgb, "path": str(path)}


def build_dataset(
    sources: list[Source] | tuple[Source, ...], data_dir: str | os.PathLike, name: str, min_size: int = 512
) -> tuple[Path, BuildReport]:
    """Build (or reuse) the shards of `sources` under data_dir; returns the dataset folder and the
    build report (also saved there as build_report.json)."""
    if not sources:
        raise ValueError("build_dataset needs at least one Source")
    config = HQImagesConfig(name=name, sources=tuple(sources), min_size=min_size)
    builder = HQImages(config=config, data_dir=str(data_dir), file_format="array_record")
    folder = Path(builder.data_dir)
    if (folder / REPORT).exists():
        report = BuildReport(**json.loads((folder / REPORT).read_text()))
    else:
        builder.download_and_prepare()
        report = builder.build_report
        write_json(folder / REPORT, dataclasses.asdict(report))
    print(f"{folder}: {report.summary()}")
    return folder, report


class CropFlip(grain.transforms.RandomMap):
    """Random crop to crop x crop (torchvision RandomCrop) and horizontal flip with p = 0.5."""

    def __init__(self, crop: int):
        self.crop = crop

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, path = element["image"], element["path"]
        path = path.decode() if isinstance(path, bytes) else str(path)
        h, w = image.shape[:2]
        if h < self.crop or w < self.crop:
            raise ValueError(f"{path}: {h}x{w} image is smaller than the crop {self.crop}")
        top = int(rng.integers(0, h - self.crop + 1))
        left = int(rng.integers(0, w - self.crop + 1))
        gt = image[top : top + self.crop, left : left + self.crop]
        if rng.random() < 0.5:
            gt = gt[:, ::-1]
        return {"gt": np.ascontiguousarray(gt), "path": path}


def make_loader(
    dataset_dir: str | os.PathLike,
    batch_size: int,
    crop: int = 512,
    seed: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = None,
    worker_count: int = 0,
) -> grain.DataLoader:
    """Batches {'gt': uint8 [B, crop, crop, 3], 'path': [B]} from a built dataset folder.

    Shuffled per epoch from `seed`; sharded by host (jax.process_index / process_count unless
    given); `iter(loader)` has get_state() / set_state() for exact resumption.
    """
    source = tfds.builder_from_directory(str(dataset_dir)).as_data_source()["train"]
    if shard_index is None or shard_count is None:
        shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    else:
        shard = grain.sharding.ShardOptions(shard_index=shard_index, shard_count=shard_count, drop_remainder=True)
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=shard, shuffle=True, num_epochs=num_epochs, seed=seed
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[CropFlip(crop), grain.transforms.Batch(batch_size, drop_remainder=True)],
        worker_count=worker_count,
    )

