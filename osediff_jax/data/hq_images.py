"""Training data: folders of HQ images -> array_record shards -> a grain loader of GT crops.

Building is a tensorflow-datasets builder that runs without TensorFlow: images are decoded once
(`osediff_jax.files.images.read_rgb`: EXIF orientation, gray and alpha handled) and stored as zlib-
compressed uint8 tensors (tfds' Image feature would need TensorFlow to encode). Files that are
not images, cannot be read, or are smaller than the crop are counted and listed in
`build_report.json` beside the shards, never silently dropped. Reading goes through the tfds
array_record data source and grain: one global sequence of batches (random crop, horizontal flip
with p = 0.5) of which every process reads its rows, and an iterator whose state resumes the exact
sequence, also on another number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import grain
import jax
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


def _candidates(source: Source) -> tuple[list[tuple[Path, str]], list[Path]]:
    """([(image path, its name within the source)], non-image files) of one source. The name is the
    path relative to the folder, or the list file's line as written."""
    path = Path(source.path)
    if path.is_dir():
        files = [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*")) if p.is_file()]
    elif path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines()]
        files = [(Path(line) if os.path.isabs(line) else path.parent / line, line) for line in lines if line]
    else:
        raise FileNotFoundError(f"data source {path}: no such folder or list file")
    images = [(p, name) for p, name in files if p.suffix.lower() in SUFFIXES]
    others = [p for p, _ in files if p.suffix.lower() not in SUFFIXES]
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
        for index, source in enumerate(self.builder_config.sources):
            images, others = _candidates(source)
            report.non_image += [str(p) for p in others]
            for path, name in images:
                try:
                    rgb = read_rgb(path)
                except ImageReadError:
                    report.unreadable.append(str(path))
                    continue
                if min(rgb.shape[:2]) < self.builder_config.min_size:
                    report.too_small.append(str(path))
                    continue
                report.stored += 1
                # tfds orders the records by a hash of these keys: keys that do not depend on where the
                # sources sit give the same order to the same images built in any folder.
                yield f"{index}:{name}", {"image": rgb, "path": str(path)}


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


class GlobalBatches:
    """This process's slices of one global sequence of batches; `iter()` gives a `BatchIterator`."""

    def __init__(self, elements: grain.MapDataset, global_batch_size: int, process_index: int, process_count: int,
                 seed: int, num_threads: int):
        self.elements, self.global_batch_size, self.seed = elements, global_batch_size, seed
        self.local_batch_size = global_batch_size // process_count
        self.process_index, self.num_threads = process_index, num_threads
        self.num_batches = len(elements) // global_batch_size  # sys.maxsize // G when repeated forever

    def local_elements(self) -> grain.MapDataset:
        """Local element j is global element (j // L) * G + p * L + j % L: process p's rows of every batch."""
        g, n, p = self.global_batch_size, self.local_batch_size, self.process_index
        return grain.MapDataset.range(self.num_batches * n).map(lambda j: self.elements[(j // n) * g + p * n + j % n])

    def __iter__(self) -> BatchIterator:
        return BatchIterator(self)


class BatchIterator:
    """Local batches {'gt': uint8 [G / P, crop, crop, 3], 'path': [G / P]}, read by `num_threads` threads.

    get_state() is {"next_batch", "global_batch_size", "seed"}: JSON, the same on every process and for
    any process count, so set_state() continues the same global sequence on another number of processes.
    """

    def __init__(self, batches: GlobalBatches):
        self._batches = batches
        self._start(0)

    def _start(self, step: int) -> None:
        b = self._batches
        n = b.local_batch_size
        options = grain.ReadOptions(num_threads=b.num_threads, prefetch_buffer_size=max(2 * n, b.num_threads))
        self._next_batch = step
        self._it = iter(b.local_elements()[step * n:].to_iter_dataset(options).batch(n, drop_remainder=True))

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._it)
        self._next_batch += 1
        return batch

    def get_state(self) -> dict[str, int]:
        b = self._batches
        return {"next_batch": self._next_batch, "global_batch_size": b.global_batch_size, "seed": b.seed}

    def set_state(self, state: dict[str, int]) -> None:
        b = self._batches
        for key, want in (("global_batch_size", b.global_batch_size), ("seed", b.seed)):
            if state.get(key) != want:
                raise ValueError(f"loader state has {key}={state.get(key)!r}; this loader has {want}")
        self._start(int(state["next_batch"]))


def make_loader(
    dataset_dir: str | os.PathLike,
    global_batch_size: int,
    crop: int = 512,
    seed: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    num_threads: int = 8,
) -> GlobalBatches:
    """This process's slices of one global sequence of batches from a built dataset folder.

    The global sequence depends only on the dataset, `seed` and `global_batch_size`: the records are
    shuffled over the whole dataset, reshuffled each epoch, and batches run on across epochs (forever,
    or `num_epochs` then a last incomplete batch dropped); the crop and flip of each element draw from
    its global index. Process p of P (jax.process_index / process_count unless given) gets rows
    [p G / P, (p + 1) G / P) of every global batch, so the global batch at step k is the same for any
    number of processes. `iter(loader)` has get_state() / set_state() for exact resumption, also on
    another number of processes.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size}; expected a positive multiple of the process "
                         f"count {process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}; expected 0 <= index < process_count={process_count}")
    source = tfds.builder_from_directory(str(dataset_dir)).as_data_source()["train"]
    elements = (grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
                .random_map(CropFlip(crop)))
    return GlobalBatches(elements, global_batch_size, process_index, process_count, seed, num_threads)
