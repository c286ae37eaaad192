"""RAM's tagging path against PyTorch on the same random weights saved in the authors' key format:
the Swin image encoder against timm's (loaded through timm's `checkpoint_filter_fn`), the whole
logits against timm's Swin + a tagging head assembled from transformers' BERT layers, and DAPE's LoRA
merge against loralib's own merge. float32; a small RAM-shaped configuration (shifted windows in the
first stages, a last stage as large as its window, as Swin-L at 384 has)."""

import dataclasses

import jax
import jax.numpy as jnp
import loralib
import numpy as np
import pytest
import torch

from osediff_jax.inference import tagger
from osediff_jax.models.ram import RAM, RAMConfig, SwinEncoder
from osediff_jax.weights.ram_format import (convert, infer_config, load, merge_dape, ram_params, read_dape, read_ram,
                                            tagging_tensors)
from osediff_jax.weights.torch_format import CheckpointError
from tests.references import ram as ref

pytestmark = pytest.mark.reference

SMALL = RAMConfig(image_size=96, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=6, num_classes=37,
                  embed_width=24, head_layers=2, head_hidden=32, head_heads=4, head_intermediate=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path of a RAM-format checkpoint {'model': state dict}, the state dict)."""
    sd = ref.random_state_dict(SMALL)
    path = tmp_path_factory.mktemp("ram") / "ram_small.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    return path, sd


def _params(cfg, tensors):
    shapes = jax.eval_shape(RAM(cfg).init, jax.random.key(0), jnp.zeros((1, cfg.image_size, cfg.image_size, 3)))
    return ram_params(tensors, shapes["params"], "test")


def _images(cfg, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, cfg.image_size, cfg.image_size, 3)).astype(np.float32)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_swin_encoder_matches_timm(checkpoint):
    path, sd = checkpoint
    params = _params(SMALL, read_ram(path))
    x = _images(SMALL)
    ours = np.asarray(jax.jit(SwinEncoder(SMALL).apply)({"params": params["visual_encoder"]}, x))
    with torch.no_grad():
        tokens = ref.timm_swin_encoder(SMALL, sd).forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).flatten(1, 2)
    want = torch.cat([tokens.mean(1, keepdim=True), tokens], 1).numpy()
    assert ours.shape == want.shape == (2, 1 + 6 * 6, SMALL.vision_width)
    assert _rel(ours, want) < 1e-5


def test_logits_match_reference(checkpoint):
    path, sd = checkpoint
    params = _params(SMALL, read_ram(path))
    x = _images(SMALL, 3, seed=1)
    ours = np.asarray(jax.jit(RAM(SMALL).apply)({"params": params}, x))
    with torch.no_grad():
        want = ref.RAMTagger(SMALL, sd)(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert ours.shape == want.shape == (3, SMALL.num_classes)
    assert _rel(ours, want) < 1e-4
    # Tag decisions at a threshold away from every logit agree.
    t = np.median(want)
    far = np.abs(want - t) > 1e-3 * np.abs(want).max()
    np.testing.assert_array_equal((ours > t)[far], (want > t)[far])


def test_swin_l_encoder_once():
    """The real Swin-L shape at 384 (window 12, 18-block stage), a single image."""
    cfg = dataclasses.replace(RAMConfig(), num_classes=5)
    sd = ref.random_state_dict(cfg, seed=2)
    params = _params(cfg, tagging_tensors(ref.to_numpy(sd).items()))
    x = _images(cfg, 1, seed=2)
    ours = np.asarray(jax.jit(SwinEncoder(cfg).apply)({"params": params["visual_encoder"]}, x))
    with torch.no_grad():
        tokens = ref.timm_swin_encoder(cfg, sd).forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).flatten(1, 2)
    assert ours.shape == (1, 145, 1536)
    assert _rel(ours[:, 1:], tokens.numpy()) < 1e-4


def _lora_modules(seed=0):
    torch.manual_seed(seed)
    qkv = loralib.MergedLinear(16, 48, r=8, lora_alpha=1, enable_lora=[True, False, True])
    query = loralib.Linear(24, 32, r=8, lora_alpha=1)
    for m in (qkv, query):  # non-zero B, as a trained DAPE has it
        torch.nn.init.normal_(m.lora_A)
        torch.nn.init.normal_(m.lora_B)
    return {"visual_encoder.layers.0.blocks.0.attn.qkv": qkv, "tagging_head.encoder.layer.0.crossattention.self.query": query}


def test_dape_merge_matches_loralib(tmp_path):
    modules = _lora_modules()
    ram = {f"{name}.weight": m.weight.detach().numpy().copy() for name, m in modules.items()}
    dape = {f"{name}.{k}": getattr(m, k).detach().numpy() for name, m in modules.items() for k in ("lora_A", "lora_B")}
    torch.save({k: torch.from_numpy(v) for k, v in dape.items()}, tmp_path / "DAPE.pth")
    merged = merge_dape(ram, read_dape(tmp_path / "DAPE.pth"))
    for name, m in modules.items():
        m.eval()  # loralib merges the adapter into the weight here
        want = m.weight.detach().numpy()
        assert np.abs(want - ram[f"{name}.weight"]).max() > 1e-3  # the merge changed something
        np.testing.assert_allclose(merged[f"{name}.weight"], want, rtol=0, atol=1e-6)


def test_bad_files(tmp_path, checkpoint):
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth: no RAM tagging weights"):
        read_ram(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a DAPE LoRA file.*'something'"):
        read_dape(tmp_path / "other.pth")
    path, sd = checkpoint
    tensors = read_ram(path)
    del tensors["fc.bias"]
    with pytest.raises(CheckpointError, match="fc.bias"):
        _params(SMALL, tensors)


def test_preprocess_matches_torchvision():
    """The reference's `Resize((384, 384))` on a tensor, as torchvision 0.15 ran it (no antialiasing)."""
    from torchvision import transforms

    x = np.random.default_rng(3).random((2, 200, 130, 3), np.float32)
    t = transforms.Compose([transforms.Resize((384, 384), antialias=False),
                            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    want = t(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(tagger.preprocess(x)), want, rtol=0, atol=1e-5)
    # The option: torchvision's antialiased tensor Resize (its default since 0.17).
    t.transforms[0] = transforms.Resize((384, 384), antialias=True)
    want = t(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    small = np.random.default_rng(4).random((1, 700, 500, 3), np.float32)  # shrinking, where it differs
    want_small = t(torch.from_numpy(small).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    # 1e-4: torch's antialiased kernel computes its weights in float32, ours in float64.
    np.testing.assert_allclose(np.asarray(tagger.preprocess(x, antialias=True)), want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(tagger.preprocess(small, antialias=True)), want_small, rtol=0, atol=1e-4)
    assert np.abs(np.asarray(tagger.preprocess(small)) - want_small).max() > 1e-2


def test_prompt_fn_equals_step_by_step(checkpoint, tmp_path_factory):
    """tags -> ids -> CLIP in one jitted function equals tagging, joining the tag strings,
    CLIPTokenizer and the text encoder one after the other (SD-2's real tokenizer; a small random
    text encoder with CLIP's vocabulary)."""
    from osediff_jax.models.tag_prompts import tag_table, user_suffix
    from osediff_jax.models.text_encoder import CLIPTextModel
    from osediff_jax.models.tokenizer import load_tokenizer, tokenize
    from tests.references import SHARED
    from tests.references.clip_tokenizer import write_clip_tokenizer_folder

    folder = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer_folder(folder, SHARED / "reference" / "sd21-base" / "tokenizer")
    tokenizer = load_tokenizer(folder)
    names = [f"tag {i}" if i % 3 else f"thing-{i})" for i in range(SMALL.num_classes)]
    path, _ = checkpoint
    ram_p = _params(SMALL, read_ram(path))
    te = CLIPTextModel(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    te_p = te.init(jax.random.key(1), jnp.zeros((1, 77), jnp.int32))["params"]
    x = np.random.default_rng(4).random((3, 64, 48, 3), np.float32)
    logits = np.asarray(jax.jit(lambda p, i: tagger.tag_logits(RAM(SMALL), p, i))(ram_p, x))
    thresholds = np.sort(1 / (1 + np.exp(-logits[0])))[len(names) // 2] + np.zeros(len(names), np.float32)
    present = 1 / (1 + np.exp(-logits)) > thresholds
    assert present.any(axis=1).all() and not present.all()
    for suffix_text in (None, "a photo"):
        suffix = None if suffix_text is None else user_suffix(tokenizer, suffix_text)
        fn = jax.jit(tagger.make_prompt_fn(RAM(SMALL), te, tag_table(tokenizer, names), thresholds, suffix))
        ours = np.asarray(fn({"ram": ram_p, "text_encoder": te_p}, x))
        joined = [", ".join(n for n, on in zip(names, row) if on) for row in present]
        if suffix_text is not None:
            joined = [f"{j}, {suffix_text}," for j in joined]
        want = np.asarray(te.apply({"params": te_p}, tokenize(tokenizer, joined)))
        np.testing.assert_allclose(ours, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_infer_config_and_convert_round_trip(checkpoint, tmp_path):
    """The architecture read back from the tensors' shapes (the real file is Swin-L; tests use a small
    model in the same format), and `convert` -> `load` gives the parameters read from the .pth."""
    path, _ = checkpoint
    small = dataclasses.replace(SMALL, image_size=384)  # the input size is not in the shapes: RAM's 384
    assert infer_config(read_ram(path), "x") == small
    assert infer_config(tagging_tensors(ref.to_numpy(ref.random_state_dict(RAMConfig(num_classes=5))).items()),
                        "x") == RAMConfig(num_classes=5)
    convert(path, tmp_path / "ram")
    module, params = load(tmp_path / "ram")
    assert module.config == small
    direct = _params(SMALL, read_ram(path))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, direct)


def _random_dape(cfg: RAMConfig, seed: int = 5) -> dict[str, torch.Tensor]:
    """A DAPE.pth in the authors' format: loralib tensors on every Swin qkv and head query/key."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (depth, dim) in enumerate(zip(cfg.depths, (cfg.embed_dim * 2**i for i in range(len(cfg.depths))))):
        for j in range(depth):
            key = f"visual_encoder.layers.{i}.blocks.{j}.attn.qkv"
            out[f"{key}.lora_A"], out[f"{key}.lora_B"] = torch.randn(16, dim, generator=g), torch.randn(2 * dim, 8, generator=g)
    for layer in range(cfg.head_layers):
        for name, inp in (("query", cfg.head_hidden), ("key", cfg.embed_width)):
            key = f"tagging_head.encoder.layer.{layer}.crossattention.self.{name}"
            out[f"{key}.lora_A"], out[f"{key}.lora_B"] = torch.randn(8, inp, generator=g), torch.randn(cfg.head_hidden, 8, generator=g)
    return out


def test_upscale_with_dape(tmp_path):
    """`convert dape` and `upscale --dape` as a user runs them, on the random SD model of `convert
    random` and a small random RAM with RAM's 4585 classes and DAPE LoRA, both in the authors' files."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    cfg = dataclasses.replace(SMALL, num_classes=4585)
    torch.save({"model": ref.random_state_dict(cfg, seed=6)}, tmp_path / "ram_swin_large_14m.pth")
    torch.save(_random_dape(cfg), tmp_path / "DAPE.pth")
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{name}.png")

    def run(*argv):
        return subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})

    assert run("osediff_jax.convert", "random", "--dst", "models").returncode == 0
    r = run("osediff_jax.convert", "dape", "--ram", "ram_swin_large_14m.pth", "--src", "DAPE.pth", "--dst", "dape")
    assert r.returncode == 0, r.stderr
    upscale = ("osediff_jax.upscale", "--checkpoint", "models/merged", "--input", "photos", "--scale", "2")
    r = run(*upscale, "--output", "out", "--dape", "dape", "--prompt", "a photo", "--verbose", "--save-prompts")
    assert r.returncode == 0, r.stderr
    printed = dict(line.split(": ", 1) for line in r.stdout.splitlines() if line.startswith(("a.png", "b.png")))
    assert set(printed) == {"a.png", "b.png"}
    for name, prompt in printed.items():
        assert prompt.endswith(", a photo,") and len(prompt) > len(", a photo,")  # some tags, then the user's prompt
        assert (tmp_path / "out" / name).with_suffix(".txt").read_text() == prompt
    # The raw files work too (merged on the fly), and give the same prompts.
    r = run(*upscale, "--output", "out2", "--dape", "DAPE.pth", "--ram", "ram_swin_large_14m.pth", "--prompt", "a photo",
            "--save-prompts")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out2" / "a.txt").read_text() == printed["a.png"]
    # A missing or wrong checkpoint: one line, exit 2, before any image.
    for bad, what in (("nowhere", "nowhere"), ("models/merged", "neither a RAM .pth file nor a converted")):
        r = run(*upscale, "--output", "out3", "--dape", bad)
        assert r.returncode == 2 and what in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run(*upscale, "--output", "out3", "--tagger", "dape")
    assert r.returncode == 2 and "--tagger dape needs --dape" in r.stderr
    assert not (tmp_path / "out3").exists() or not any((tmp_path / "out3").iterdir())
