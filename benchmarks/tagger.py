"""Images per second of the RAM/DAPE tagger (Swin-L at 384 + the tagging head, 4585 classes), ours
against the PyTorch reference (timm's Swin and transformers' BERT layers wired as the authors' RAM,
`tests/references/ram.py`), same random weights, same machine, same run; median of --iters calls
after a warm-up. Ours includes the on-device resize to 384 and normalisation; the reference gets
images already at 384 (its transforms are cheap next to the network).

    python -m benchmarks.tagger --batch 1 --iters 5
    python -m benchmarks.tagger --device gpu --batch 16 --dtype bfloat16
"""

from __future__ import annotations

import argparse

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from osediff_jax.inference import tagger  # noqa: E402
from osediff_jax.models.ram import RAM, RAMConfig  # noqa: E402
from osediff_jax.weights.ram_format import param_shapes, ram_params, tagging_tensors  # noqa: E402
from tests.references import ram as ref  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="our compute dtype; the reference runs float32 on the CPU, float16 on the GPU")
    args = parser.parse_args()
    dev = harness.setup(args.device)
    cfg = RAMConfig()
    sd = ref.random_state_dict(cfg)
    x = np.random.default_rng(0).random((args.batch, 384, 384, 3), np.float32)

    td = torch.float16 if dev == "cuda" else torch.float32
    model = ref.RAMTagger(cfg, sd).to(dev, td)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev, td)
    ref_ms = harness.time_ms(lambda: model(xt), args.iters, harness.torch_sync(dev))
    model = None  # its memory back before ours loads
    harness.free_torch(dev)

    params = ram_params(tagging_tensors(ref.to_numpy(sd).items()), param_shapes(cfg), "benchmark")
    del sd
    ram = RAM(cfg, dtype=jnp.dtype(args.dtype))
    fn = jax.jit(lambda p, i: tagger.tag_logits(ram, p, i))
    xj = jax.device_put(x)
    ours_ms = harness.time_ms(lambda: fn(params, xj), args.iters, harness.jax_sync)

    rows = [["reference (timm Swin-L + transformers BERT, PyTorch)", f"{ref_ms:.0f}", f"{args.batch / ref_ms * 1e3:.2f}"],
            [f"ours (Flax, {args.dtype}, jitted, resize included)", f"{ours_ms:.0f}", f"{args.batch / ours_ms * 1e3:.2f}"]]
    harness.print_table(f"RAM tagger, batch {args.batch}, {args.device}: ours/reference speed {ref_ms / ours_ms:.2f}x",
                        ["path", "ms per batch", "images/s"], rows)


if __name__ == "__main__":
    main()
