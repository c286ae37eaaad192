"""A demonstration on any machine, without model weights:

  python -m osediff_jax.demo --out demo_out

builds a small SD-2.x-shaped model with RANDOM weights as a real diffusers folder, converts it to our
checkpoint, adds random OSEDiff LoRA weights, merges them, and runs the one-step generator on a
photograph that scikit-image ships (downscaled 4x, then upscaled back). The pipeline and the file
formats are the real ones; the output image is not: real results need the SD-2.1-base weights and
the authors' osediff.pkl (see README).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from osediff_jax.cli.common import EXIT_CODES, OK, USAGE, Interrupted, UsageError, check_writable_dir, error, \
    interrupts, user_path
from osediff_jax.files import images
from osediff_jax.inference.sr import encode_prompt
from osediff_jax.inference.tiling import make_upscale_fn
from osediff_jax.models import tokenizer
from osediff_jax.weights import bundle, osediff_pkl, random_sd


NAMES = ("lq.png", "bicubic.png", "sr.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m osediff_jax.demo", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", type=user_path, help="folder for lq.png, bicubic.png and sr.png "
                        "(default demo_out)")
    parser.add_argument("--size", type=int, default=256, help="output size in pixels, a multiple of 4 (the LQ is "
                        "size/4; default 256)")
    parser.add_argument("--overwrite", action="store_true", help="replace the three images if they exist "
                        "(default: refuse)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < 8 or args.size % 4:
        parser.error(f"--size must be a multiple of 4, at least 8; got {args.size}")
    with interrupts() as check:
        try:
            code = _run(args.out, args.size, args.overwrite)
            check()  # a signal whose exception was swallowed (see interrupts)
            return code
        except UsageError as e:
            error(str(e))
            return USAGE
        except Interrupted as e:
            done = [n for n in NAMES if (args.out / n).exists()]
            print(f"interrupted ({e}); written: {', '.join(done) or 'nothing'}", file=sys.stderr)
            return e.exit_code


def _run(out: Path, size: int, overwrite: bool) -> int:
    try:
        from skimage import data
    except ImportError:
        raise UsageError("the demo photograph comes from scikit-image: pip install 'osediff-jax[demo]'") from None
    existing = [n for n in NAMES if (out / n).exists()]
    if existing and not overwrite:
        raise UsageError(f"{out}: {', '.join(existing)} exist; pass --overwrite to replace them")
    check_writable_dir(out)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        print("1/4 writing a random SD-2.x-shaped diffusers folder and converting it to our checkpoint")
        random_sd.write_random_sd(Path(tmp) / "random-sd")
        model = bundle.load(Path(tmp) / "random-sd")
        bundle.save(Path(tmp) / "ckpt", model.params, model.configs, model.tokenizer_dir)
        model = bundle.load(Path(tmp) / "ckpt")
        ids = tokenizer.tokenize(tokenizer.load_tokenizer(model.tokenizer_dir), ["a photo of an astronaut"])
    print("2/4 random OSEDiff LoRA (rank 4) merged into the UNet and the VAE encoder")
    w = osediff_pkl.new(jax.random.key(0), model.params["unet"], model.params["vae"], model.params["unet"])
    unet, vae = jax.jit(w.merge)(model.params["unet"], model.params["vae"])

    print("3/4 the LQ: scikit-image's astronaut, downscaled 4x, upsampled back with PIL bicubic")
    photo = Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC)
    lq = photo.resize((size // 4, size // 4), Image.BICUBIC)
    up = np.asarray(lq.resize((size, size), Image.BICUBIC))

    print("4/4 text encoder, then the jitted one-step generator")
    emb = jax.jit(encode_prompt, static_argnums=0)(model.modules["text_encoder"], model.params["text_encoder"], ids)
    fn = jax.jit(make_upscale_fn(model.modules["unet"], model.modules["vae"], model.alphas_cumprod))
    sr = fn({"unet": unet, "vae": vae}, images.to_float(up)[None], emb)
    images.write_png(out / "lq.png", np.asarray(lq))
    images.write_png(out / "bicubic.png", up)
    images.write_png(out / "sr.png", images.from_float(np.asarray(sr[0])))
    print(f"wrote {out}/: lq.png ({size // 4}x{size // 4}), bicubic.png and sr.png ({size}x{size}) in "
          f"{time.time() - start:.0f} s.\n"
          "The weights were random, so sr.png is not a super-resolved photo: for real results convert the "
          "SD-2.1-base weights and the authors' osediff.pkl (README, 'Real weights').")
    return OK


if __name__ == "__main__":
    sys.exit(main())
