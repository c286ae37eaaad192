"""`python -m osediff_jax.train` as a user runs it: real subprocesses in fresh folders with relative
paths, real signals (tests/training_runs.py launches them; the shared runs are fixtures in
tests/conftest.py). One uninterrupted run is the reference; one run killed with SIGKILL between two
saves, resumed, killed with SIGKILL during an asynchronous save, resumed, stopped with SIGTERM and
resumed again, and a run stopped by a NaN, must end bit for bit where the reference ends; the
checkpoint of a run on 4 devices is continued on 1. Every run is `configs/tiny.py` at 32-pixel
crops, batch 4, 12 steps, a checkpoint every 2 steps, all sharing one persistent compilation cache,
so the step is compiled once per device layout for the session."""

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from osediff_jax import train
from osediff_jax.inference.sr import make_sr_fn
from osediff_jax.weights import bundle, osediff_pkl
from tests.training_runs import EVERY, SHARDED_STEPS, STEPS, TMP, assert_same_state, committed, env, fresh, \
    run_together, start, trained, wait_for


def test_reference_run_leaves_everything(reference):
    workdir, step, state, data = reference
    assert step == STEPS and int(state["step"]) == STEPS
    assert committed(workdir / "checkpoints") == list(range(EVERY, STEPS + 1, EVERY))
    assert sorted(p.name for p in (workdir / "export" / f"step_{STEPS}").iterdir()) == ["merged", "osediff",
                                                                                         "osediff.pkl"]
    assert sorted(p.name for p in (workdir / "validation").iterdir()) == [f"step_{STEPS}.png", f"step_{STEPS // 2}.png"]
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


def test_kill9_twice_and_sigterm_resume_bit_exact(reference, tmp_path, cache):
    """One run, interrupted three times and resumed each time with the same command: SIGKILL between two
    saves, SIGKILL while an asynchronous save is being written, SIGTERM (saves the current step); the
    last resume runs to the end, bit for bit where the reference ends."""
    cwd = fresh(tmp_path, reference[0])
    ckpt = cwd / "run" / "checkpoints"

    def partial() -> set[str]:
        return {p.name for p in ckpt.iterdir() if TMP in p.name} if ckpt.is_dir() else set()

    # SIGKILL between saves: step 2 committed, no save under way.
    proc = start(cwd, cache, "run")
    wait_for(lambda: committed(ckpt) == [2] and not partial(), proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    killed_at = committed(ckpt)[-1]
    leftover = partial()  # a save that began as the kill landed

    # SIGKILL during an asynchronous save: a new save (of step 8 at the latest, leaving steps for the
    # SIGTERM below) has begun and is not committed.
    proc = start(cwd, cache, "run")
    wait_for(lambda: any(killed_at < int(n.split(".")[0]) <= STEPS - 4 for n in partial() - leftover), proc,
             poll=0.001)
    proc.kill()
    err = proc.communicate()[1]
    assert proc.returncode == -signal.SIGKILL
    assert f"at step {killed_at}" in err, err[-3000:]
    leftover = partial() - leftover
    assert leftover, "the save completed before the kill landed"
    saving = min(int(n.split(".")[0]) for n in leftover)
    resumed = committed(ckpt)[-1]
    assert resumed < saving

    # SIGTERM once the resumed run has committed a new checkpoint: it saves the step it is at.
    proc = start(cwd, cache, "run")
    wait_for(lambda: committed(ckpt)[-1] > resumed, proc)
    assert not leftover & partial()  # the restart removed the interrupted save's temporary folder
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 143, err[-3000:]
    assert f"at step {resumed}" in err and "interrupted (SIGTERM)" in err, err[-3000:]
    saved = int(err.split("saved step ")[1].split()[0])
    assert committed(ckpt)[-1] == saved and resumed < saved < STEPS, err[-3000:]

    r, = run_together(cache, (cwd, (), 1))
    assert r.returncode == 0 and f"at step {saved}" in r.stderr, r.stderr[-3000:]
    assert not partial()
    step, state, data = trained(cwd / "run")
    assert step == STEPS and data == reference[3]
    assert_same_state(state, reference[2])


@pytest.fixture(scope="module")
def continued(reference, four_devices, tmp_path_factory, cache) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Two runs from the session's checkpoints, launched together: {name: (workdir, result)}.

    "nan": the reference's workdir with a NaN in a frozen weight (same shapes, so the same compiled
    step), trained 2 steps past the reference's end. "4to1": the 4-device run's workdir continued on
    1 device to the reference's end."""
    nan, four = fresh(tmp_path_factory.mktemp("nan")), fresh(tmp_path_factory.mktemp("four_to_one"))
    shutil.copytree(reference[0], nan / "run", symlinks=True)
    vae = nan / "run" / "random_sd" / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(vae)
    tensors["decoder.conv_out.bias"] = np.full_like(tensors["decoder.conv_out.bias"], np.nan)
    save_file(tensors, vae)
    shutil.copytree(four_devices, four / "run", symlinks=True)
    assert committed(four / "run" / "checkpoints") == list(range(EVERY, SHARDED_STEPS + 1, EVERY))
    results = run_together(cache, (nan, (f"--config.steps={STEPS + 2}",), 1), (four, (), 1))
    return {"nan": (nan / "run", results[0]), "4to1": (four / "run", results[1])}


def test_nan_stops_and_keeps_the_last_good_checkpoint(reference, continued):
    """The losses of the step after the reference's end are NaN: the run stops with exit 1 naming
    them, and the reference's last step stays the latest checkpoint."""
    workdir, r = continued["nan"]
    assert r.returncode == 1, r.stderr[-3000:]
    assert f"step {STEPS + 1}: non-finite" in r.stderr and "l2=nan" in r.stderr and f"step {STEPS} in" in r.stderr
    assert committed(workdir / "checkpoints")[-1] == STEPS
    assert_same_state(trained(workdir)[1], reference[2])


def test_checkpoint_of_4_devices_continues_on_1(reference, continued):
    """The run of 4 devices (fsdp 2, batch split 1 per device) continued from its last checkpoint on 1
    device to the end: the same data sequence, and parameters within float tolerance of the reference
    (the partitioned program sums in another order)."""
    workdir, r = continued["4to1"]
    assert r.returncode == 0 and f"at step {SHARDED_STEPS}" in r.stderr, r.stderr[-3000:]
    step, state, data = trained(workdir)
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
             ("tiny", ["--config.ram_path=ram.pth"], "config.ram_path: ram.pth: no such file or folder; obtain RAM's"),
             ("tiny", ["--config.train.lpips_net=squeeze"], "config.train.lpips_net='squeeze'; expected one of "
                                                            "('vgg', 'alex')"),
             ("gpu1", ["--config.sd_path=.", "--config.train.lpips_net=alex", "--config.val.every=0"],
              "config.lpips_weights: weights: missing alexnet-owt-7be5be79.pth, lpips_alex.pth; put torchvision's "
              "ImageNet AlexNet")]
    procs = [subprocess.Popen([sys.executable, "-m", "osediff_jax.train", "--config", f"configs/{name}.py",
                               "--workdir", "run", *extra], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env(cache)) for name, extra, _ in cases]  # all at once: a few lines each
    for proc, (_, extra, message) in zip(procs, cases):
        err = proc.communicate()[1]
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], (extra, err)
    assert not (cwd / "run").exists()


def test_help_lists_the_configs_and_exit_codes():
    text = train.build_parser().format_help()
    assert "configs/tiny.py" in text and "exit codes: 0 all done" in text
