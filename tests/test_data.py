"""Dataset builder (tfds, array_record, no TensorFlow) and grain loader."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from osediff_jax.data import hq_images
from osediff_jax.files.images import read_rgb, write_png

CROP = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """LSDIR-like nesting: good PNG/JPEG images, small ones, a corrupt one and non-image files."""
    root = tmp_path_factory.mktemp("hq")
    rng = np.random.default_rng(0)
    good = []
    for i in range(10):
        sub = root / f"{i // 4:07d}"
        h, w = int(rng.integers(CROP, 80)), int(rng.integers(CROP, 80))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 3 == 0:
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(sub / f"{i:07d}.jpg", quality=95)
            good.append(sub / f"{i:07d}.jpg")
        else:
            write_png(sub / f"{i:07d}.png", img)
            good.append(sub / f"{i:07d}.png")
    write_png(root / "small" / "tiny.png", rng.integers(0, 256, (CROP - 1, 100, 3), dtype=np.uint8))
    write_png(root / "small" / "narrow.png", rng.integers(0, 256, (100, 8, 3), dtype=np.uint8))
    (root / "0000000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "0000001" / "empty.jpg").write_bytes(b"")
    (root / "README.txt").write_text("not an image")
    (root / "0000002" / "meta.json").write_text("{}")
    return root, good


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    root, _ = folder
    return hq_images.build_dataset([hq_images.Source(str(root))], tmp_path_factory.mktemp("tfds"), "test", min_size=CROP)


def test_build_counts_and_reports_everything_left_out(folder, built):
    root, good = folder
    dataset_dir, report = built
    assert report.stored == len(good)
    assert sorted(report.too_small) == sorted(str(root / "small" / n) for n in ("narrow.png", "tiny.png"))
    assert sorted(report.unreadable) == sorted([str(root / "0000000" / "broken.png"), str(root / "0000001" / "empty.jpg")])
    assert sorted(report.non_image) == sorted([str(root / "README.txt"), str(root / "0000002" / "meta.json")])
    saved = json.loads((dataset_dir / hq_images.REPORT).read_text())
    assert saved["stored"] == len(good) and len(saved["unreadable"]) == 2
    assert any(p.name.startswith("hq_images-train.array_record") for p in dataset_dir.iterdir())


def test_stored_pixels_are_the_decoded_images(folder, built):
    _, good = folder
    source = tfds.builder_from_directory(str(built[0])).as_data_source()["train"]
    assert len(source) == len(good)
    for record in source:
        np.testing.assert_array_equal(record["image"], read_rgb(record["path"].decode()))


def test_list_file_source_with_limit(folder, tmp_path):
    root, good = folder
    listing = tmp_path / "list.txt"
    (tmp_path / "x").symlink_to(root)  # list entries relative to the list file's folder
    listing.write_text("\n".join(f"x/{p.relative_to(root)}" for p in good[:5]) + "\n")
    _, report = hq_images.build_dataset([hq_images.Source(str(listing), limit=3)], tmp_path / "tfds", "listed", min_size=CROP)
    assert report.stored == 3 and not report.unreadable and not report.too_small
    with pytest.raises(FileNotFoundError, match="no such folder"):
        hq_images.build_dataset([hq_images.Source(str(tmp_path / "missing"))], tmp_path / "tfds", "missing", min_size=CROP)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_loader_batches_crops_and_flips(built):
    loader = hq_images.make_loader(built[0], batch_size=4, crop=CROP, seed=1, shard_index=0, shard_count=1)
    batch = next(iter(loader))
    assert batch["gt"].shape == (4, CROP, CROP, 3) and batch["gt"].dtype == np.uint8
    # Each crop is a window of its source image, possibly mirrored.
    for gt, path in zip(batch["gt"], batch["path"]):
        img = read_rgb(path)
        found = any(
            np.array_equal(cand[t : t + CROP, l : l + CROP], gt)
            for cand in (img, img[:, ::-1])
            for t in range(img.shape[0] - CROP + 1)
            for l in range(img.shape[1] - CROP + 1)
        )
        assert found


def test_state_restore_resumes_the_exact_sequence(built):
    make = lambda: hq_images.make_loader(built[0], batch_size=3, crop=CROP, seed=5, shard_index=0, shard_count=1)
    it = iter(make())
    _take(it, 4)  # mid-epoch (10 records, 3 per batch) and into the second epoch below
    state = it.get_state()
    expected = _take(it, 5)
    restored = iter(make())
    restored.set_state(state)
    for a, b in zip(expected, _take(restored, 5)):
        np.testing.assert_array_equal(a["gt"], b["gt"])
        assert list(a["path"]) == list(b["path"])
    again = _take(iter(make()), 4)
    first = _take(iter(make()), 4)
    for a, b in zip(again, first):
        np.testing.assert_array_equal(a["gt"], b["gt"])  # deterministic for a seed


def test_hosts_read_disjoint_shards(built):
    paths = []
    for index in range(2):
        loader = hq_images.make_loader(
            built[0], batch_size=1, crop=CROP, seed=2, shard_index=index, shard_count=2, num_epochs=1
        )
        paths.append({str(b["path"][0]) for b in loader})
    assert len(paths[0]) == len(paths[1]) == 5
    assert not paths[0] & paths[1]


def test_crop_larger_than_stored_image_is_a_clear_error(built):
    loader = hq_images.make_loader(built[0], batch_size=1, crop=200, seed=0, shard_index=0, shard_count=1)
    with pytest.raises(Exception, match="smaller than the crop 200"):
        next(iter(loader))
