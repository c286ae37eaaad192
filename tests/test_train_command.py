"""`python -m osediff_jax.train` as a user runs it: real subprocesses in fresh folders with relative
paths, real signals. One uninterrupted run is the reference; runs killed with SIGKILL (between two
saves, and during an asynchronous save), stopped with SIGTERM, or stopped by a NaN are resumed and
must end bit for bit where the reference ends; a run on 4 devices is continued on 1. Every run
is `configs/tiny.py` at 32-pixel crops, batch 4, 6 steps, a checkpoint every 2 steps, all sharing one persistent compilation cache, so
the step is compiled once for the whole module."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from osediff_jax import train
from osediff_jax.inference.sr import make_sr_fn
from osediff_jax.training import checkpoints
from osediff_jax.weights import bundle, osediff_pkl

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
SMALL = ["--config.data.crop=32", "--config.val.crop=32", "--config.batch_size=4", f"--config.steps={STEPS}",
         "--config.checkpoint_every=2", "--config.val.every=0", "--config.log_every=1"]
TMP = ".orbax-checkpoint-tmp"


def env(cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """One compilation cache for every training subprocess of the session (or the one the
    environment names, to keep it between sessions)."""
    return Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or tmp_path_factory.getbasetemp() / "train_jax_cache")


def argv(workdir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "osediff_jax.train", "--config", "configs/tiny.py", "--workdir", workdir,
            *SMALL, *extra]


def fresh(tmp_path: Path, inputs_of: Path | None = None) -> Path:
    """A working folder with the repository's configs/ beside it, as in a clone; with `inputs_of`
    (a workdir), its random model, photographs and built dataset are copied into `run/`: tfds orders
    the records by a hash of their absolute file paths, so a dataset built in another folder would
    give another (equally valid) sequence of batches than the reference's."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    if inputs_of is not None:
        for name in ("random_sd", "photos", "tfds"):
            shutil.copytree(inputs_of / name, tmp_path / "run" / name)
    return tmp_path


def run(cwd: Path, cache: Path, workdir: str, *extra: str, devices: int = 1) -> subprocess.CompletedProcess:
    flags = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"} if devices > 1 else {}
    return subprocess.run(argv(workdir, *extra), cwd=cwd, capture_output=True, text=True,
                          env={**env(cache), **flags})


def start(cwd: Path, cache: Path, workdir: str) -> subprocess.Popen:
    return subprocess.Popen(argv(workdir), cwd=cwd, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env(cache))


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600, poll: float = 0.002) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended first: {proc.stderr.read()[-2000:]}"
        assert time.time() < end, "timed out"
        time.sleep(poll)


def committed(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def trained(workdir: Path) -> tuple[int, dict, dict]:
    return checkpoints.read(workdir / "checkpoints")


def assert_same_state(a: dict, b: dict) -> None:
    """Trainable trees, both optimiser states, step and key identical, bit for bit."""
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    diff = [jax.tree_util.keystr(p) for (p, x), (_, y) in zip(flat_a, flat_b) if not np.array_equal(x, y)]
    assert not diff, f"{len(diff)} of {len(flat_a)} arrays differ, e.g. {diff[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> tuple[Path, int, dict, dict]:
    """The uninterrupted run: (folder, step, state, data state) at its end."""
    cwd = fresh(tmp_path_factory.mktemp("reference"))
    r = run(cwd, cache, "run", "--config.val.every=3")
    assert r.returncode == 0, r.stderr[-3000:]
    return (cwd / "run", *trained(cwd / "run"))


def test_reference_run_leaves_everything(reference):
    workdir, step, state, data = reference
    assert step == STEPS and int(state["step"]) == STEPS
    assert committed(workdir / "checkpoints") == [2, 4, 6]
    assert sorted(p.name for p in (workdir / "export" / f"step_{STEPS}").iterdir()) == ["merged", "osediff",
                                                                                         "osediff.pkl"]
    assert [p.name for p in sorted((workdir / "validation").iterdir())] == ["step_3.png", "step_6.png"]
    assert (workdir / "sample" / "sr.png").is_file() and (workdir / "sample" / "lq.png").is_file()
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000
    assert not list(workdir.rglob(f"*{TMP}*")) and not list(workdir.rglob(".*.tmp*"))


def test_export_gives_the_checkpoint_generator(reference):
    """The merged export (what `upscale --checkpoint` reads) and our OSEDiff export give the
    sr_fn output of the checkpoint's generator."""
    workdir, _, state, _ = reference
    merged = bundle.load(workdir / "export" / f"step_{STEPS}" / "merged")
    base = bundle.load(workdir / "random_sd")
    gen = state["gen"]
    w = osediff_pkl.load(workdir / "export" / f"step_{STEPS}" / "osediff")
    for a, b in ((w.unet_lora, gen["unet_lora"]), (w.vae_lora, gen["vae_lora"]), (w.conv_in, gen["conv_in"])):
        assert_same_state(a, b)
    sr_fn = jax.jit(make_sr_fn(base.modules["unet"], base.modules["vae"], base.alphas_cumprod))
    lq = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    emb = np.random.default_rng(1).standard_normal((1, 77, 64)).astype(np.float32)
    ours = dict(zip(("unet", "vae"), jax.jit(osediff_pkl.OSEDiffWeights(
        gen["unet_lora"], gen["vae_lora"], gen["conv_in"], 4, 4, w.unet_modules, w.vae_modules).merge)(
        base.params["unet"], base.params["vae"])))
    want = np.asarray(sr_fn(ours, lq, emb))
    got = np.asarray(sr_fn({"unet": merged.params["unet"], "vae": merged.params["vae"]}, lq, emb))
    assert np.abs(want).max() > 0 and np.abs(got - want).max() <= 1e-5  # float32 rounding of the merge


def test_kill9_between_saves_resumes_bit_exact(reference, tmp_path, cache):
    cwd = fresh(tmp_path, reference[0])
    proc = start(cwd, cache, "run")
    ckpt = cwd / "run" / "checkpoints"
    wait_for(lambda: committed(ckpt) == [2] and not list(ckpt.glob(f"*{TMP}*")), proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    killed_at = committed(ckpt)
    assert killed_at and killed_at[-1] < STEPS
    r = run(cwd, cache, "run")
    assert r.returncode == 0 and f"at step {killed_at[-1]}" in r.stderr, r.stderr[-3000:]
    step, state, data = trained(cwd / "run")
    assert step == STEPS and data == reference[3]
    assert_same_state(state, reference[2])


def test_kill9_during_async_save_resumes_bit_exact(reference, tmp_path, cache):
    cwd = fresh(tmp_path, reference[0])
    proc = start(cwd, cache, "run")
    ckpt = cwd / "run" / "checkpoints"
    # A save of step 4 or later has begun (its temporary folder exists) and is not committed yet.
    wait_for(lambda: any(p.name.split(".")[0] in ("4", "6") and TMP in p.name for p in ckpt.iterdir())
             if ckpt.is_dir() else False, proc, poll=0.001)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    partial = [p.name for p in ckpt.iterdir() if TMP in p.name]
    assert partial, "the save completed before the kill landed"
    saving = int(partial[0].split(".")[0])
    r = run(cwd, cache, "run")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = int(r.stderr.split("at step ")[1].split()[0])
    assert resumed < saving, r.stderr[-3000:]
    assert not list(ckpt.glob(f"*{TMP}*"))  # the leftover was removed at the restart
    step, state, data = trained(cwd / "run")
    assert step == STEPS and data == reference[3]
    assert_same_state(state, reference[2])


def test_sigterm_saves_the_current_step_and_resumes_bit_exact(reference, tmp_path, cache):
    cwd = fresh(tmp_path, reference[0])
    proc = start(cwd, cache, "run")
    ckpt = cwd / "run" / "checkpoints"
    wait_for(lambda: committed(ckpt) == [2], proc)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 143, err[-3000:]
    saved = int(err.split("saved step ")[1].split()[0])
    assert "interrupted (SIGTERM)" in err and committed(ckpt)[-1] == saved and 2 <= saved < STEPS, err[-3000:]
    r = run(cwd, cache, "run")
    assert r.returncode == 0 and f"at step {saved}" in r.stderr, r.stderr[-3000:]
    step, state, data = trained(cwd / "run")
    assert step == STEPS and data == reference[3]
    assert_same_state(state, reference[2])


def test_nan_stops_and_keeps_the_last_good_checkpoint(reference, tmp_path, cache):
    """A NaN in a frozen weight (same shapes, so the same compiled step) makes step 7's losses NaN:
    the run stops with exit 1 naming them, and step 6 stays the latest checkpoint."""
    cwd = fresh(tmp_path)
    shutil.copytree(reference[0], cwd / "run", symlinks=True)
    vae = cwd / "run" / "random_sd" / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(vae)
    tensors["decoder.conv_out.bias"] = np.full_like(tensors["decoder.conv_out.bias"], np.nan)
    save_file(tensors, vae)
    r = run(cwd, cache, "run", f"--config.steps={STEPS + 2}")
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"step {STEPS + 1}: non-finite" in r.stderr and "l2=nan" in r.stderr and f"step {STEPS} in" in r.stderr
    assert committed(cwd / "run" / "checkpoints")[-1] == STEPS
    assert_same_state(trained(cwd / "run")[1], reference[2])


def test_checkpoint_of_4_devices_continues_on_1(reference, tmp_path, cache):
    """4 steps on 4 devices (batch split 1 per device), then steps 5 and 6 on 1 device from its
    checkpoint: the same data sequence, and parameters within float tolerance of the reference (the
    partitioned program sums in another order)."""
    cwd = fresh(tmp_path, reference[0])
    r = run(cwd, cache, "run", "--config.steps=4", devices=4)
    assert r.returncode == 0, r.stderr[-3000:]
    assert committed(cwd / "run" / "checkpoints") == [2, 4]
    r = run(cwd, cache, "run")
    assert r.returncode == 0 and "at step 4" in r.stderr, r.stderr[-3000:]
    step, state, data = trained(cwd / "run")
    assert step == STEPS and data == reference[3]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state["gen"]),
                                                            jax.tree.leaves(reference[2]["gen"])))
    print(f"4 devices then 1 against 1 device throughout: max parameter difference {diff:.2e}")
    # Measured 5e-7 and 3e-5 (two code versions): Adam's normalised update magnifies the summation-order
    # differences of small gradients; a wrong restore would differ by the steps' whole updates (lr 2e-4).
    assert diff <= 1e-4


def test_config_errors_name_the_field(tmp_path, cache):
    cwd = fresh(tmp_path)
    cases = [("tiny", ["--config.val.nope=1"], "unknown config field 'val.nope'"),
             ("tiny", ["--config.steps=many"], "--config.steps=many: not a int"),
             ("a100x4", [], "config.sd_path: stable-diffusion-2-1-base: no such folder; obtain SD-2.1-base"),
             ("gpu1", ["--config.sd_path=."], "config.lpips_weights: weights: missing vgg16-397923af.pth, "
                                               "lpips_vgg.pth"),
             ("tiny", ["--config.ram_path=ram.pth"], "config.ram_path: ram.pth: no such file or folder; obtain RAM's")]
    for name, extra, message in cases:
        r = subprocess.run([sys.executable, "-m", "osediff_jax.train", "--config", f"configs/{name}.py", "--workdir",
                            "run", *extra], cwd=cwd, capture_output=True, text=True, env=env(cache))
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert r.returncode == 2 and len(errors) == 1 and message in errors[0], (extra, r.stderr)
    assert not (cwd / "run").exists()


def test_help_lists_the_configs_and_exit_codes():
    text = train.build_parser().format_help()
    assert "configs/tiny.py" in text and "exit codes: 0 all done" in text
