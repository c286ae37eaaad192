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

from osediff_jax.weights import bundle, osediff_pkl
from osediff_jax.weights.torch_format import CheckpointError

# name -> (what it does, its arguments beyond --dst, the library call)
COMMANDS = {
    "sd": ("diffusers SD-2.x folder -> our Orbax checkpoint", ("--src",),
           lambda a: bundle.convert_diffusers(a.src, a.dst)),
    "export-sd": ("our checkpoint (or a diffusers folder) -> diffusers folder", ("--src",),
                  lambda a: bundle.export_diffusers(bundle.load(a.src), a.dst)),
    "osediff": ("the authors' osediff.pkl -> our OSEDiff checkpoint", ("--sd-path", "--src"),
                lambda a: osediff_pkl.save(osediff_pkl.read_pkl(a.src, *osediff_pkl.base_shapes(a.sd_path)), a.dst)),
    "export-osediff": ("our OSEDiff checkpoint -> the authors' osediff.pkl format", ("--src",),
                       lambda a: osediff_pkl.write_pkl(osediff_pkl.load(a.src), a.dst)),
    "merge": ("SD + OSEDiff weights -> merged inference checkpoint", ("--sd-path", "--osediff"),
              lambda a: osediff_pkl.save_merged(a.sd_path, a.osediff, a.dst)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osediff_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, flags, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        for flag in flags:
            p.add_argument(flag, required=True)
        p.add_argument("--dst", required=True)
    args = parser.parse_args(argv)
    start = time.time()
    try:
        COMMANDS[args.command][2](args)
    except (CheckpointError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.command}: wrote {args.dst} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
