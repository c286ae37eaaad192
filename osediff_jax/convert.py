"""Checkpoint conversion.

  python -m osediff_jax.convert sd --src SD21_DIFFUSERS_DIR --dst CKPT_DIR
  python -m osediff_jax.convert export-sd --src CKPT_DIR --dst DIFFUSERS_DIR
"""

from __future__ import annotations

import argparse
import sys
import time

from osediff_jax import checkpoint, sd, weights


def convert_sd(src: str, dst: str) -> None:
    model = sd.load_diffusers(src)
    checkpoint.save(dst, model.params, model.configs, model.tokenizer_dir)


def export_sd(src: str, dst: str) -> None:
    checkpoint.export_diffusers(checkpoint.load(src), dst)


COMMANDS = {
    "sd": (convert_sd, "diffusers SD-2.x folder -> our Orbax checkpoint"),
    "export-sd": (export_sd, "our checkpoint (or a diffusers folder) -> diffusers folder"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osediff_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--src", required=True)
        p.add_argument("--dst", required=True)
    args = parser.parse_args(argv)
    start = time.time()
    try:
        COMMANDS[args.command][0](args.src, args.dst)
    except (weights.CheckpointError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.command}: wrote {args.dst} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
