"""The `osediff.pkl` that training exports is the authors' format in practice: loaded as their
`OSEDiff_test.load_ckpt` loads it (diffusers + peft), it gives the `sr_fn` output of the generator
in our training checkpoint. Trains 2 steps of the tiny config (the compiled step is shared with
tests/test_train_command.py through the persistent compilation cache)."""

import jax
import numpy as np
import pytest
import torch

from osediff_jax.inference.sr import make_sr_fn
from osediff_jax.models import lora
from osediff_jax.training import checkpoints
from osediff_jax.weights import bundle, osediff_pkl
from tests.references import osediff as ref_lib
from tests.references.sd import nchw, nhwc
from tests.test_train_command import cache, fresh, run  # noqa: F401 (cache: a fixture)

pytestmark = pytest.mark.reference


def test_exported_pkl_loads_with_peft_and_matches_our_checkpoint(tmp_path, cache):  # noqa: F811
    cwd = fresh(tmp_path)
    r = run(cwd, cache, "run", "--config.steps=2")
    assert r.returncode == 0, r.stderr[-3000:]
    _, state, _ = checkpoints.read(cwd / "run" / "checkpoints")
    gen = state["gen"]

    base = bundle.load(cwd / "run" / "random_sd")
    unet_p, vae_p = base.params["unet"], base.params["vae"]
    w = osediff_pkl.OSEDiffWeights(gen["unet_lora"], gen["vae_lora"], gen["conv_in"], 4, 4,
                                   lora.unet_target_lists(unet_p), lora.vae_target_list(vae_p))
    params = dict(zip(("unet", "vae"), w.merge(unet_p, vae_p)))
    rng = np.random.default_rng(0)
    lq01 = rng.uniform(0, 1, (2, 32, 40, 3)).astype(np.float32)
    emb = rng.standard_normal((1, 77, 64)).astype(np.float32)
    sr_fn = jax.jit(make_sr_fn(base.modules["unet"], base.modules["vae"], base.alphas_cumprod, color_fix="none"))
    ours = np.asarray(sr_fn(params, lq01, emb)) * 2 - 1

    unet, vae = ref_lib.load_authors(cwd / "run" / "random_sd", cwd / "run" / "export" / "step_2" / "osediff.pkl")
    with torch.no_grad():
        want = nhwc(ref_lib.forward(unet, vae, nchw(lq01 * 2 - 1), torch.from_numpy(emb).expand(2, -1, -1)))
    err = float(np.abs(ours - want).max())
    print(f"exported osediff.pkl through peft vs our checkpoint's sr_fn: max abs diff {err:.2e} on [-1, 1]")
    assert np.abs(want).max() > 0.1 and err <= 1e-4
