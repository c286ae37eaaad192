"""Sharded training through the train command: `python -m osediff_jax.train` on

    1 process  x 1 CPU device               (the session's reference run, tests/conftest.py)
    1 process  x 4 CPU devices, fsdp 2      (the session's `four_devices` run)
    2 processes x 2 CPU devices, fsdp 2     (launch/local.sh 2 2 ..., jax.distributed, gloo collectives)

give the same losses and gradient norms at every step, read from their TensorBoard event files, and
the same trained LoRA at a common checkpoint, within float32 rounding; the 2-process run writes its
random model and dataset itself (process 0 writes, the other waits) and leaves one set of logs and
exports. Also: which leaves fsdp splits (on the tiny model's real state, with an abstract mesh), the
sharding rules, and the launcher's failure handling."""

import struct
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
from jax.tree_util import DictKey, GetAttrKey
from tensorboardX.proto import event_pb2

from osediff_jax.metrics.lpips import lpips_params
from osediff_jax.training import config as config_lib
from osediff_jax.training import sharding
from osediff_jax.training.state import init_train_state
from osediff_jax.weights import bundle
from tests.training_runs import FSDP, FSDP_MIN_SIZE, ROOT, SHARDED, SHARDED_STEPS, TMP, argv, committed, env, fresh, \
    trained

LAUNCH = ROOT / "launch" / "local.sh"
NAMES = ("l2", "lpips", "vsd", "reg", "loss", "gen_grad_norm", "reg_grad_norm")
# Losses and gradient norms: 1 device and 4 sum the batch and the pixels in other orders (float32
# rounding, ~1e-7 a sum, grown through the steps; measured at most 4.8e-6 relative over 3 steps).
# 2x2 and 1x4 run the same partitioned program and differ only in the order of gloo's sums.
LOSS_RTOL = 2e-5
# Parameters (tiny config, lr 2e-4): Adam divides by sqrt(v), so an element whose gradient is near
# zero moves by up to lr whatever its rounding (measured at most 1.9e-5 with lr 1e-3, i.e. lr/50). A
# regulariser updated from one device's quarter of the batch (the authors' per-GPU copies) would move
# most elements by a different ~lr, far outside lr/5.
LR = 2e-4
PARAM_ATOL = LR / 5


def scalars(workdir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in the run's TensorBoard event files (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    out = defaultdict(dict)
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            n = struct.unpack("<Q", data[i:i + 8])[0]
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out[v.tag][event.step] = v.simple_value
    return out


def metrics(workdir: Path) -> np.ndarray:
    """[step, name] of the first SHARDED_STEPS steps' losses and gradient norms."""
    s = scalars(workdir)
    return np.array([[s[f"train/{k}"][step] for k in NAMES] for step in range(1, SHARDED_STEPS + 1)])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, cache) -> tuple[Path, subprocess.CompletedProcess]:
    """The 2 x 2 run from an empty workdir, through the launch script as README shows it."""
    cwd = fresh(tmp_path_factory.mktemp("two_processes"))
    start = time.monotonic()
    r = subprocess.run([str(LAUNCH), "2", "2", *argv("run", *SHARDED)], cwd=cwd, env=env(cache),
                       capture_output=True, text=True, timeout=1800)
    print(f"2 processes x 2 devices: {time.monotonic() - start:.0f} s")
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return cwd / "run", r


def test_two_processes_leave_one_run(two_processes):
    workdir, r = two_processes
    assert committed(workdir / "checkpoints") == [2, SHARDED_STEPS]
    assert int(trained(workdir)[1]["step"]) == SHARDED_STEPS
    assert sorted(p.name for p in (workdir / "export" / f"step_{SHARDED_STEPS}").iterdir()) == [
        "merged", "osediff", "osediff.pkl"]
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # process 0 alone logs
    assert "[0] " in r.stderr and "[1] " in r.stderr
    assert not list(workdir.rglob(f"*{TMP}*")) and not list(workdir.rglob(".*.tmp*"))


def test_losses_and_parameters_agree_across_device_counts(reference, four_devices, two_processes):
    want = metrics(reference[0])
    assert np.all(np.isfinite(want)) and np.all(want != 0)
    base = trained(reference[0], SHARDED_STEPS)[1]
    before = trained(reference[0], 2)[1]
    # Steps 3 and 4 move both LoRA (the regulariser's and the generator's): a disagreement would show.
    for part in ("reg", "gen"):
        moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(base[part]),
                                                                 jax.tree.leaves(before[part])))
        assert moved > 2 * PARAM_ATOL, (part, moved)
    runs = {"1x4": four_devices, "2x2": two_processes[0]}
    for name, workdir in runs.items():
        rel = np.abs(metrics(workdir) - want) / np.abs(want)
        print(f"{name} vs 1x1: largest relative loss / gradient-norm difference {rel.max():.2e}")
        assert rel.max() <= LOSS_RTOL, name
        got = trained(workdir, SHARDED_STEPS)[1]
        diff = max(float(np.abs(a - b).max()) for part in ("gen", "reg")
                   for a, b in zip(jax.tree.leaves(got[part]), jax.tree.leaves(base[part])))
        print(f"{name} vs 1x1: largest parameter difference {diff:.2e}")
        assert diff <= PARAM_ATOL, name
    two, four = metrics(two_processes[0]), metrics(four_devices)
    assert (np.abs(two - four) / np.abs(four)).max() <= LOSS_RTOL


def test_fsdp_splits_the_large_leaves(reference):
    """The shardings of the 4-device runs (fsdp 2, leaves of at least FSDP_MIN_SIZE elements): frozen
    base kernels, trainable leaves and their optimiser moments, never the step, keys, counts or
    embeddings."""
    config = config_lib.load(ROOT / "configs" / "tiny.py")
    model = bundle.load(reference[0] / "random_sd")
    lpips = lpips_params(config.train.lpips_net, None, random_backbone=True)
    state, frozen = init_train_state(model, lpips, jax.random.key(0), config_lib.train_config(config))
    mesh = AbstractMesh((2, FSDP), sharding.AXES)
    split = [jax.tree_util.keystr(path) for path, s in jax.tree_util.tree_leaves_with_path(
        {"state": sharding.shardings(state, mesh, FSDP_MIN_SIZE), "frozen": sharding.shardings(frozen, mesh,
                                                                                               FSDP_MIN_SIZE)})
        if s.spec != P()]
    assert "['frozen']['unet']['down_blocks_0']['resnets_0']['conv1']['kernel']" in split
    assert "['state']['gen']['conv_in']['kernel']" in split
    assert "['state']['gen_opt'][1][0].mu['conv_in']['kernel']" in split
    assert not any(p.endswith(("['step']", "['key']", ".count", "_embeds']")) for p in split)


def test_leaf_rule():
    path = (DictKey("unet"), DictKey("conv_in"), DictKey("kernel"))
    assert sharding.leaf_spec(path, (3, 3, 320, 640), 2) == P(None, None, None, "fsdp")
    assert sharding.leaf_spec(path, (1280, 320), 4) == P("fsdp")
    assert sharding.leaf_spec(path, (3, 3, 320, 640), 1) == P()
    assert sharding.leaf_spec(path, (3, 3, 4, 320), 2) == P()  # under the size limit
    assert sharding.leaf_spec(path, (3, 3, 4, 320), 2, fsdp_min_size=1024) == P(None, None, None, "fsdp")
    assert sharding.leaf_spec(path, (3, 3, 321, 641), 2) == P()  # no dimension divisible
    assert sharding.leaf_spec((GetAttrKey("count"),), (2**20,), 2) == P()
    assert sharding.leaf_spec((DictKey("neg_embeds"),), (1, 77, 4096), 2) == P()


def test_mesh_needs_a_divisor_of_the_device_count():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data", "fsdp") and mesh.shape["fsdp"] == 1
    n = mesh.size
    with pytest.raises(ValueError, match=f"fsdp={n + 1} does not divide the {n} devices"):
        sharding.make_mesh(n + 1)


def test_launcher_stops_the_others_and_returns_the_first_failure(tmp_path):
    """Process 1 fails with 3 while process 0 would run for a minute: the launch ends at once with 3."""
    script = ("import os, sys, time\n"
              "assert os.environ['JAX_NUM_PROCESSES'] == '2' and ':' in os.environ['JAX_COORDINATOR_ADDRESS']\n"
              "assert '--xla_force_host_platform_device_count=3' in os.environ['XLA_FLAGS']\n"
              "print('process', os.environ['JAX_PROCESS_ID'], flush=True)\n"
              "if os.environ['JAX_PROCESS_ID'] == '0':\n"
              "    open('started', 'w').close()\n"
              "    time.sleep(60)\n"
              "while not os.path.exists('started'):\n"
              "    time.sleep(0.1)\n"
              "sys.exit(3)\n")
    start = time.monotonic()
    r = subprocess.run([str(LAUNCH), "2", "3", sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=50)
    assert r.returncode == 3, r.stderr
    assert time.monotonic() - start < 30
    assert sorted(r.stdout.splitlines()) == ["[0] process 0", "[1] process 1"]
    assert "exited with 3" in r.stderr
    r = subprocess.run([str(LAUNCH), "2", "x", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: launch/local.sh N D" in r.stderr
