"""Checkpoint conversion.

  python -m osediff_jax.convert sd --src SD21_DIFFUSERS_DIR --dst CKPT_DIR
  python -m osediff_jax.convert export-sd --src CKPT_DIR --dst DIFFUSERS_DIR
  python -m osediff_jax.convert osediff --sd-path SD --src osediff.pkl --dst OSEDIFF_DIR
  python -m osediff_jax.convert export-osediff --src OSEDIFF_DIR --dst osediff.pkl
  python -m osediff_jax.convert merge --sd-path SD --osediff OSEDIFF_DIR_OR_PKL --dst MERGED_DIR
  python -m osediff_jax.convert random --dst DIR
  python -m osediff_jax.convert metrics --src WEIGHTS_DIR --dst METRIC_CKPT
  python -m osediff_jax.convert ram --src ram_swin_large_14m.pth --dst RAM_DIR
  python -m osediff_jax.convert dape --ram ram_swin_large_14m.pth --src DAPE.pth --dst DAPE_DIR

SD is a diffusers SD-2.1-base folder or its converted checkpoint. `merge` writes an inference
checkpoint (LoRA folded into the UNet and VAE) that `osediff_jax.weights.bundle.load` and
`upscale --checkpoint` read. `metrics` turns a folder of the evaluation metrics' weight files
(`evaluate --help` lists them; needs PyTorch) into one Orbax checkpoint that `evaluate --weights`
reads without PyTorch; it converts every metric whose files are all present. `ram` and `dape`
convert the tagger that writes the prompts (RAM; DAPE = RAM with the authors' LoRA merged in).
`random` writes a small random SD-shaped model and OSEDiff weights (DIR/sd, DIR/osediff,
DIR/merged) for trying the commands without the real weights. Reading or
writing osediff.pkl needs PyTorch (pip install 'osediff-jax[torch]'). Destinations must not exist
(or be empty folders): nothing is ever overwritten; every output is written beside its final name
and renamed when complete.
"""

from __future__ import annotations

import argparse
import sys
import time

from osediff_jax.cli.common import EXIT_CODES, OK, USAGE, Interrupted, UsageError, check_writable_dir, error, \
    interrupts, user_path
from osediff_jax.metrics.weights import MissingWeightsError
from osediff_jax.weights import bundle, osediff_pkl, ram_format, random_sd
from osediff_jax.weights.torch_format import CheckpointError

SD_HELP = "SD-2.1-base: a diffusers folder or our converted checkpoint (`convert sd`)"
# name -> (what it does, {flag: help} of its arguments besides --dst, help of --dst, the library call)
COMMANDS = {
    "sd": ("diffusers SD-2.x folder -> our Orbax checkpoint",
           {"--src": "a diffusers SD-2.x folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)"},
           "the new checkpoint folder", lambda a: bundle.convert_diffusers(a.src, a.dst)),
    "export-sd": ("our checkpoint (or a diffusers folder) -> diffusers folder",
                  {"--src": "our SD checkpoint folder (or a diffusers folder)"}, "the new diffusers folder",
                  lambda a: bundle.export_diffusers(bundle.load(a.src), a.dst)),
    "osediff": ("the authors' osediff.pkl -> our OSEDiff checkpoint",
                {"--sd-path": SD_HELP + ", for the parameter shapes", "--src": "the authors' osediff.pkl"},
                "the new OSEDiff checkpoint folder",
                lambda a: osediff_pkl.save(osediff_pkl.read_pkl(a.src, *osediff_pkl.base_shapes(a.sd_path)), a.dst)),
    "export-osediff": ("our OSEDiff checkpoint -> the authors' osediff.pkl format",
                       {"--src": "our OSEDiff checkpoint folder (`convert osediff`)"}, "the new .pkl file",
                       lambda a: osediff_pkl.write_pkl(osediff_pkl.load(a.src), a.dst)),
    "merge": ("SD + OSEDiff weights -> merged inference checkpoint",
              {"--sd-path": SD_HELP, "--osediff": "the authors' osediff.pkl or our OSEDiff checkpoint folder"},
              "the new merged checkpoint folder (for `upscale --checkpoint`)",
              lambda a: osediff_pkl.save_merged(a.sd_path, a.osediff, a.dst)),
    "metrics": ("the metrics' weight files -> one Orbax checkpoint for `evaluate --weights`",
                {"--src": "the folder of metric weight files (`python -m osediff_jax.evaluate --help` lists them)"},
                "the new metric checkpoint folder", lambda a: _convert_metrics(a.src, a.dst)),
    "ram": ("RAM's ram_swin_large_14m.pth -> our RAM checkpoint (the training prompts' tagger)",
            {"--src": "RAM's checkpoint, ram_swin_large_14m.pth"}, "the new RAM checkpoint folder",
            lambda a: ram_format.convert(a.src, a.dst)),
    "dape": ("RAM + the authors' DAPE.pth LoRA -> our DAPE checkpoint (the inference prompts' tagger)",
             {"--ram": "RAM's checkpoint, ram_swin_large_14m.pth", "--src": "the authors' DAPE.pth"},
             "the new DAPE checkpoint folder", lambda a: ram_format.convert(a.ram, a.dst, dape=a.src)),
    "random": ("a small random SD-shaped model and OSEDiff weights, to try the commands", {},
               "the new folder: gets sd/, osediff/ and merged/", lambda a: random_sd.write_random_models(a.dst)),
}


def _convert_metrics(src, dst) -> None:
    from osediff_jax.metrics.registry import METRICS, convert_weights
    done = convert_weights(src, dst)
    skipped = [m for m, v in METRICS.items() if v.params is not None and m not in done]
    print(f"converted: {', '.join(done)}" + (f"; not converted (files absent): {', '.join(skipped)}" if skipped else ""))


def _check_dst(dst) -> None:
    """Before any model is read: the destination must be new (or an empty folder) and writable."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise UsageError(f"{dst}: exists and is not empty; refusing to overwrite it")
    check_writable_dir(dst.parent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m osediff_jax.convert", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    for name, (help_text, flags, dst_help, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES)
        for flag, flag_help in flags.items():
            p.add_argument(flag, required=True, type=user_path, help=flag_help)
        p.add_argument("--dst", required=True, type=user_path, help=dst_help + "; must not exist yet")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    with interrupts() as check:
        try:
            _check_dst(args.dst)
            COMMANDS[args.command][3](args)
            check()  # a signal whose exception was swallowed (see interrupts)
        except (CheckpointError, FileExistsError, ValueError, MissingWeightsError) as e:
            error(str(e))
            return USAGE
        except OSError as e:  # disk full, permissions, ...: the partial output is already removed
            error(f"{args.dst}: not written ({e.strerror or e})")
            return USAGE
        except Interrupted as e:
            print(f"interrupted ({e}); nothing was written to {args.dst}", file=sys.stderr)
            return e.exit_code
    print(f"{args.command}: wrote {args.dst} in {time.time() - start:.1f} s")
    return OK


if __name__ == "__main__":
    sys.exit(main())
