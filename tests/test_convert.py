"""`convert sd` / `convert export-sd` round trip on a folder written by diffusers and transformers,
and clear errors for bad checkpoints."""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.numpy import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from osediff_jax import convert
from osediff_jax.weights import random_sd
from tests.references.sd import SMALL_UNET, SMALL_VAE, nchw, randomize_

pytestmark = pytest.mark.reference

torch.set_grad_enabled(False)
LEGACY = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _legacy(key: str) -> str:
    for new, old in LEGACY.items():
        if "mid_block.attentions.0." + new + "." in key:
            return key.replace("attentions.0." + new + ".", "attentions.0." + old + ".")
    return key


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A diffusers SD folder: fp32 UNet, fp16 VAE with legacy attention names, fp32 text encoder."""
    root = tmp_path_factory.mktemp("sd")
    randomize_(UNet2DConditionModel(**SMALL_UNET), seed=5).save_pretrained(root / "unet")
    randomize_(AutoencoderKL(**SMALL_VAE), seed=6).half().save_pretrained(root / "vae")
    vae_file = root / "vae" / "diffusion_pytorch_model.safetensors"
    save_file({_legacy(k): v for k, v in load_file(vae_file).items()}, vae_file, metadata={"format": "pt"})
    vocab = random_sd.write_char_tokenizer(root / "tokenizer")
    te = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu"))
    randomize_(te, seed=7).save_pretrained(root / "text_encoder")
    te_file = root / "text_encoder" / "model.safetensors"  # real SD-2.x files have this prefix
    state = {f"text_model.{k}": v for k, v in load_file(te_file).items()}
    state["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    save_file(state, te_file, metadata={"format": "pt"})
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(random_sd.SCHEDULER))
    return root


def _tensors(folder, name):
    return load_file(next((folder / name).glob("*.safetensors")))


def test_round_trip_is_bit_exact_and_loads_in_diffusers(src, tmp_path, capsys):
    assert convert.main(["sd", "--src", str(src), "--dst", str(tmp_path / "ckpt")]) == 0
    assert convert.main(["export-sd", "--src", str(tmp_path / "ckpt"), "--dst", str(tmp_path / "out")]) == 0
    for name in ("unet", "vae", "text_encoder"):
        before, after = _tensors(src, name), _tensors(tmp_path / "out", name)
        if name == "vae":
            after = {_legacy(k): v for k, v in after.items()}
            assert any(".query." in k for k in after)  # the source really had legacy names
        assert sorted(before) == sorted(after)
        for k in before:
            assert before[k].dtype == after[k].dtype, k
            assert before[k].tobytes() == after[k].tobytes(), k
    assert (tmp_path / "out" / "tokenizer" / "vocab.json").read_bytes() == (src / "tokenizer" / "vocab.json").read_bytes()

    # diffusers and transformers load the export and compute what the originals compute.
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32))
    ctx = torch.randn(1, 3, 24, generator=torch.Generator().manual_seed(0))
    u0, u1 = (UNet2DConditionModel.from_pretrained(f / "unet") for f in (src, tmp_path / "out"))
    assert torch.equal(u0(x, 10, ctx).sample, u1(x, 10, ctx).sample)
    ids = torch.tensor([[0, 5, 9, 1]])
    t0, t1 = (CLIPTextModel.from_pretrained(f / "text_encoder") for f in (src, tmp_path / "out"))
    assert torch.equal(t0(ids).last_hidden_state, t1(ids).last_hidden_state)
    vae = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae", torch_dtype=torch.float16).float()
    ref = randomize_(AutoencoderKL(**SMALL_VAE), seed=6).half().float()
    img = nchw(np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32))
    assert torch.equal(vae.encode(img).latent_dist.mean, ref.encode(img).latent_dist.mean)


def test_existing_destination_is_refused(src, tmp_path, capsys):
    dst = tmp_path / "ckpt"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    assert convert.main(["sd", "--src", str(src), "--dst", str(dst)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")]  # no temporary folder left


def _convert_error(folder, tmp_path, capsys) -> str:
    assert convert.main(["sd", "--src", str(folder), "--dst", str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "dst").exists()
    return err


def test_missing_unet_weights(src, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    err = _convert_error(bad, tmp_path, capsys)
    assert str(bad / "unet") in err and "no weights found" in err


def test_truncated_safetensors(src, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    f = bad / "unet" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    err = _convert_error(bad, tmp_path, capsys)
    assert str(f) in err


def test_shape_mismatch_names_the_weight(src, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "unet" / "config.json").read_text())
    cfg["cross_attention_dim"] = 32
    (bad / "unet" / "config.json").write_text(json.dumps(cfg))
    err = _convert_error(bad, tmp_path, capsys)
    assert str(bad / "unet") in err and "attn2.to_k.weight" in err and "(32, 32)" in err


@pytest.mark.parametrize("component,key,value", [("unet", "act_fn", "gelu"), ("vae", "up_block_types", ["X"] * 3),
                                                 ("unet", "down_block_types", ["SimpleDown"] * 3)])
def test_unsupported_config_value(src, tmp_path, capsys, component, key, value):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / component / "config.json").read_text())
    cfg[key] = value
    (bad / component / "config.json").write_text(json.dumps(cfg))
    err = _convert_error(bad, tmp_path, capsys)
    assert str(bad / component / "config.json") in err and key in err and repr(value[0] if key.endswith("types") and component == "unet" else value) in err
