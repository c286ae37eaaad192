"""Memory and FLOPs of the full SD-2.1-base training step (`make_train_step`: degradation, generator,
VSD, regulariser, both AdamW updates) at 512x512, bf16 compute, from XLA's compiled analysis: no
weights are needed (frozen parameters are abstract bf16 shapes, `frozen_dtype="bfloat16"`; the
trainable LoRA, conv_in and optimiser states float32), prompt embeddings given (no text encoder in
the step). Beside XLA's FLOPs, a count of our own: 2 * MACs of every Dense / Conv and the two
attention matmuls per forward pass, traced by interception, composed into the step by hand.

  python -m benchmarks.train_memory --run b4        # one configuration per process (compiling is heavy)
  python -m benchmarks.train_memory --run count     # the FLOP count alone, no compilation
  python -m benchmarks.train_memory --run stored --remat none   # activations kept for the backward
  python -m benchmarks.train_memory --run b1-merged --lowered   # XLA's FLOPs before optimisation
  python -m benchmarks.train_memory --run b4 --gpu-program      # the GPU's code paths, compiled for the CPU
  python -m benchmarks.train_memory --run b4 --xla-dump /tmp/d  # + the peak without CPU-only buffers

Runs: b4 (batch 4, no remat: must fit 40 GB), b1-remat (batch 1, remat: must fit 20 GB), b1 and
b1-merged (batch 1, no remat, LoRA unmerged / merged into the kernels: the FLOPs of each).
On the CPU this is what XLA plans for the CPU; a GPU's plan has the same program and can differ.

What XLA plans for a GPU, without one (deviceless ahead-of-time compilation): the GPU's code paths
compiled by XLA's GPU compiler for a target description: a GpuTargetConfigProto text file, e.g.
XLA's own xla/tools/hlo_opt/gpu_specs/h100_sxm.txtpb (openxla/xla, Apache-2.0) with the two version
blocks that cuDNN-dependent rewrites read added at its end (`dnn_version_info { major: 9 minor: 8 }`
and `runtime_version { major: 12 minor: 8 }`, what jax-cuda12-plugin 0.10.2 requires at least). It
needs JAX's CUDA plugin, kept out of the project's environment (installed there, it would become
JAX's default backend wherever a GPU is found):

  python -m venv --system-site-packages .venv-gpuaot    # the project's packages stay visible
  .venv-gpuaot/bin/pip install --no-deps jax-cuda12-plugin==0.10.2 jax-cuda12-pjrt==0.10.2
  .venv-gpuaot/bin/python -m benchmarks.train_memory --run b4 --gpu-target h100_sxm.txtpb
  .venv-gpuaot/bin/python -m benchmarks.train_memory --run b1-remat --gpu-target h100_sxm.txtpb

(the plugin's version is JAX's; no CUDA, cuDNN or driver libraries are needed to compile). Autotuning
is off (it times kernels on the device) and matrix products go to cuBLAS: the plan is that of XLA's
default kernel choices. A compile-only executable has no cost analysis: FLOPs are then counted from
the optimised program's matrix products and convolutions (`hlo_flops`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import math
import os
import re
import time
from pathlib import Path

from benchmarks import harness  # first: sets JAX's allocator before the backend starts
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.extend.core  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from osediff_jax.metrics.lpips import LPIPS, lpips_params  # noqa: E402
from osediff_jax.models import schedule, sd  # noqa: E402
from osediff_jax.models.layers import Conv  # noqa: E402
from osediff_jax.training.state import TrainConfig, train_state  # noqa: E402
from osediff_jax.training.unmerged import REMAT  # noqa: E402
from osediff_jax.training.step import make_losses, make_train_step, sample_draws  # noqa: E402
from osediff_jax.weights import osediff_pkl  # noqa: E402

RUNS = {"b4": (4, dict(remat="elementwise")), "b1-remat": (1, dict(remat="blocks")), "b1": (1, dict(remat="elementwise")),
        "b1-merged": (1, dict(remat="elementwise", merged_lora=True))}
GIB = 2**30


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def setup(configs, config: TrainConfig, dtype=jnp.bfloat16) -> tuple[dict, dict, dict]:
    """(modules, abstract state, abstract frozen) of the full model."""
    modules = {c: sd.build_module(c, harness.read_config(configs, c), dtype=dtype) for c in ("unet", "vae")}
    shapes = {c: sd.param_shapes(c, m) for c, m in modules.items()}
    # The generator's LoRA and the regulariser's are small: drawn for real, then made abstract.
    conv_in = {k: np.zeros(v.shape, np.float32) for k, v in shapes["unet"]["conv_in"].items()}
    key = jax.random.key(0)
    w = osediff_pkl.new(key, shapes["unet"], shapes["vae"], {"conv_in": conv_in}, config.rank)
    state = abstract(train_state(w, shapes["unet"], key, key, config))
    emb = jax.ShapeDtypeStruct((1, 77, modules["unet"].cross_attention_dim), jnp.float32)
    frozen = {"unet": jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes["unet"]),
              "vae": jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes["vae"]),
              "lpips": abstract(lpips_params("vgg", None, random_backbone=True)),
              "prompt_embeds": emb, "neg_embeds": emb}
    return modules, state, frozen


@contextlib.contextmanager
def traced_for_gpu():
    """Trace the program the GPU gets on the CPU: the models pick their CPU code paths (convolutions
    as patches, attention a block of queries at a time inside a loop, softmax normalised after the
    value product) at trace time from `jax.default_backend()`."""
    cpu = jax.default_backend
    jax.default_backend = lambda: "gpu"
    try:
        yield
    finally:
        jax.default_backend = cpu


def gpu_target_device(path: str) -> jax.sharding.Sharding:
    """A compile-only device of the GPU that the target config file `path` describes: XLA's GPU compiler
    (the CUDA PJRT plugin) compiles for it without a GPU, from the description alone."""
    from jax.experimental import topologies

    topology = topologies.get_topology_desc(platform="cuda", topology="1x1x1",
                                            target_config=Path(path).read_text())
    return jax.sharding.SingleDeviceSharding(topology.devices[0])


def compiled_figures(args, run: str) -> dict:
    batch, options = RUNS[run]
    config = TrainConfig(frozen_dtype="bfloat16", **options)
    modules, state, frozen = setup(args.configs, config)
    step = make_train_step(modules["unet"], modules["vae"], schedule.alphas_cumprod(), config)
    gt = jax.ShapeDtypeStruct((batch, args.size, args.size, 3), jnp.uint8)
    inputs = (state, frozen, {"gt": gt}, jax.eval_shape(lambda: jax.random.key(1)))
    if args.gpu_target:  # inputs placed on the GPU's compile-only device: the step compiles for it
        device = gpu_target_device(args.gpu_target)
        inputs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), inputs)
    start = time.time()
    with traced_for_gpu() if args.gpu_program or args.gpu_target else contextlib.nullcontext():
        lowered = step.lower(*inputs)
    if args.lowered:  # XLA's count on the program before optimisation; no memory plan
        return {"batch": batch, "TFLOP/sample (lowered)": lowered.cost_analysis()["flops"] / batch / 1e12,
                "lower s": time.time() - start}
    compiled = lowered.compile()
    seconds = time.time() - start
    m = compiled.memory_analysis()
    if args.gpu_target:  # a compile-only executable has no cost analysis
        flops = {"TFLOP/sample (dots, convolutions)": hlo_flops(compiled.as_text()) / batch / 1e12}
    else:
        cost = compiled.cost_analysis()
        flops = {"TFLOP/sample": (cost[0] if isinstance(cost, list) else cost)["flops"] / batch / 1e12}
    # Donated state buffers are reused for the new state: they count once.
    total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    figures = {"batch": batch, "arguments": m.argument_size_in_bytes / GIB, "temporaries": m.temp_size_in_bytes / GIB,
               "outputs not aliased": (m.output_size_in_bytes - m.alias_size_in_bytes) / GIB, "total": total / GIB,
               **flops, "compile s": seconds}
    if args.xla_dump:
        dumps = sorted(Path(args.xla_dump).glob("*jit_train_step.cpu_after_optimizations-live-range.txt"))
        figures.update(live_peaks(str(dumps[-1]).removesuffix("-live-range.txt")))
    return figures


# Buffers the CPU backend adds to the program a GPU compiles: float32 copies of bf16 values (the CPU
# has no bf16 convolution or matrix product, so XLA's float normalisation converts their operands)
# and the layout copies of its convolutions. Recognised by XLA's names for them, float32 outputs only.
CPU_ONLY = re.compile(r"(wrapped_convert|convert_bitcast_fusion|transpose_copy_fusion|\w*_convert_fusion)")


def live_peaks(prefix: str) -> dict[str, float]:
    """From XLA's dump of the compiled step (`prefix` + "-live-range.txt" / "-buffer-assignment.txt"):
    the peak over its schedule of the live buffers' bytes (XLA's total, recomputed), and the peak of
    the same without the CPU-only buffers (`CPU_ONLY`), in GiB."""
    sizes = {}
    for m in re.finditer(r"value: <\d+ ([^\s{]+)(\{[\d,]*\})?(?: \(phi\))? @\S+> \(size=(\d+),offset=\d+\): (\w+)",
                         Path(prefix + "-buffer-assignment.txt").read_text()):
        key = m.group(1) + (m.group(2) or "{}")
        cpu_only = m.group(4) == "f32" and CPU_ONLY.match(m.group(1)) is not None
        sizes[key] = (max(sizes.get(key, (0,))[0], int(m.group(3))), cpu_only)
    ranges = Path(prefix + "-live-range.txt").read_text().split("BufferLiveRange:")[1].split("Live ranges at")[0]
    delta = collections.defaultdict(lambda: [0, 0])
    for name, start, end in re.findall(r"^\s+(\S+\{[\d,]*\}):(\d+)-(\d+)$", ranges, re.M):
        size, cpu_only = sizes.get(name, (0, False))
        for t, sign in ((int(start), 1), (int(end) + 1, -1)):
            delta[t][0] += sign * size
            delta[t][1] += sign * size * (not cpu_only)
    live, peaks = [0, 0], [0, 0]
    for t in sorted(delta):
        live = [live[0] + delta[t][0], live[1] + delta[t][1]]
        peaks = [max(peaks[0], live[0]), max(peaks[1], live[1])]
    return {"live peak": peaks[0] / GIB, "without CPU-only buffers": peaks[1] / GIB}


_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
# name = type opcode(operands), attributes; of a tuple's type (in parentheses), its first shape is read.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\([^%]*?\)|\S+) ([\w\-]+)\(([^)]*)\)(.*)$")


def hlo_flops(text: str) -> float:
    """2 * MACs of every matrix product and convolution in an optimised HLO module's text, each loop
    body counted as many times as it runs (XLA's cost analysis counts it once, and counts nothing in
    library calls): dots (also inside fusions), cuBLAS GEMMs, and cuDNN convolutions, whose FLOPs
    are 2 * (forward output elements) * (kernel elements / output features) whichever operand
    they compute (padding taps included)."""
    shapes, calls, flops, name = {}, collections.defaultdict(list), collections.Counter(), None
    for line in text.splitlines():
        if m := _COMPUTATION.match(line):
            name = m.group(1)
            if line.startswith("ENTRY"):
                entry = name
            continue
        if not (m := _INSTRUCTION.match(line)):
            continue
        out, types, op, operands, attrs = m.groups()
        shape = [int(d) for d in re.search(r"\[([\d,]*)\]", types).group(1).split(",") if d]
        shapes[name, out] = shape
        args = [shapes.get((name, a.strip().lstrip("%")), []) for a in operands.split(",")]
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', attrs)
        for kind, callee in re.findall(r"(calls|body|to_apply)=%([\w.\-]+)", attrs):
            calls[name].append((callee, int(trips.group(1)) if kind == "body" and trips else 1))
        contracting = re.search(r'lhs_contracting_dim(?:s|ensions)[=":\[{]+([\d,"]*)', attrs)
        library = target.group(1) if (target := re.search(r'custom_call_target="([^"]+)"', attrs)) else ""
        if op == "dot" or "gemm" in library or "matmul" in library:
            k = math.prod(args[0][int(d)] for d in contracting.group(1).replace('"', "").split(",") if d)
            flops[name] += 2.0 * math.prod(shape) * k
        elif library.startswith("__cudnn$conv"):
            kernel, output = args[1], shape  # forward: (input, kernel) -> output
            if "BackwardInput" in library:  # (output gradient, kernel) -> input gradient
                output = args[0]
            elif "BackwardFilter" in library:  # (input, output gradient) -> kernel gradient
                kernel, output = shape, args[1]
            kernel_labels = re.search(r"dim_labels=\w+_(\w+)->", attrs).group(1)
            flops[name] += 2.0 * math.prod(output) * math.prod(kernel) / kernel[kernel_labels.index("o")]
    runs = collections.Counter()

    def visit(computation: str, times: float) -> None:
        runs[computation] += times
        for callee, n in calls[computation]:
            visit(callee, times * n)

    visit(entry, 1.0)
    return sum(flops[c] * n for c, n in runs.items())


def stored_activations(args, remat: str) -> dict[str, float]:
    """GiB per sample that the generator's backward pass keeps from its forward pass (the residuals of
    jax.vjp of its loss, batch 1, bf16 compute), read from the traced program: what any backend must
    hold across the backward, before XLA's own temporaries."""
    config = TrainConfig(frozen_dtype="bfloat16", remat=remat)
    modules, state, frozen = setup(args.configs, config)
    gen_loss, _ = make_losses(modules["unet"], modules["vae"], schedule.alphas_cumprod(), config)
    image = jax.ShapeDtypeStruct((1, args.size, args.size, 3), jnp.float32)
    emb = jax.ShapeDtypeStruct((1, 77, modules["unet"].cross_attention_dim), jnp.float32)
    draws = jax.eval_shape(lambda k: sample_draws(k, (1, args.size // 8, args.size // 8, 4)), jax.random.key(0))

    def residuals(state, frozen, lq, gt, emb, draws):
        _, vjp = jax.vjp(lambda g: gen_loss(g, state["reg"], frozen, lq, gt, emb, draws)[0], state["gen"])
        return jax.tree.leaves(vjp)

    inputs = jax.tree.leaves((state, frozen, image, image, emb, draws))
    jaxpr = jax.make_jaxpr(lambda *x: residuals(*jax.tree.unflatten(
        jax.tree.structure((state, frozen, image, image, emb, draws)), x)))(*inputs).jaxpr
    # Residuals that are inputs (weights, images) are not activations.
    kept = {id(v): v.aval for v in jaxpr.outvars if not isinstance(v, jax.extend.core.Literal) and v not in jaxpr.invars}
    return {"remat": remat, "stored activations GiB/sample": sum(a.size * a.dtype.itemsize for a in kept.values()) / GIB}


def forward_flops(module: nn.Module, params, *args, method: str | None = None, adapted=frozenset(), rank: int = 4
                  ) -> dict[str, float]:
    """FLOPs of one forward pass, counted from the traced shapes: "base" (every Dense / Conv as
    2 * outputs * fan-in), "attention" (QK^T and AV, 4 * Nq * Nk * C), "adapted" (the part of base
    in the layers whose paths are in `adapted`), "lora" (their LoRA branches at `rank`) and
    "padding" (the part of base where a `layers.Conv` tap falls on the zero padding: XLA's cost
    analysis leaves those products out)."""
    out = {"base": 0.0, "attention": 0.0, "adapted": 0.0, "lora": 0.0, "padding": 0.0}
    queries = {}

    def intercept(next_fun, a, kw, ctx):
        y = next_fun(*a, **kw)
        m = ctx.module
        if ctx.method_name == "__call__" and isinstance(m, (nn.Dense, nn.Conv, Conv)):
            window = math.prod(m.kernel_size) if isinstance(m, nn.Conv) else m.kernel_size**2 if isinstance(m, Conv) else 1
            fan_in = a[0].shape[-1] * window
            positions = math.prod(y.shape[:-1])
            flops = 2.0 * positions * fan_in * y.shape[-1]
            out["base"] += flops
            if isinstance(m, Conv):
                out["padding"] += flops * (1.0 - in_image(a[0].shape[1:3], m.kernel_size, m.strides, m.padding))
            if m.path in adapted:
                out["adapted"] += flops
                out["lora"] += 2.0 * positions * rank * (fan_in + y.shape[-1])
            if m.name == "to_q":
                queries[m.path[:-1]] = math.prod(y.shape)
            elif m.name == "to_k":  # [B, Nk, ...]: QK^T and AV, each 2 * B * Nq * Nk * C
                out["attention"] += 4.0 * queries[m.path[:-1]] * y.shape[1]
        return y

    with nn.intercept_methods(intercept):
        jax.eval_shape(lambda p, *x: module.apply({"params": p}, *x, method=method), params, *args)
    return out


def in_image(size, k: int, stride: int, padding) -> float:
    """The fraction of a convolution's taps that fall inside the image (not on its padding)."""
    fraction = 1.0
    for n, (lo, hi) in zip(size, padding):
        starts = stride * np.arange((n + lo + hi - k) // stride + 1) - lo
        taps = starts[:, None] + np.arange(k)[None, :]
        fraction *= float(np.mean((taps >= 0) & (taps < n)))
    return fraction


def adapted_paths(lora_tree) -> frozenset:
    return frozenset(p[:-2] for p in traverse_util.flatten_dict(lora_tree) if p[-2:] == ("lora_A", "kernel"))


def counted(args) -> dict[str, float]:
    """The step's FLOPs per sample at batch 1 by hand: unmerged LoRA with remat "none" and
    "elementwise" (the default), and merged LoRA.

    The backward of a layer with a frozen kernel forms only the input gradient (1x its forward); a
    LoRA branch's backward forms both (2x); attention's two products have no weights, so their
    backward forms both operands' gradients (2x). Passes: UNet generator forward + backward, fake
    score, real score at batch 2 (CFG), regulariser forward + backward = 7 UNet forwards; VAE encoder
    and decoder forward + backward; LPIPS-vgg on SR and GT, backward through SR only = 3 forwards.
    remat="elementwise" recomputes attention's two products in each backward (1x more).
    Merged: no LoRA branches, but each adapted kernel's own gradient (1x its forward) in both
    backward passes of the UNet and in the encoder's."""
    config = TrainConfig()
    modules, state, frozen = setup(args.configs, config, jnp.float32)
    s, h = args.size, args.size // 8
    emb = jnp.zeros((1, 77, modules["unet"].cross_attention_dim))
    unet_lora = adapted_paths(state["gen"]["unet_lora"])  # the regulariser's ("full") has the same layers
    vae_lora = adapted_paths(state["gen"]["vae_lora"])
    u = forward_flops(modules["unet"], frozen["unet"], jnp.zeros((1, h, h, 4)), jnp.zeros((1,)), emb, adapted=unet_lora)
    e = forward_flops(modules["vae"], frozen["vae"], jnp.zeros((1, s, s, 3)), method="encode", adapted=vae_lora)
    d = forward_flops(modules["vae"], frozen["vae"], jnp.zeros((1, h, h, 4)), method="decode")
    v = forward_flops(LPIPS("vgg"), frozen["lpips"], jnp.zeros((1, s, s, 3)), jnp.zeros((1, s, s, 3)))["base"] / 2
    fwd = {k: x["base"] + x["attention"] for k, x in (("u", u), ("e", e), ("d", d))}
    # The padding taps of the same passes (each backward of a convolution has its forward's taps).
    padding = 7 * u["padding"] + 2 * e["padding"] + 2 * d["padding"]
    # Attention's backward (2x) in the differentiated passes: UNet twice, the encoder, the decoder.
    attention_backward = 2 * (2 * u["attention"] + e["attention"] + d["attention"])
    base = 7 * fwd["u"] + 2 * fwd["e"] + 2 * fwd["d"] + 3 * v + attention_backward
    recompute = 2 * u["attention"] + e["attention"] + d["attention"]
    parts = {"UNet forward": fwd["u"], "of which attention": u["attention"], "VAE encoder forward": fwd["e"],
             "VAE decoder forward": fwd["d"], "LPIPS-vgg forward (one image)": v}
    unmerged_flops = base + 7 * u["lora"] + 3 * e["lora"]
    return {**{f"{k} TFLOP": x / 1e12 for k, x in parts.items()},
            "step unmerged TFLOP": unmerged_flops / 1e12,
            "step unmerged without padding taps TFLOP": (unmerged_flops - padding) / 1e12,
            "step unmerged elementwise-remat TFLOP": (unmerged_flops + recompute) / 1e12,
            "step merged TFLOP": (base + 2 * u["adapted"] + e["adapted"]) / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=harness.Path, default=harness.DEFAULT_CONFIGS)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--run", choices=(*RUNS, "count", "stored"), required=True)
    parser.add_argument("--remat", choices=REMAT, default="elementwise", help="for --run stored")
    parser.add_argument("--lowered", action="store_true",
                        help="FLOPs of the lowered program only, without compiling (minutes instead of ten)")
    parser.add_argument("--gpu-program", action="store_true",
                        help="trace the GPU's code paths (library convolutions, attention in one block) and "
                             "compile them for the CPU; XLA counts a loop's body once, so only this program's "
                             "FLOPs count every attention block")
    parser.add_argument("--xla-dump", metavar="DIR",
                        help="dump XLA's buffer assignment to DIR (a new folder) and report the peak without "
                             "the CPU-only buffers (float32 copies of bf16 values, convolution layout copies)")
    parser.add_argument("--gpu-target", metavar="TXTPB",
                        help="a GPU target config file: compile the GPU's code paths for this GPU with XLA's GPU "
                             "compiler, without a GPU (needs the CUDA plugin; see the docstring); no autotuning")
    args = parser.parse_args()
    if args.gpu_target and (args.lowered or args.xla_dump):
        parser.error("--gpu-target compiles for the GPU: --lowered and --xla-dump are for the CPU's compilation")
    if args.gpu_target and not Path(args.gpu_target).is_file():
        parser.error(f"--gpu-target {args.gpu_target}: no such file (a GpuTargetConfigProto text file: see the docstring)")
    if args.gpu_target and not (importlib.util.find_spec("jax_plugins")
                                and importlib.util.find_spec("jax_plugins.xla_cuda12")):
        parser.error("--gpu-target needs JAX's CUDA plugin (jax-cuda12-plugin, jax-cuda12-pjrt): see the docstring")
    flags = [f"--xla_dump_to={args.xla_dump}"] if args.xla_dump else []
    # Autotuning times candidate kernels on the device: without one, XLA's default choices are compiled.
    # Matrix products go to cuBLAS: Triton's default tiling fails on one of the degradation's float32
    # products at batch 1 ("Couldn't find output tile sizes that satisfy hlo").
    flags += ["--xla_gpu_autotune_level=0", "--xla_gpu_enable_triton_gemm=false"] if args.gpu_target else []
    if flags:  # before the backend starts
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
    jax.config.update("jax_platforms", "cpu")
    if args.run == "count":
        figures = counted(args)
    elif args.run == "stored":
        figures = stored_activations(args, args.remat)
    else:
        figures = compiled_figures(args, args.run)
    header = ["run", *figures]
    fmt = lambda x: f"{x:.2f}" if isinstance(x, float) else str(x)
    target = f"{Path(args.gpu_target).stem}, compiled without a GPU" if args.gpu_target else jax.devices()[0].platform
    harness.print_table(f"Training step, full SD-2.1-base, {args.size}x{args.size}, bf16 compute ({target})",
                        header, [[args.run, *map(fmt, figures.values())]])


if __name__ == "__main__":
    main()
