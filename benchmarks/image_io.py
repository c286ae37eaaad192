"""16-bit PNG read + write time for a 2048x2048 RGB photograph (a RealSR HR image upsampled, with
random low bits so that all 16 bits carry data), median of 5 calls each.

    python -m benchmarks.image_io [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from osediff_jax.files import images
from tests.references import SHARED


def _photo16(size: int) -> np.ndarray:
    hr = sorted((SHARED / "data" / "realsr" / "HR").glob("*.png"))[0]
    rgb = np.asarray(Image.open(hr).convert("RGB").resize((size, size), Image.BICUBIC), np.uint16)
    return rgb * 257 + np.random.default_rng(0).integers(0, 257, rgb.shape, dtype=np.uint16)


def _median_s(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    a = _photo16(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo16.png"
        write = _median_s(lambda: images.write_png(path, a))
        read = _median_s(lambda: images.decode(path))
        assert np.array_equal(images.decode(path).rgb, a)
        size = path.stat().st_size
    print(json.dumps({"size": args.size, "read_s": round(read, 3), "write_s": round(write, 3),
                      "read_plus_write_s": round(read + write, 3), "file_mb": round(size / 2**20, 1)}))


if __name__ == "__main__":
    main()
