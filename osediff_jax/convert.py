"""Checkpoint conversion.

  python -m osediff_jax.convert sd --src SD21_DIFFUSERS_DIR --dst CKPT_DIR
  python -m osediff_jax.convert export-sd --src CKPT_DIR --dst DIFFUSERS_DIR
  python -m osediff_jax.convert osediff --sd-path SD --src osediff.pkl --dst OSEDIFF_DIR
  python -m osediff_jax.convert export-osediff --src OSEDIFF_DIR --dst osediff.pkl
  python -m osediff_jax.convert merge --sd-path SD --osediff OSEDIFF_DIR_OR_PKL --dst MERGED_DIR

SD is a diffusers SD-2.1-base folder or its converted checkpoint. `merge` writes an inference
checkpoint (LoRA folded into the UNet and VAE) that `checkpoint.load` and `upscale --checkpoint` read.
Reading or writing osediff.pkl needs PyTorch (pip install 'osediff-jax[torch]').
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

from osediff_jax import checkpoint, osediff_weights, sd, weights


def convert_sd(args: argparse.Namespace) -> None:
    model = sd.load_diffusers(args.src)
    checkpoint.save(args.dst, model.params, model.configs, model.tokenizer_dir)


def export_sd(args: argparse.Namespace) -> None:
    checkpoint.export_diffusers(checkpoint.load(args.src), args.dst)


def base_shapes(sd_path: str) -> tuple:
    """UNet and VAE parameter shapes from the base model's configs alone."""
    configs = checkpoint.load_configs(sd_path)
    return tuple(sd.param_shapes(c, sd.build_module(c, configs[c], source=f"{sd_path}: {c} config"))
                 for c in ("unet", "vae"))


def convert_osediff(args: argparse.Namespace) -> None:
    osediff_weights.save(osediff_weights.read_pkl(args.src, *base_shapes(args.sd_path)), args.dst)


def export_osediff(args: argparse.Namespace) -> None:
    osediff_weights.write_pkl(osediff_weights.load(args.src), args.dst)


def merge(args: argparse.Namespace) -> None:
    model = checkpoint.load(args.sd_path)
    w = osediff_weights.load(args.osediff, *base_shapes(args.sd_path))
    params = dict(model.params)
    params["unet"], params["vae"] = jax.jit(w.merge)(params["unet"], params["vae"])
    # Marks the UNet and VAE as OSEDiff's (LoRA merged), so that a plain SD checkpoint is not taken for one.
    configs = {**model.configs, "osediff": {"merged": True, "rank_unet": w.rank_unet, "rank_vae": w.rank_vae}}
    checkpoint.save(args.dst, params, configs, model.tokenizer_dir)


COMMANDS = {
    "sd": (convert_sd, "diffusers SD-2.x folder -> our Orbax checkpoint", ()),
    "export-sd": (export_sd, "our checkpoint (or a diffusers folder) -> diffusers folder", ()),
    "osediff": (convert_osediff, "the authors' osediff.pkl -> our OSEDiff checkpoint", ("--sd-path",)),
    "export-osediff": (export_osediff, "our OSEDiff checkpoint -> the authors' osediff.pkl format", ()),
    "merge": (merge, "SD + OSEDiff weights -> merged inference checkpoint", ("--sd-path", "--osediff")),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osediff_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text, extra) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        for flag in extra:
            p.add_argument(flag, required=True)
        if name != "merge":
            p.add_argument("--src", required=True)
        p.add_argument("--dst", required=True)
    args = parser.parse_args(argv)
    start = time.time()
    try:
        COMMANDS[args.command][0](args)
    except (weights.CheckpointError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.command}: wrote {args.dst} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
