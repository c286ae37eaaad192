"""Speed of one self-attention call: ours (`models.attention.dot_product_attention`, jitted) against
PyTorch's `scaled_dot_product_attention`, in the same run, on the same random inputs; on the CPU
also ours with other query-block sizes (`attention.CPU_BLOCK_LOGITS`).

    python -m benchmarks.attention                        # CPU, 4096 tokens (SD's 64x64 latent), 5 heads of 64
    python -m benchmarks.attention --tokens 1024 --heads 10

Median of --iters calls after a warm-up, each measurement repeated --repeats times in turn (ours, each
block size, PyTorch) so that a noisy moment hits every row alike.
"""

from __future__ import annotations

import argparse
import functools

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from osediff_jax.models import attention  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5, help="timed calls after one warm-up call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-logits", type=int, nargs="*", default=[2**19, 2**20, 2**22, 2**23],
                        help="other CPU query-block sizes to time (logits per block)")
    args = parser.parse_args()
    harness.setup("cpu")
    rng = np.random.default_rng(0)
    shape = (args.batch, args.tokens, args.heads, args.head_dim)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    tq, tk, tv = (torch.from_numpy(x).transpose(1, 2).contiguous() for x in (q, k, v))

    def ours(block: int):
        # The block size is read at trace time: a fresh jit per size.
        def call(q, k, v):
            old, attention.CPU_BLOCK_LOGITS = attention.CPU_BLOCK_LOGITS, block
            try:
                return attention.dot_product_attention(q, k, v)
            finally:
                attention.CPU_BLOCK_LOGITS = old
        return functools.partial(jax.jit(call), q, k, v)

    rows = {f"ours, blocks of 2^{attention.CPU_BLOCK_LOGITS.bit_length() - 1} logits (default)":
            ours(attention.CPU_BLOCK_LOGITS)}
    rows.update({f"ours, blocks of 2^{b.bit_length() - 1} logits": ours(b) for b in args.block_logits
                 if b != attention.CPU_BLOCK_LOGITS})
    rows["PyTorch SDPA"] = lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    want = rows["PyTorch SDPA"]().transpose(1, 2).numpy()
    err = max(float(np.abs(np.asarray(f()) - want).max()) for name, f in rows.items() if name.startswith("ours"))
    times = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, f in rows.items():
            sync = harness.jax_sync if name.startswith("ours") else harness.torch_sync("cpu")
            times[name].append(harness.time_ms(f, args.iters, sync))
    ref = float(np.median(times["PyTorch SDPA"]))
    harness.print_table(
        f"self-attention on the CPU, float32: batch {args.batch}, {args.tokens} tokens, {args.heads} heads of "
        f"{args.head_dim}; median of {args.iters} calls, {args.repeats} times in turn; largest difference from "
        f"PyTorch {err:.1e}",
        ["kernel", "ms (each repeat)", "median ms", "ratio PyTorch/this"],
        [[name, " / ".join(f"{t:.1f}" for t in ts), f"{np.median(ts):.1f}", f"{ref / np.median(ts):.2f}"]
         for name, ts in times.items()])


if __name__ == "__main__":
    main()
