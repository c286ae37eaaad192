"""Evaluate super-resolved images against ground truth with the OSEDiff paper's metrics.

    python -m osediff_jax.evaluate --pred DIR --gt DIR [--metrics psnr,ssim,niqe,...|all]
        [--weights DIR] [--json FILE]

Images are paired by file stem. Prints a per-image table and the means in the paper's column
order; `--json` writes {"per_image": {name: {metric: value}}, "mean": {metric: value}} (FID only
under "mean"). PSNR, SSIM and NIQE need no setup; LPIPS, DISTS, FID, MUSIQ, MANIQA and CLIPIQA read
weight files from `--weights` (osediff_jax/metrics/weights.py lists each file and its origin), or
the checkpoint `python -m osediff_jax.convert metrics` makes of them (read without PyTorch). Images
are scored in sorted file order (MANIQA's random crops depend on it, as in pyiqa)."""

from __future__ import annotations

import argparse
import sys

from PIL import Image

from osediff_jax.cli.common import (EXIT_CODES, OK, USAGE, Interrupted, check_new_file, error, interrupts,
                                    user_path)
from osediff_jax.files.atomic import write_json
from osediff_jax.files.images import MAX_PIXELS
from osediff_jax.metrics import registry
from osediff_jax.metrics.evaluation import DEFAULT_METRICS, evaluate, format_table, pair_images, parse_metrics


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m osediff_jax.evaluate", description=__doc__.split("\n")[0],
                                 epilog="metrics:\n" + registry.describe() + "\n\n" + EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred", required=True, type=user_path, help="folder of super-resolved images")
    ap.add_argument("--gt", required=True, type=user_path, help="folder of ground-truth images (same file stems)")
    ap.add_argument("--metrics", default=DEFAULT_METRICS,
                    help=f"comma-separated subset of {','.join(registry.METRICS)}, or 'all' (default {DEFAULT_METRICS})")
    ap.add_argument("--weights", default=None, type=user_path,
                    help="folder with the weight files the chosen metrics read (listed below), or the "
                    "checkpoint `python -m osediff_jax.convert metrics` made of them")
    ap.add_argument("--json", default=None, type=user_path, help="write per-image values and means to this JSON file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file (default: refuse)")
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                    help=f"refuse images of more than N pixels, checked from the file header before decoding "
                    f"(default {MAX_PIXELS:,}, Pillow's limit)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    done: dict[str, dict[str, float]] = {}
    with interrupts() as check:
        try:
            metrics = parse_metrics(args.metrics)
            if args.json is not None:
                check_new_file(args.json, args.overwrite)  # before the evaluation, not after it
            if args.max_pixels > Image.MAX_IMAGE_PIXELS:  # the user's explicit choice, for this process
                Image.MAX_IMAGE_PIXELS = args.max_pixels
            result = evaluate(args.pred, args.gt, metrics, args.weights, max_pixels=args.max_pixels, per_image=done)
            check()  # a signal whose exception was swallowed (see interrupts)
            print(format_table(result, metrics))
            if args.json is not None:
                write_json(args.json, result)
        except (ValueError, FileNotFoundError, ImportError) as e:
            # Bad inputs, missing or unreadable weight files: one message naming the file.
            error(str(e))
            return USAGE
        except OSError as e:
            error(f"{args.json}: not written ({e.strerror or e})")
            return USAGE
        except Interrupted as e:
            print(f"interrupted ({e}) after {len(done)} of {len(pair_images(args.pred, args.gt))} image pairs; "
                  f"no results written", file=sys.stderr)
            return e.exit_code
    return OK


if __name__ == "__main__":
    sys.exit(main())
