"""The `osediff.pkl` that training exports is the authors' format in practice: loaded as their
`OSEDiff_test.load_ckpt` loads it (diffusers + peft), it gives the `sr_fn` output of the generator
in our training checkpoint. The run is tests/test_train_command.py's reference run of the tiny config
(a session fixture of tests/conftest.py), read at its end."""

import jax
import numpy as np
import pytest
import torch

from osediff_jax.inference.sr import make_sr_fn
from osediff_jax.models import lora
from osediff_jax.weights import bundle, osediff_pkl
from tests.references import osediff as ref_lib
from tests.references.sd import nchw, nhwc
from tests.training_runs import STEPS

pytestmark = pytest.mark.reference


def test_exported_pkl_loads_with_peft_and_matches_our_checkpoint(reference):
    workdir, step, state, _ = reference
    assert step == STEPS
    gen = state["gen"]

    base = bundle.load(workdir / "random_sd")
    unet_p, vae_p = base.params["unet"], base.params["vae"]
    w = osediff_pkl.OSEDiffWeights(gen["unet_lora"], gen["vae_lora"], gen["conv_in"], 4, 4,
                                   lora.unet_target_lists(unet_p), lora.vae_target_list(vae_p))
    params = dict(zip(("unet", "vae"), w.merge(unet_p, vae_p)))
    rng = np.random.default_rng(0)
    lq01 = rng.uniform(0, 1, (2, 32, 40, 3)).astype(np.float32)
    emb = rng.standard_normal((1, 77, 64)).astype(np.float32)
    sr_fn = jax.jit(make_sr_fn(base.modules["unet"], base.modules["vae"], base.alphas_cumprod, color_fix="none"))
    ours = np.asarray(sr_fn(params, lq01, emb)) * 2 - 1

    unet, vae = ref_lib.load_authors(workdir / "random_sd", workdir / "export" / f"step_{STEPS}" / "osediff.pkl")
    with torch.no_grad():
        want = nhwc(ref_lib.forward(unet, vae, nchw(lq01 * 2 - 1), torch.from_numpy(emb).expand(2, -1, -1)))
    err = float(np.abs(ours - want).max())
    print(f"exported osediff.pkl through peft vs our checkpoint's sr_fn: max abs diff {err:.2e} on [-1, 1]")
    assert np.abs(want).max() > 0.1 and err <= 1e-4
