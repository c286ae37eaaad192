"""A small SD-2.x-shaped model with random weights, written as a real diffusers folder.

For demonstrations and tests on machines without the SD-2.1-base weights: every file is in the
format of the real checkpoint (safetensors, configs, CLIP tokenizer files), only smaller. Its
outputs are meaningless images; real results need the real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from osediff_jax.models import schedule
from osediff_jax.models.tokenizer import bytes_to_unicode
from osediff_jax.models.sd import COMPONENTS, build_module, param_shapes
from osediff_jax.files.atomic import atomic_dir
from osediff_jax.weights import bundle, osediff_pkl
from osediff_jax.weights.diffusers_format import StableDiffusion

UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [2, 4], "block_out_channels": [32, 64],
    "center_input_sample": False, "cross_attention_dim": 64,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "norm_eps": 1e-5,
    "norm_num_groups": 8, "out_channels": 4, "sample_size": 64, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}
VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [16, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 8,
    "sample_size": 512,
}
SCHEDULER = {"_class_name": "DDPMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon", "clip_sample": False}
SPECIAL_TOKENS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
                  "unk_token": "<|endoftext|>"}


def write_char_tokenizer(folder: Path) -> int:
    """A CLIP BPE tokenizer with single characters only (no merges), SD-2's special tokens; returns its size."""
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, "do_lower_case": True}))
    return len(vocab)


def _draw(rng: np.random.Generator, leaf: str, shape: tuple[int, ...]) -> np.ndarray:
    """Small random values everywhere (norm scales near 1), so that every weight matters."""
    d = rng.standard_normal(shape).astype(np.float32)
    if leaf == "scale":
        return 1.0 + 0.1 * d
    if len(shape) == 1:
        return 0.1 * d
    return d / np.float32(np.sqrt(np.prod(shape[:-1])))


def write_random_sd(dst: str | Path, seed: int = 0) -> None:
    """Writes a diffusers folder (unet, vae, text_encoder, tokenizer, scheduler) with random weights."""
    dst = Path(dst)
    staging = dst.parent / f".{dst.name}.tokenizer"
    vocab_size = write_char_tokenizer(staging)
    text = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "gelu",
            "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4, "num_hidden_layers": 2,
            "max_position_embeddings": 77, "vocab_size": vocab_size, "layer_norm_eps": 1e-5, "projection_dim": 64}
    configs = {"unet": UNET, "vae": VAE, "text_encoder": text, "scheduler": SCHEDULER}
    rng = np.random.default_rng(seed)
    params = {name: jax.tree_util.tree_map_with_path(lambda path, s: _draw(rng, path[-1].key, s.shape),
                                                     param_shapes(name, build_module(name, configs[name])))
              for name in COMPONENTS}
    model = StableDiffusion({}, params, configs, schedule.alphas_cumprod(), staging)
    try:
        bundle.export_diffusers(model, dst)
    finally:
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()


def write_random_models(dst: str | Path, seed: int = 0) -> None:
    """Everything the commands read, random and small, in a new folder `dst`: `sd/` (a diffusers
    SD-2.x folder), `osediff/` (OSEDiff LoRA weights, our format: rank 4, A random, B zero as at
    the start of training) and `merged/` (the inference bundle of both, for `upscale --checkpoint`)."""
    with atomic_dir(dst) as tmp:
        write_random_sd(tmp / "sd", seed)
        model = bundle.load(tmp / "sd", ("unet", "vae"))
        w = osediff_pkl.new(jax.random.key(seed), model.params["unet"], model.params["vae"], model.params["unet"])
        osediff_pkl.save(w, tmp / "osediff")
        osediff_pkl.save_merged(tmp / "sd", tmp / "osediff", tmp / "merged")
