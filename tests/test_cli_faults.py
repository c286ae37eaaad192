"""The commands as a new user meets them, in real subprocesses from a fresh working folder with
relative paths: faults mid-batch, full and read-only disks (real tmpfs mounts: CI runs as root,
and root writes through permission bits), decompression bombs, existing outputs, permissions,
corrupt checkpoints and real signals. Each case checks the exit code, the message and that
nothing was lost or left behind."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osediff_jax import convert, evaluate, train, upscale
from osediff_jax.files import images

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module", autouse=True)
def umask_022():
    """Every command of this module runs under umask 022 (subprocesses inherit it)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def work(tmp_path_factory, umask_022) -> Path:
    """A fresh working folder holding `models/` (made by `convert random`) and `photos/`."""
    work = tmp_path_factory.mktemp("work")
    r = run(["convert", "random", "--dst", "models"], work)
    assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    (work / "photos").mkdir()
    for name, (h, w) in {"a": (8, 8), "b": (8, 12), "c": (12, 8)}.items():
        Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(work / "photos" / f"{name}.png")
    return work


def _env(cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m osediff_jax.<argv[0]> argv[1:]` in `cwd` (under the module's umask 022)."""
    return subprocess.run([sys.executable, "-m", f"osediff_jax.{argv[0]}", *argv[1:]], cwd=cwd, capture_output=True,
                          text=True, env={**_env(cwd.parent / "jax_cache"), **env})


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"osediff_jax.{argv[0]}", *argv[1:]], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(cwd.parent / "jax_cache"))


def run_upscale(work: Path, out: str, *extra: str, inputs: str = "photos") -> subprocess.CompletedProcess:
    return run(["upscale", "--checkpoint", "models/merged", "--input", inputs, "--output", out, "--scale", "2",
                *extra], work)


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders of an atomic write (hidden, `.tmp`) anywhere below `folder`."""
    return sorted(str(p) for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs with those options, unmounted afterwards."""
    points = []

    def make(options: str) -> Path:
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        points.append(point)
        return point

    yield make
    for p in points:
        subprocess.run(["umount", str(p)], check=True)


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in [folder, *folder.rglob("*")]}


def test_random_models_relative_paths_permissions_and_existing_outputs(work):
    assert sorted(p.name for p in (work / "models").iterdir()) == ["merged", "osediff", "sd"]
    assert _modes(work / "models") == {("dir", 0o755), ("file", 0o644)}

    r = run_upscale(work, "out")
    assert r.returncode == 0 and "upscaled 3 of 3" in r.stderr, r.stderr
    assert _modes(work / "out") == {("dir", 0o755), ("file", 0o644)}
    assert images.decode(work / "out" / "b.png").rgb.shape == (16, 24, 3)
    before = {p.name: p.stat().st_mtime_ns for p in (work / "out").iterdir()}

    r = run_upscale(work, "out")
    assert r.returncode == 0 and "upscaled 0 of 3" in r.stderr and "3 already there, kept" in r.stderr, r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (work / "out").iterdir()} == before

    r = run_upscale(work, "out", "--overwrite")
    assert r.returncode == 0 and "upscaled 3 of 3" in r.stderr, r.stderr
    assert all(p.stat().st_mtime_ns > before[p.name] for p in (work / "out").iterdir())

    (work / "link to photos").symlink_to("photos")  # a symlink, spaces, and ~ (HOME is the working folder)
    r = run(["upscale", "--checkpoint", "~/models/merged", "--input", "link to photos/a.png", "--output",
             "~/with space", "--scale", "2"], work, HOME=str(work))
    assert r.returncode == 0 and (work / "with space" / "a.png").is_file(), r.stderr
    assert leftovers(work) == []


def test_read_only_output_fails_before_loading(work, mount):
    ro = mount("ro,size=1m")
    r = run(["upscale", "--checkpoint", "models/merged", "--input", "photos", "--output", str(ro / "out")], work)
    assert r.returncode == 2 and f"{ro / 'out'}: cannot write there" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1  # one line, no traceback

    r = run(["evaluate", "--pred", "photos", "--gt", "photos", "--json", str(ro / "m.json")], work)
    assert r.returncode == 2 and "cannot write there" in r.stderr and r.stdout == "", r.stderr


def test_disk_full_mid_batch_reports_each_file_and_goes_on(work, mount):
    full = mount("size=12k")
    (work / "noisy").mkdir(exist_ok=True)
    for i in range(4):  # incompressible outputs of about 6 KB each: the second or third fills the disk
        Image.fromarray(RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(work / "noisy" / f"n{i}.png")
    r = run_upscale(work, str(full), inputs="noisy")
    assert r.returncode == 1, r.stderr
    assert "No space left on device" in r.stderr and "failed:" in r.stderr, r.stderr
    written = sorted(p.name for p in full.iterdir())
    assert f"upscaled {len(written)} of 4" in r.stderr and len(written) < 4
    for name in written:  # what was written is whole
        assert images.decode(full / name).rgb.shape == (48, 48, 3)
    assert leftovers(full) == []


def test_decompression_bomb_is_refused_from_its_header(work, tmp_path):
    folder = tmp_path / "bomb"
    shutil.copytree(work / "photos", folder)
    Image.new("1", (14000, 14000)).save(folder / "bomb.png")  # 196 M pixels in a 25 KB file
    Image.new("1", (10000, 9000)).save(folder / "big.png")  # above our limit, below Pillow's refusal
    r = run_upscale(work, str(tmp_path / "out"), inputs=str(folder))
    assert r.returncode == 1, r.stderr
    assert "bomb.png: refused as a possible decompression bomb, more than the limit of 89,478,485 pixels" in r.stderr
    assert "big.png: 10000x9000 is 90,000,000 pixels, more than the limit of 89,478,485" in r.stderr
    assert "upscaled 3 of 5" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_upscale_keeps_what_it_finished(work, tmp_path, sig):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(8):  # eight sizes: eight compilations, so the batch runs for a while
        Image.fromarray(RNG.integers(0, 256, (8 + 4 * i, 8, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    proc = start(["upscale", "--checkpoint", "models/merged", "--input", str(folder), "--output", str(out)], work)
    deadline = time.time() + 120
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted ({sig.name})" in err and "Traceback" not in err, err
    done = sorted(p for p in out.iterdir())
    assert f"upscaled {len(done)} of 8" in err and 1 <= len(done) < 8, err
    for p in done:
        assert images.decode(p).rgb.shape[1] == 32
    assert leftovers(out) == []


def test_interrupted_convert_leaves_nothing(work, tmp_path):
    interrupted = 0
    for attempt in range(6):
        dst = tmp_path / f"ck{attempt}"
        proc = start(["convert", "sd", "--src", "models/sd", "--dst", str(dst)], work)
        deadline = time.time() + 60
        while not any(p.name.startswith(f".{dst.name}.tmp") for p in tmp_path.iterdir()) and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # it finished before the signal: the checkpoint is whole
            assert (dst / "params").is_dir()
            continue
        interrupted += 1
        assert proc.returncode == 130 and f"nothing was written to {dst}" in err and "Traceback" not in err, err
        assert not dst.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        if interrupted == 3:
            break
    assert interrupted >= 2


def test_corrupt_checkpoint_is_one_line(work, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(work / "models" / "merged", bad)
    chunk = max((p for p in (bad / "params").rglob("*") if p.is_file() and p.parent.name == "d"),
                key=lambda p: p.stat().st_size)
    os.truncate(chunk, 1000)
    for _ in range(3):  # the stray messages of a failed restore came late and not every time
        r = run(["upscale", "--checkpoint", str(bad), "--input", "photos", "--output", str(tmp_path / "o")], work)
        assert r.returncode == 2 and "unreadable or corrupt checkpoint data" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr


def test_evaluate_json_target_is_checked_first(work, tmp_path):
    (tmp_path / "taken.json").write_text("{}")
    for target, message in ((tmp_path, "is a directory"), (tmp_path / "taken.json", "exists; pass --overwrite")):
        r = run(["evaluate", "--pred", "photos", "--gt", "photos", "--metrics", "psnr", "--json", str(target)], work)
        assert r.returncode == 2 and message in r.stderr and r.stdout == "", r.stderr
    r = run(["evaluate", "--pred", "photos", "--gt", "photos", "--metrics", "psnr", "--json", str(tmp_path / "taken.json"),
             "--overwrite"],
            work)
    assert r.returncode == 0 and '"psnr"' in (tmp_path / "taken.json").read_text(), r.stderr


def test_one_pixel_image_suggests_no_colour_fix(work, tmp_path):
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(tmp_path / "one.png")
    r = run_upscale(work, str(tmp_path / "out"), "--scale", "1", inputs=str(tmp_path / "one.png"))
    assert r.returncode == 1 and "use --color-fix none" in r.stderr, r.stderr


@pytest.mark.parametrize("command", [convert, evaluate, train, upscale])
def test_help_documents_every_option_and_the_exit_codes(command):
    parsers = [command.build_parser()]
    for action in parsers[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    for parser in parsers:
        assert "exit codes: 0 all done; 1 some inputs failed" in parser.epilog, parser.prog
        for action in parser._actions:
            assert action.help and action.help.strip(), f"{parser.prog} {action.option_strings} has no help"


def test_transformers_advisories_are_off():
    code = ("import io, logging, osediff_jax.models.tokenizer; from transformers.utils import logging as tl; "
            "s = io.StringIO(); h = logging.StreamHandler(s); l = tl.get_logger('transformers'); l.addHandler(h); "
            "l.warning_advice('PyTorch was not found.'); print(repr(s.getvalue()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ,
                       "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "''", r.stdout + r.stderr
