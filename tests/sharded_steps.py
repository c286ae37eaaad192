"""A few sharded training steps of a small random model on a built dataset, for the multi-device tests:

    launch/local.sh 2 2 python -m tests.sharded_steps --sd SD --data DATASET --out OUT [--fsdp 2]

Every process reads its rows of the loader's global batches; process 0 writes OUT.json (the metrics of
each step, the paths of the leaves split over fsdp) and OUT.npz (the LoRA and conv_in before and after
the steps, gathered).
The train command is not used: this drives `sharding` and the sharded step directly.
"""

from osediff_jax.training import sharding

sharding.initialize()

import argparse  # noqa: E402  (jax.distributed must be initialised before anything touches JAX)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from osediff_jax.data.hq_images import make_loader  # noqa: E402
from osediff_jax.files.atomic import write_json  # noqa: E402
from osediff_jax.metrics.lpips import lpips_params  # noqa: E402
from osediff_jax.training.state import TrainConfig, init_train_state  # noqa: E402
from osediff_jax.training.step import make_train_step  # noqa: E402
from osediff_jax.weights import bundle  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sd", required=True, help="a random_sd folder")
    p.add_argument("--data", required=True, help="a build_dataset folder")
    p.add_argument("--out", required=True, help="output path without suffix (process 0 writes .json and .npz)")
    p.add_argument("--fsdp", type=int, default=1)
    p.add_argument("--fsdp-min-size", type=int, default=2**18)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--global-batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=32)
    args = p.parse_args()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

    # A learning rate large enough that one step moves the LoRA measurably (the losses compare updates).
    config = TrainConfig(learning_rate=1e-3)
    model = bundle.load(args.sd)
    state, frozen = init_train_state(model, lpips_params("vgg", None, random_backbone=True), jax.random.key(0), config)
    run_key = state["key"]
    mesh = sharding.make_mesh(args.fsdp)
    state_sh = sharding.shardings(state, mesh, args.fsdp_min_size)
    frozen_sh = sharding.shardings(frozen, mesh, args.fsdp_min_size)
    split = [jax.tree_util.keystr(path) for path, s in jax.tree_util.tree_leaves_with_path(
        {"state": state_sh, "frozen": frozen_sh}) if s.spec != P()]
    initial = {"gen": state["gen"], "reg": state["reg"]}
    state, frozen = sharding.put(state, state_sh), sharding.put(frozen, frozen_sh)
    step = make_train_step(model.modules["unet"], model.modules["vae"], model.alphas_cumprod, config, mesh=mesh,
                           state_shardings=state_sh, frozen_shardings=frozen_sh)
    loader = iter(make_loader(args.data, args.global_batch, crop=args.crop, seed=0))
    metrics = []
    for i in range(args.steps):
        batch = sharding.global_batch(next(loader), mesh)
        key = sharding.put(jax.random.fold_in(run_key, i), sharding.replicated(mesh))
        if i == 0:
            step = sharding.compile_together(step, state, frozen, batch, key)
        state, m = step(state, frozen, batch, key)
        metrics.append({k: float(v.addressable_data(0)) for k, v in m.items()})
    trained = multihost_utils.process_allgather({"gen": state["gen"], "reg": state["reg"]}, tiled=True)
    if jax.process_index() == 0:
        flat = {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(
            {"initial": initial, "trained": trained})}
        np.savez(f"{args.out}.npz", **flat)
        write_json(f"{args.out}.json", {"metrics": metrics, "split": split, "devices": jax.device_count(),
                                        "processes": jax.process_count(),
                                        "step": int(state["step"].addressable_data(0))})


if __name__ == "__main__":
    main()
