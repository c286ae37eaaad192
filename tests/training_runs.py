"""`python -m osediff_jax.train` launched from the tests as a user launches it: real subprocesses in
fresh folders with the repository's configs/ beside them, relative paths, one persistent compilation
cache for the whole session. The runs that several test modules share are session fixtures in
tests/conftest.py; this module holds what launches and reads them.

Every run is `configs/tiny.py` at 32-pixel crops, global batch 4, metrics logged every step, a
checkpoint every 2 steps; 1 device unless said otherwise.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from osediff_jax.training import checkpoints

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 12, 2
SMALL = ["--config.data.crop=32", "--config.val.crop=32", "--config.batch_size=4", f"--config.steps={STEPS}",
         f"--config.checkpoint_every={EVERY}", "--config.val.every=0", "--config.log_every=1"]
# The multi-device runs: 4 steps, 2 devices per model replica sharing every leaf of at least 1024
# elements (the small model's convolutions and LoRA, so the optimiser states too; the default 2^18
# would split only the LPIPS backbone's kernels).
SHARDED_STEPS, FSDP, FSDP_MIN_SIZE = 4, 2, 1024
SHARDED = [f"--config.steps={SHARDED_STEPS}", f"--config.fsdp={FSDP}", f"--config.fsdp_min_size={FSDP_MIN_SIZE}"]
TMP = ".orbax-checkpoint-tmp"
# Loading the step from the persistent cache is mostly XLA:CPU deserialising YNNPACK fusions: 15.5 s of
# a 53 s launch with them, 6.6 s of 33.7 s without, at the same training speed of the tiny config.
# Tests only: users do not use a persistent cache by default.
NO_YNN_FUSIONS = ("--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                  "-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,-LIBRARY_FUSION_TYPE_DOT,"
                  "-LIBRARY_FUSION_TYPE_ELTWISE,-LIBRARY_FUSION_TYPE_REDUCE")


def env(cache: Path, devices: int = 1) -> dict:
    """The environment of a training subprocess: this repository, the shared compilation cache, and
    `devices` CPU devices (launch/local.sh appends its own device count to XLA_FLAGS)."""
    flags = [os.environ.get("XLA_FLAGS", ""), NO_YNN_FUSIONS]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "XLA_FLAGS": " ".join(f for f in flags if f)}


def argv(workdir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "osediff_jax.train", "--config", "configs/tiny.py", "--workdir", workdir,
            *SMALL, *extra]


def fresh(tmp_path: Path, inputs_of: Path | None = None) -> Path:
    """A working folder with the repository's configs/ beside it, as in a clone; with `inputs_of` (a
    workdir), its random model, photographs and built dataset are copied into `run/`, which saves
    the run writing them again (the same files: the random model is seeded and the dataset's order
    does not depend on its folder)."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    if inputs_of is not None:
        for name in ("random_sd", "photos", "tfds"):
            shutil.copytree(inputs_of / name, tmp_path / "run" / name)
    return tmp_path


def run_together(cache: Path, *runs: tuple[Path, tuple[str, ...], int]) -> list[subprocess.CompletedProcess]:
    """The train command in each cwd with workdir `run/`, `extra` flags and `devices` CPU devices, all
    at once; the results in order. A launch keeps about one of two cores busy (tracing in Python,
    XLA's compiler; 102 s of CPU in a 78 s cold launch), so two side by side take far less than one
    after the other. Output goes to files in each cwd: pipes left unread while waiting for another
    process could fill and stall it."""
    procs = []
    for cwd, extra, devices in runs:
        out, err = open(cwd / "stdout.txt", "w+"), open(cwd / "stderr.txt", "w+")
        procs.append((subprocess.Popen(argv("run", *extra), cwd=cwd, stdout=out, stderr=err, text=True,
                                       env=env(cache, devices)), out, err))
    done = []
    for proc, out, err in procs:
        proc.wait()
        with out, err:
            out.seek(0), err.seek(0)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()))
    return done


def start(cwd: Path, cache: Path, workdir: str) -> subprocess.Popen:
    return subprocess.Popen(argv(workdir), cwd=cwd, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env(cache))


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 900, poll: float = 0.002) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended first: {proc.stderr.read()[-2000:]}"
        assert time.time() < end, "timed out"
        time.sleep(poll)


def committed(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def trained(workdir: Path, step: int | None = None) -> tuple[int, dict, dict]:
    """(step, state, data state) of the workdir's checkpoint `step` (default: the latest)."""
    return checkpoints.read(workdir / "checkpoints", step)


def assert_same_state(a: dict, b: dict) -> None:
    """Trainable trees, both optimiser states, step and key identical, bit for bit."""
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    diff = [jax.tree_util.keystr(p) for (p, x), (_, y) in zip(flat_a, flat_b) if not np.array_equal(x, y)]
    assert not diff, f"{len(diff)} of {len(flat_a)} arrays differ, e.g. {diff[:3]}"

