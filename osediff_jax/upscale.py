"""Upscale images with OSEDiff: one network step per image, the output exactly `scale` x the input.

  python -m osediff_jax.upscale --sd-path SD21_DIR --osediff-ckpt osediff.pkl --input IMG_OR_DIR --output OUT
  python -m osediff_jax.upscale --checkpoint MERGED_DIR --input IMG_OR_DIR --output OUT

Each image is upsampled by --scale with PIL bicubic (as the authors' release does on the 8-bit
image; 16-bit images are upsampled in float), run through the network and written as
OUT/<stem>.png: 8 or 16 bits as the input, grayscale stays grayscale, alpha is upsampled on its own
and kept. With a tagger (--dape, as the authors run it, or --ram) each image's prompt is
"{tags}, {prompt}," with the tags of its upsampled LQ; without one, --prompt as given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
from PIL import Image
from tqdm import tqdm

from osediff_jax.cli.common import (EXIT_CODES, OK, SOME_FAILED, USAGE, Interrupted, UsageError, check_writable_dir,
                                    error, interrupts, user_path)
from osediff_jax.files import images
from osediff_jax.files.atomic import write_bytes
from osediff_jax.inference import color_fix
from osediff_jax.inference.pipeline import UpscaleError, load_upscaler, upscale_image
from osediff_jax.weights.torch_format import CheckpointError

def _inputs(src: Path) -> list[Path]:
    return images.list_images(src) if src.is_dir() else [src]


def _check_paths(src: Path, out: Path) -> str | None:
    """Why the command must not run on these paths, or None."""
    if not src.exists():
        return f"{src}: no such file or directory"
    folder = src if src.is_dir() else src.parent
    if out.exists() and not out.is_dir():
        return f"{out}: exists and is not a directory"
    if out.resolve() == folder.resolve():
        return f"--output {out} is the input folder; choose another folder so that no input can be overwritten"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m osediff_jax.upscale", description=__doc__, epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model: --sd-path with --osediff-ckpt, or --checkpoint")
    src.add_argument("--sd-path", type=user_path, help="SD-2.1-base: a diffusers folder or our converted SD checkpoint")
    src.add_argument("--osediff-ckpt", type=user_path, help="the authors' osediff.pkl, or a folder converted by `convert osediff`")
    src.add_argument("--checkpoint", type=user_path, help="a merged inference checkpoint (`convert merge`) instead of the two above")
    p.add_argument("--input", required=True, type=user_path, help="an image file, or a folder of PNG/JPEG/WebP/TIFF/BMP images")
    p.add_argument("--output", required=True, type=user_path, help="output folder (not the input folder); gets <stem>.png")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist (default: keep "
                   "them and skip their inputs, so that an interrupted batch resumes where it stopped)")
    p.add_argument("--max-pixels", type=int, default=images.MAX_PIXELS, metavar="N",
                   help=f"refuse inputs of more than N pixels, checked from the file header before decoding "
                   f"(default {images.MAX_PIXELS:,}, Pillow's limit)")
    p.add_argument("--prompt", default="", help="text prompt (default: empty); with a tagger it follows the "
                   "image's tags: \"{tags}, {prompt},\"")
    tag = p.add_argument_group("tagger: the prompt from the image, as the authors' DAPE writes it")
    tag.add_argument("--tagger", choices=("dape", "ram", "none"),
                     help="default: dape when --dape is given, else none")
    tag.add_argument("--dape", type=user_path, help="DAPE: a folder from `convert dape`, or the authors' DAPE.pth "
                     "(LoRA only: then --ram too)")
    tag.add_argument("--ram", type=user_path, help="RAM: ram_swin_large_14m.pth or a folder from `convert ram`")
    tag.add_argument("--verbose", action="store_true", help="print each image's prompt")
    tag.add_argument("--save-prompts", action="store_true", help="write each image's prompt to OUT/<stem>.txt")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor, a positive integer (default 4; "
                   "1 for the face model)")
    p.add_argument("--color-fix", choices=color_fix.METHODS, default="adain", help="default: adain")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of the networks (weights stay as stored)")
    p.add_argument("--posterior", choices=("mean", "sample"), default="mean",
                   help="VAE latent: posterior mean (deterministic, default) or a sample seeded by --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of --posterior sample; image i (in name order) "
                   "uses fold_in(key(seed), i)")
    p.add_argument("--tile", type=int, default=96, metavar="N",
                   help="UNet tile size in latent pixels, 1/8 of output pixels (default 96)")
    p.add_argument("--tile-overlap", type=int, default=32, metavar="N",
                   help="overlap of UNet tiles in latent pixels (default 32)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if bool(args.checkpoint) == bool(args.sd_path or args.osediff_ckpt):
        p.error("give either --checkpoint, or both --sd-path and --osediff-ckpt")
    if not args.checkpoint and not (args.sd_path and args.osediff_ckpt):
        p.error("--sd-path and --osediff-ckpt go together")
    if args.scale < 1:
        p.error(f"--scale must be a positive integer, got {args.scale}")
    if args.tile < 1 or not 0 <= args.tile_overlap < args.tile:
        p.error(f"expected --tile >= 1 and 0 <= --tile-overlap < --tile, got {args.tile} and {args.tile_overlap}")
    args.tagger = args.tagger or ("dape" if args.dape else "none")
    if args.tagger == "dape" and (not args.dape or (args.dape.is_file() and not args.ram)):
        p.error("--tagger dape needs --dape (a `convert dape` folder, or DAPE.pth with --ram)")
    if args.tagger == "ram" and not args.ram:
        p.error("--tagger ram needs --ram")
    return args


def _tagger(args: argparse.Namespace) -> tuple[Path, Path | None] | None:
    """(checkpoint, DAPE LoRA file to merge into it) for load_upscaler."""
    if args.tagger == "dape":
        return (args.ram, args.dape) if args.dape.is_file() else (args.dape, None)
    return (args.ram, None) if args.tagger == "ram" else None


def _summary(written: int, total: int, out: Path, kept: list[Path], failed: list[str]) -> None:
    print(f"upscaled {written} of {total} image(s) into {out}", file=sys.stderr)
    if kept:
        print(f"{len(kept)} already there, kept (--overwrite replaces them): "
              f"{', '.join(p.name for p in kept[:5])}{' ...' if len(kept) > 5 else ''}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} failed:", *(f"  {m}" for m in failed), sep="\n", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with interrupts() as check:
        try:
            return _run(args, check)
        except Interrupted as e:
            print(f"interrupted ({e}) before any image was written", file=sys.stderr)
            return e.exit_code


def _run(args: argparse.Namespace, check: Callable[[], None]) -> int:
    src, out = args.input, args.output
    try:
        problem = _check_paths(src, out)
        files = [] if problem else _inputs(src)
        if not problem and not files:
            problem = f"{src}: no images ({', '.join(images.SUFFIXES)})"
        if problem:
            raise UsageError(problem)
        check_writable_dir(out)  # before minutes of model loading
        if args.max_pixels > Image.MAX_IMAGE_PIXELS:  # the user's explicit choice, for this process
            Image.MAX_IMAGE_PIXELS = args.max_pixels
        net = load_upscaler(checkpoint=args.checkpoint, sd_path=args.sd_path, osediff=args.osediff_ckpt, prompt=args.prompt, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32,
                            color_fix=args.color_fix, tile=args.tile, tile_overlap=args.tile_overlap,
                            tagger=_tagger(args))
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        error(str(e))
        return USAGE

    failed: list[str] = []
    kept: list[Path] = []
    written: dict[Path, Path] = {}
    seed_key = jax.random.key(args.seed)
    try:
        for i, path in enumerate(tqdm(files, desc="upscale", unit="img", disable=len(files) < 2)):
            check()
            dst = out / f"{path.stem}.png"
            if dst.exists() and dst not in written and not args.overwrite:
                kept.append(dst)
                continue
            try:
                if dst in written:
                    raise UpscaleError(f"its output {dst} is already written from {written[dst]}")
                decoded = images.decode(path, args.max_pixels)
                key = None if args.posterior == "mean" else jax.random.fold_in(seed_key, i)
                rgb, alpha, prompt = upscale_image(net, decoded, args.scale, key)
                images.write_png(dst, rgb, alpha, gray=decoded.gray)
                if args.save_prompts:
                    write_bytes(dst.with_suffix(".txt"), prompt.encode())
                if args.verbose:
                    tqdm.write(f"{path.name}: {prompt}")
            except images.ImageReadError as e:  # names the file
                failed.append(str(e))
            except UpscaleError as e:
                failed.append(f"{path}: {e}")
            except OSError as e:  # the output could not be written: read-only, disk full, ...
                failed.append(f"{dst}: not written ({e.strerror or e})")
            else:
                written[dst] = path
                continue
            tqdm.write(f"skipped: {failed[-1]}", file=sys.stderr)
        check()
    except Interrupted as e:
        print(f"interrupted ({e})", file=sys.stderr)
        _summary(len(written), len(files), out, kept, failed)
        return e.exit_code
    _summary(len(written), len(files), out, kept, failed)
    return SOME_FAILED if failed else OK


if __name__ == "__main__":
    sys.exit(main())
