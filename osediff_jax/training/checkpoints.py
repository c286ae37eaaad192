"""Training checkpoints: Orbax's CheckpointManager, asynchronous, keeping the last N.

A checkpoint holds the whole train state (`state.init_train_state`: both trainable trees, both
optimiser states, the step and the run's PRNG key) and the data iterator's state, so that a resumed
run continues bit for bit. Orbax writes each step into a temporary folder and renames it when
complete (the rename is the commit), so a process killed at any moment, during a save included,
leaves only whole checkpoints; leftover temporary folders are removed at the next start.

    manager = checkpoints.manager(workdir / "checkpoints", keep=3)
    checkpoints.save(manager, state, data_state)            # returns at once; the write continues
    state, data_state = checkpoints.restore(manager, state)  # onto `state`'s shardings, any mesh
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def manager(directory: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "data"))


def _storable(state: dict) -> dict:
    # Typed PRNG keys have no Orbax type handler: their raw uint32 data is stored.
    return {**state, "key": jax.random.key_data(state["key"])}


def save(mngr: ocp.CheckpointManager, state: dict, data_state: dict) -> None:
    """Starts writing checkpoint `state["step"]` from a copy of `state` and returns: the write goes on
    in the background while the next steps run (and donate `state`'s buffers)."""
    step = int(state["step"])
    # Orbax reads the arrays while it writes; on the CPU it reads the device buffers themselves, which
    # the next step donates and overwrites. A copy of the (small) trainable state is the saved one.
    copy = jax.tree.map(lambda x: x.copy(), _storable(state))
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(copy),
                                            data=ocp.args.JsonSave(data_state)), force=True)


def restore(mngr: ocp.CheckpointManager, like: dict, step: int | None = None) -> tuple[dict, dict]:
    """(state, data_state) of checkpoint `step` (default: the latest), each array placed with the
    sharding of the same array in `like` (a state of the current run: any device count)."""
    step = mngr.latest_step() if step is None else step
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _storable(like))
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                     data=ocp.args.JsonRestore()))
    state = dict(out["state"])
    state["key"] = jax.random.wrap_key_data(state["key"], impl=jax.random.key_impl(like["key"]))
    return state, out["data"]


def read(directory: str | os.PathLike, step: int | None = None) -> tuple[int, dict, dict]:
    """(step, state as host numpy arrays with the key's raw data, data_state) without a model: for
    inspecting and comparing checkpoints, whatever devices and processes wrote them."""
    directory = os.path.abspath(directory)
    with ocp.CheckpointManager(directory, item_names=("state", "data"),
                               options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no checkpoint")
        with ocp.StandardCheckpointer() as ckpt:
            stored = ckpt.metadata(os.path.join(directory, str(step), "state"))
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                              getattr(stored, "item_metadata", stored))
        out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                         data=ocp.args.JsonRestore()))
    return step, jax.tree.map(np.asarray, dict(out["state"])), out["data"]
