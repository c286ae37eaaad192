"""Image files in, image files out: a loaded, jitted upscaler and the per-image work around it
(upsampling, bit depth, gray, alpha), as `python -m osediff_jax.upscale` runs it."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.files import images
from osediff_jax.inference.sr import encode_prompt
from osediff_jax.inference.tagger import make_prompt_fn
from osediff_jax.inference.tiling import make_upscale_fn
from osediff_jax.inference.upsample import upsample
from osediff_jax.models import tag_prompts, tokenizer
from osediff_jax.weights import bundle, osediff_pkl, ram_format
from osediff_jax.weights.torch_format import CheckpointError

# ITU-R 601 luma, PIL's convert("L"): the network's RGB output becomes gray with the weights that
# turned the user's gray image into the RGB the network saw.
_LUMA = np.array([0.299, 0.587, 0.114])


class UpscaleError(ValueError):
    """An image the network could not upscale; the caller names the file."""


@dataclasses.dataclass
class Upscaler:
    """The jitted upscale function (compiled once per input shape) and what it is applied with."""

    fn: Callable[..., jax.Array]
    params: dict[str, Any]
    prompt_embeds: jax.Array  # the user's prompt alone, used without a tagger
    prompt: str = ""
    # With a tagger: jitted (params, lq) -> (embeddings, tags) of the upsampled LQ, its params, the tag names.
    prompt_fn: Callable[..., tuple[jax.Array, jax.Array]] | None = None
    prompt_params: Any = None
    tag_names: list[str] | None = None


def load_upscaler(*, checkpoint: str | os.PathLike | None = None, sd_path: str | os.PathLike | None = None,
                  osediff: str | os.PathLike | None = None, prompt: str = "", dtype: Any = jnp.float32,
                  color_fix: str = "adain", tile: int = 96, tile_overlap: int = 32,
                  tagger: tuple[str | os.PathLike, str | os.PathLike | None] | None = None) -> Upscaler:
    """From a merged bundle (`checkpoint`), or from SD-2.1 (`sd_path`: diffusers folder or bundle)
    plus the OSEDiff weights (`osediff`: osediff.pkl or our converted folder), merged here.

    `tagger` = (RAM/DAPE checkpoint or RAM .pth, DAPE.pth to merge into that .pth or None): each
    image's prompt is then f"{tags}, {prompt}," with the tags of its upsampled LQ, as the authors'
    `test_osediff.py` writes it; without one, `prompt` as given."""
    if checkpoint is not None:
        model = bundle.load(checkpoint, dtype=dtype)
        if "osediff" not in model.configs:
            raise CheckpointError(
                f"{checkpoint}: an SD checkpoint without OSEDiff weights; make a merged one with "
                f"`python -m osediff_jax.convert merge`, or give --sd-path and --osediff-ckpt")
        params = {"unet": model.params["unet"], "vae": model.params["vae"]}
    else:
        if sd_path is None or osediff is None:
            raise ValueError("give either a merged checkpoint, or both the SD-2.1 path and the OSEDiff weights")
        model = bundle.load(sd_path, dtype=dtype)
        w = osediff_pkl.load(osediff, model.params["unet"], model.params["vae"])
        # Jitted: one compiled program instead of thousands of small eager ops.
        params = dict(zip(("unet", "vae"), jax.jit(w.merge)(model.params["unet"], model.params["vae"])))
    tok = tokenizer.load_tokenizer(model.tokenizer_dir)
    embeds = jax.jit(encode_prompt, static_argnums=0)(model.modules["text_encoder"], model.params["text_encoder"],
                                                      tokenizer.tokenize(tok, [prompt]))
    fn = make_upscale_fn(model.modules["unet"], model.modules["vae"], model.alphas_cumprod,
                         color_fix=color_fix, latent_tile=tile, latent_overlap=tile_overlap)
    net = Upscaler(jax.jit(fn), params, embeds, prompt)
    if tagger is not None:
        ram, ram_params = ram_format.load(*tagger, dtype=dtype)
        names, thresholds = tag_prompts.load_tag_list()
        if ram.config.num_classes != len(names):
            raise CheckpointError(f"{tagger[0]}: the tagger has {ram.config.num_classes} classes; RAM's tag list has {len(names)}")
        prompt_fn = make_prompt_fn(ram, model.modules["text_encoder"], tag_prompts.tag_table(tok, names), thresholds,
                                   tag_prompts.user_suffix(tok, prompt), return_tags=True)
        net = dataclasses.replace(net, prompt_fn=jax.jit(prompt_fn), tag_names=names,
                                  prompt_params={"ram": ram_params, "text_encoder": model.params["text_encoder"]})
    return net


def upscale_image(net: Upscaler, decoded: images.Decoded, scale: int, key: jax.Array | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(rgb, alpha, prompt) of the output, in the input's bit depth; gray inputs give gray (equal)
    channels; the prompt the image was upscaled with."""
    lq = jnp.asarray(upsample(decoded.rgb, scale)[None])
    embeds, prompt = net.prompt_embeds, net.prompt
    if net.prompt_fn is not None:
        embeds, present = net.prompt_fn(net.prompt_params, lq)
        prompt = tag_prompts.prompt_text(net.tag_names, np.asarray(present[0]), net.prompt)
    sr = np.asarray(net.fn(net.params, lq, embeds, key)[0], np.float32)
    if not np.isfinite(sr).all():
        h, w = sr.shape[:2]
        why = ("the adain colour fix needs at least 2 pixels: use --color-fix none" if h * w == 1
               else "try --dtype float32")
        raise UpscaleError(f"the network's {w}x{h} output is not finite ({why})")
    if decoded.gray:
        sr = np.repeat((sr.astype(np.float64) @ _LUMA)[..., None], 3, axis=-1)
    alpha = None
    if decoded.alpha is not None:
        alpha = images.from_float(upsample(decoded.alpha[..., None], scale)[..., 0], decoded.bits)
    return images.from_float(sr, decoded.bits), alpha, prompt
