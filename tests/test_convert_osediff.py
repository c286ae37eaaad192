"""convert osediff / export-osediff / merge from the command line, and the merged checkpoint in sr_fn."""

import jax
import numpy as np
import pytest
import torch

from osediff_jax import convert
from osediff_jax.inference import sr
from osediff_jax.weights import bundle, diffusers_format, osediff_pkl, random_sd

pytestmark = pytest.mark.reference


def _trained(w: osediff_pkl.OSEDiffWeights, seed: int) -> osediff_pkl.OSEDiffWeights:
    """Non-zero B everywhere, as after training."""
    rng = np.random.default_rng(seed)
    bump = lambda t: jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32), t)
    w.unet_lora, w.vae_lora = bump(w.unet_lora), bump(w.vae_lora)
    return w


def test_cli_round_trip_and_merged_checkpoint(tmp_path):
    random_sd.write_random_sd(tmp_path / "sd", seed=4)
    base = diffusers_format.load_diffusers(tmp_path / "sd")
    w = _trained(osediff_pkl.new(jax.random.key(0), base.params["unet"], base.params["vae"], base.params["unet"]), 1)
    osediff_pkl.write_pkl(w, tmp_path / "osediff.pkl")

    run = lambda *a: convert.main([str(x) for x in a])
    assert run("osediff", "--sd-path", tmp_path / "sd", "--src", tmp_path / "osediff.pkl", "--dst", tmp_path / "od") == 0
    assert run("export-osediff", "--src", tmp_path / "od", "--dst", tmp_path / "again.pkl") == 0
    a, b = (torch.load(tmp_path / f, weights_only=True) for f in ("osediff.pkl", "again.pkl"))
    assert {k: v for k, v in a.items() if not k.startswith("state")} == {k: v for k, v in b.items() if not k.startswith("state")}
    for k in ("state_dict_unet", "state_dict_vae"):
        assert list(a[k]) == list(b[k]) and all(torch.equal(a[k][n], b[k][n]) for n in a[k])

    assert run("sd", "--src", tmp_path / "sd", "--dst", tmp_path / "sd-ckpt") == 0
    assert run("merge", "--sd-path", tmp_path / "sd-ckpt", "--osediff", tmp_path / "osediff.pkl",
               "--dst", tmp_path / "merged") == 0
    merged = bundle.load(tmp_path / "merged")
    lq = np.random.default_rng(2).uniform(0, 1, (1, 32, 24, 3)).astype(np.float32)
    emb = np.random.default_rng(3).standard_normal((1, 77, 64)).astype(np.float32)
    sr_fn = jax.jit(sr.make_sr_fn(merged.modules["unet"], merged.modules["vae"], merged.alphas_cumprod))
    from_ckpt = sr_fn({"unet": merged.params["unet"], "vae": merged.params["vae"]}, lq, emb)
    unet, vae = jax.jit(w.merge)(base.params["unet"], base.params["vae"])
    in_memory = sr_fn({"unet": unet, "vae": vae}, lq, emb)
    np.testing.assert_array_equal(np.asarray(from_ckpt), np.asarray(in_memory))
    unmerged = sr_fn({"unet": base.params["unet"], "vae": base.params["vae"]}, lq, emb)
    assert np.abs(np.asarray(unmerged) - np.asarray(in_memory)).max() > 1e-3  # the LoRA does something


def test_pkl_errors_name_the_file(tmp_path, capsys):
    random_sd.write_random_sd(tmp_path / "sd", seed=5)
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    assert convert.main(["osediff", "--sd-path", str(tmp_path / "sd"), "--src", str(tmp_path / "bad.pkl"),
                         "--dst", str(tmp_path / "od")]) == 2
    assert str(tmp_path / "bad.pkl") in capsys.readouterr().err
    torch.save({"rank_unet": 4}, tmp_path / "partial.pkl")
    assert convert.main(["osediff", "--sd-path", str(tmp_path / "sd"), "--src", str(tmp_path / "partial.pkl"),
                         "--dst", str(tmp_path / "od")]) == 2
    err = capsys.readouterr().err
    assert "partial.pkl" in err and "state_dict_unet" in err
