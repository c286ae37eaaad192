"""Dataset builder (tfds, array_record, no TensorFlow) and grain loader; the same images built in
another folder give the same sequence of batches."""

import json
import shutil
from pathlib import Path

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
    loader = hq_images.make_loader(built[0], global_batch_size=4, crop=CROP, seed=1, process_index=0, process_count=1)
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


def _global_batches(dataset_dir, processes: int, steps: int, state: dict | None = None, batch: int = 4, seed: int = 5):
    """The first `steps` global batches (the processes' rows concatenated in process order) when `processes`
    loaders read them, optionally from a saved state; and the (JSON) state the processes end in."""
    its = [iter(hq_images.make_loader(dataset_dir, batch, crop=CROP, seed=seed, process_index=p, process_count=processes))
           for p in range(processes)]
    if state is not None:
        for it in its:
            it.set_state(json.loads(json.dumps(state)))
    out = []
    for _ in range(steps):
        parts = [next(it) for it in its]
        assert all(len(b["gt"]) == batch // processes for b in parts)
        out.append((np.concatenate([b["gt"] for b in parts]), [str(p) for b in parts for p in b["path"]]))
    states = [it.get_state() for it in its]
    assert all(s == states[0] for s in states)  # the same on every process
    return out, states[0]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (gt_a, paths_a), (gt_b, paths_b) in zip(a, b):
        assert paths_a == paths_b
        np.testing.assert_array_equal(gt_a, gt_b)


def test_global_sequence_is_the_same_for_any_process_count(built):
    """10 records, global batch 4: 8 batches run over 4 epochs, reshuffled each epoch, every record in every
    epoch; 1, 2 and 4 processes see the same global batches (crops and flips included)."""
    one, _ = _global_batches(built[0], 1, 10)
    for processes in (2, 4):
        _assert_same(_global_batches(built[0], processes, 10)[0], one)
    paths = [p for _, ps in one for p in ps]
    epochs = [paths[i : i + 10] for i in range(0, 40, 10)]
    assert all(sorted(e) == sorted(epochs[0]) and len(set(e)) == 10 for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4
    crops = {(p, gt.tobytes()) for (gts, ps) in one for gt, p in zip(gts, ps)}
    assert len(crops) > 10  # later epochs draw new crops, not the first epoch's again
    other_seed, _ = _global_batches(built[0], 1, 3, seed=6)
    assert [ps for _, ps in other_seed] != [ps for _, ps in one[:3]]


def test_state_resumes_the_sequence_on_another_process_count(built):
    full, _ = _global_batches(built[0], 1, 9)
    head, state = _global_batches(built[0], 2, 4)  # mid-epoch: 16 of 10 + 10 records
    assert state == {"next_batch": 4, "global_batch_size": 4, "seed": 5}
    _assert_same(head, full[:4])
    _assert_same(_global_batches(built[0], 4, 5, state)[0], full[4:])
    _assert_same(_global_batches(built[0], 1, 5, state)[0], full[4:])
    with pytest.raises(ValueError, match="global_batch_size=4; this loader has 8"):
        iter(hq_images.make_loader(built[0], 8, crop=CROP, seed=5, process_index=0, process_count=1)).set_state(state)


def test_finite_epochs_and_bad_process_counts(built):
    loader = hq_images.make_loader(built[0], 3, crop=CROP, seed=2, process_index=0, process_count=1, num_epochs=2)
    batches = list(loader)
    assert len(batches) == 6  # 20 records: 6 batches of 3, the last 2 records dropped
    with pytest.raises(ValueError, match="global_batch_size=3; expected a positive multiple of the process count 2"):
        hq_images.make_loader(built[0], 3, crop=CROP, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="process_index=2; expected"):
        hq_images.make_loader(built[0], 4, crop=CROP, process_index=2, process_count=2)


def test_same_images_in_another_folder_give_the_same_batches(folder, built, tmp_path):
    """tfds orders records by a hash of their keys: they must not depend on where the files sit."""
    root, _ = folder
    shutil.copytree(root, tmp_path / "elsewhere" / "hq")
    moved, _ = hq_images.build_dataset([hq_images.Source(str(tmp_path / "elsewhere" / "hq"))], tmp_path / "tfds",
                                       "test", min_size=CROP)
    here, _ = _global_batches(built[0], 1, 5)
    there, _ = _global_batches(moved, 1, 5)
    names = [[str(Path(p).relative_to(root)) for p in ps] for _, ps in here]
    assert names == [[str(Path(p).relative_to(tmp_path / "elsewhere" / "hq")) for p in ps] for _, ps in there]
    for (a, _), (b, _) in zip(here, there):
        np.testing.assert_array_equal(a, b)


def test_crop_larger_than_stored_image_is_a_clear_error(built):
    loader = hq_images.make_loader(built[0], 1, crop=200, seed=0, process_index=0, process_count=1)
    with pytest.raises(Exception, match="smaller than the crop 200"):
        next(iter(loader))
