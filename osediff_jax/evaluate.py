"""Evaluate super-resolved images against ground truth with the OSEDiff paper's metrics.

    python -m osediff_jax.evaluate --pred DIR --gt DIR [--metrics psnr,ssim,niqe,lpips,dists,fid]
        [--weights DIR] [--json FILE]

Images are paired by file stem. Prints a per-image table and the means in the paper's column
order; `--json` writes {"per_image": {name: {metric: value}}, "mean": {metric: value}} (FID only
under "mean"). PSNR, SSIM and NIQE need no setup; LPIPS, DISTS and FID read weight files from
`--weights` (osediff_jax/metrics/weights.py lists each file and its origin)."""

from __future__ import annotations

import argparse
import sys

from osediff_jax.files.atomic import write_json
from osediff_jax.metrics import registry
from osediff_jax.metrics.evaluation import (
    DEFAULT_METRICS,
    evaluate,
    format_table,
    parse_metrics,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m osediff_jax.evaluate", description=__doc__.split("\n")[0],
                                 epilog="metrics:\n" + registry.describe(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred", required=True, help="folder of super-resolved images")
    ap.add_argument("--gt", required=True, help="folder of ground-truth images (same file stems)")
    ap.add_argument("--metrics", default=DEFAULT_METRICS,
                    help=f"comma-separated subset of {','.join(registry.METRICS)}, or 'all' (default {DEFAULT_METRICS})")
    ap.add_argument("--weights", default=None, help="folder with the weight files the chosen metrics read (below)")
    ap.add_argument("--json", default=None, help="write per-image values and means to this JSON file")
    args = ap.parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        result = evaluate(args.pred, args.gt, metrics, args.weights)
    except (ValueError, FileNotFoundError, ImportError) as e:
        # Bad inputs, missing or unreadable weight files: one message naming the file.
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result, metrics))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
