"""Sharded training: three real launches of `tests/sharded_steps.py` through `launch/local.sh` (3 steps
of the small random model on scikit-image's photographs, 32-pixel crops, global batch 4):

    1 process  x 1 CPU device
    1 process  x 4 CPU devices, fsdp 2 (weights, optimiser states and conv_in split over 2 devices)
    2 processes x 2 CPU devices, fsdp 2 (jax.distributed, gloo collectives)

give the same losses and the same trained LoRA within float32 rounding; the sharding rules; the
launcher's failure handling. A persistent compilation cache under pytest's cache folder makes reruns
fast (the first run compiles the step four times: the two processes compile their own)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage
from jax.sharding import PartitionSpec as P
from jax.tree_util import DictKey, GetAttrKey

from osediff_jax.data import hq_images
from osediff_jax.training import sharding
from osediff_jax.weights import random_sd

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "local.sh"
CROP, STEPS = 32, 3
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "color.png",
          "retina.jpg", "ihc.png")
RUNS = {"1x1": (1, 1, 1), "1x4": (1, 4, 2), "2x2": (2, 2, 2)}  # processes, devices each, fsdp
# Losses and gradient norms: 1 device and 4 sum the batch and the pixels in other orders (float32
# rounding, ~1e-7 a sum, grown through 3 steps; measured at most 4.8e-6 relative). 2x2 vs 1x4 run the
# same partitioned program and differ only in the order of gloo's sums.
LOSS_RTOL = 2e-5
# Parameters (lr 1e-3, 3 steps): Adam divides by sqrt(v), so elements whose gradient is near zero move
# by up to lr whatever its rounding; measured at most 1.9e-5. A regulariser updated from one device's
# quarter of the batch (the authors' per-GPU copies) would move by ~lr, far outside this.
PARAM_ATOL = 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request) -> dict:
    """{name: (the run's JSON, its arrays, seconds)} of the three launches, from a fresh working folder."""
    work = tmp_path_factory.mktemp("sharded")
    random_sd.write_random_sd(work / "sd", seed=0)
    photos = Path(skimage.__file__).parent / "data"
    (work / "photos.txt").write_text("\n".join(str(photos / n) for n in PHOTOS) + "\n")
    folder, report = hq_images.build_dataset([hq_images.Source(str(work / "photos.txt"))], work / "tfds", "photos",
                                             min_size=CROP)
    assert report.stored == len(PHOTOS)
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "JAX_COMPILATION_CACHE_DIR": str(request.config.cache.mkdir("jax_compilation_cache"))}
    out = {}
    for name, (processes, devices, fsdp) in RUNS.items():
        start = time.monotonic()
        r = subprocess.run([str(LAUNCH), str(processes), str(devices), sys.executable, "-m", "tests.sharded_steps",
                            "--sd", "sd", "--data", str(folder.relative_to(work)), "--out", name, "--fsdp", str(fsdp),
                            "--fsdp-min-size", "1024", "--steps", str(STEPS), "--crop", str(CROP)],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{name}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        out[name] = (json.loads((work / f"{name}.json").read_text()), dict(np.load(work / f"{name}.npz")),
                     time.monotonic() - start)
        print(f"{name}: {out[name][2]:.0f} s")
    return out


def test_launches_ran_as_configured(runs):
    for name, (processes, devices, _) in RUNS.items():
        result = runs[name][0]
        assert (result["processes"], result["devices"], result["step"]) == (processes, processes * devices, STEPS)
    assert runs["1x1"][0]["split"] == []
    for name in ("1x4", "2x2"):
        split = runs[name][0]["split"]
        assert split == runs["1x4"][0]["split"]
        # Frozen base kernels, trainable leaves and their optimiser moments (the small model's conv_in and
        # convolutions' lora_A reach 1024 elements), never the step, keys, counts or embeddings.
        assert "['frozen']['unet']['down_blocks_0']['resnets_0']['conv1']['kernel']" in split
        assert "['state']['gen']['conv_in']['kernel']" in split
        assert "['state']['gen_opt'][1][0].mu['conv_in']['kernel']" in split
        assert not any(p.endswith(("['step']", "['key']", ".count", "_embeds']")) for p in split)


def test_losses_and_parameters_agree_across_device_counts(runs):
    names = ("l2", "lpips", "vsd", "reg", "loss", "gen_grad_norm", "reg_grad_norm")
    want = np.array([[m[k] for k in names] for m in runs["1x1"][0]["metrics"]])
    assert want.shape == (STEPS, len(names)) and np.all(np.isfinite(want))
    base = runs["1x1"][1]
    moved = {k: np.abs(base[k] - base[k.replace("['trained']", "['initial']", 1)]).max()
             for k in base if k.startswith("['trained']")}
    # The steps move both LoRA (reg and the generator's): a disagreement would show.
    assert max(v for k, v in moved.items() if "['reg']" in k) > 10 * PARAM_ATOL
    assert max(v for k, v in moved.items() if "['gen']['unet_lora']" in k) > 10 * PARAM_ATOL
    for name in ("1x4", "2x2"):
        got = np.array([[m[k] for k in names] for m in runs[name][0]["metrics"]])
        rel = np.abs(got - want) / np.abs(want)
        print(f"{name} vs 1x1: largest relative loss difference {rel.max():.2e}")
        assert rel.max() <= LOSS_RTOL, name
        params = runs[name][1]
        diff = max(np.abs(params[k] - base[k]).max() for k in moved)
        print(f"{name} vs 1x1: largest parameter difference {diff:.2e}")
        assert diff <= PARAM_ATOL, name
    two, four = runs["2x2"][0]["metrics"], runs["1x4"][0]["metrics"]
    assert max(abs(a[k] - b[k]) / abs(b[k]) for a, b in zip(two, four) for k in names) <= LOSS_RTOL


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
