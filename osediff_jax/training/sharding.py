"""Devices, meshes and the placement of the train state, the frozen weights and the batches.

    sharding.initialize()                       # first: jax.distributed when launched as several processes
    mesh = sharding.make_mesh(fsdp=2)           # axes ("data", "fsdp") over every device of every process
    state = sharding.put(state, sharding.shardings(state, mesh))
    frozen = sharding.put(frozen, sharding.shardings(frozen, mesh))
    batch = sharding.global_batch(next(loader_iterator), mesh)   # this process's rows -> global arrays

The batch is split over both axes (every device holds B / n rows); the base weights and optimiser
states are additionally split over `fsdp` where they are large (`shardings` holds the rules, over
parameter paths, in one place). One jitted program over the global batch (`step.make_train_step`
with `mesh=`) lets GSPMD insert the collectives, so the gradients are those of the global batch's
mean losses whatever the device count.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from orbax.checkpoint import multihost

AXES = ("data", "fsdp")
# Leaves never split over fsdp, by name (the last key of their path): the step, PRNG keys, optax's
# counts and the prompt embeddings are small and read whole by every device.
REPLICATED = frozenset({"step", "key", "count", "prompt_embeds", "neg_embeds"})


def _multi_process_env() -> bool:
    if all(os.environ.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")):
        return True
    # A SLURM job step (srun) of several tasks; a plain `python` inside an allocation is one process.
    return "SLURM_STEP_NODELIST" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def initialize() -> None:
    """`jax.distributed.initialize` when the environment describes several processes
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, as `launch/local.sh` sets them, or
    an srun step of more than one task: `launch/slurm.sh`), with CPU collectives (gloo) so that CPU
    processes can run collectives together; otherwise nothing. Call it before anything else touches JAX."""
    if not _multi_process_env():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if os.environ.get("JAX_NUM_PROCESSES"):
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                                   int(os.environ["JAX_PROCESS_ID"]))
    else:  # SLURM: JAX reads the coordinator, the task count and ids from SLURM's variables
        jax.distributed.initialize()


def make_mesh(fsdp: int = 1) -> Mesh:
    """A ("data", "fsdp") mesh of all devices, data = n // fsdp. Devices are ordered by process, so
    each process's devices hold consecutive rows of a batch split over both axes (`global_batch`)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"fsdp={fsdp} does not divide the {n} devices ({jax.process_count()} processes x "
                         f"{jax.local_device_count()}); expected a divisor of {n}")
    return Mesh(np.array(devices).reshape(n // fsdp, fsdp), AXES)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)


def leaf_spec(path: tuple, shape: tuple[int, ...], fsdp: int, fsdp_min_size: int = 2**18) -> P:
    """The rule: a leaf of at least `fsdp_min_size` elements whose name (the last key of its path) is
    not in REPLICATED is split over fsdp along its largest dimension that fsdp divides (the last such
    on ties: a kernel's output features); everything else is replicated."""
    last = getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None
    if fsdp == 1 or last in REPLICATED or int(np.prod(shape, dtype=np.int64)) < fsdp_min_size:
        return P()
    dims = [i for i, d in enumerate(shape) if d % fsdp == 0]
    if not dims:
        return P()
    axis = max(dims, key=lambda i: (shape[i], i))
    return P(*(None,) * axis, "fsdp")


def shardings(tree: Any, mesh: Mesh, fsdp_min_size: int = 2**18) -> Any:
    """A NamedSharding for every leaf of `tree` (the train state, the frozen tree, anything of
    arrays, PRNG keys or optax states) by `leaf_spec`."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, leaf_spec(path, np.shape(x), fsdp, fsdp_min_size)), tree)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole value (keys, metrics, small trees)."""
    return NamedSharding(mesh, P())


def _put_leaf(x: Any, sharding: NamedSharding) -> jax.Array:
    if _is_key(x):
        impl = jax.random.key_impl(x)
        data = _put_leaf(jax.random.key_data(x), NamedSharding(sharding.mesh, P(*sharding.spec)))
        return jax.random.wrap_key_data(data, impl=impl)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: reshard
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put(tree: Any, mesh_or_shardings: Mesh | Any) -> Any:
    """`tree` (host or single-device values, identical on every process) as global arrays: with a Mesh,
    placed by `shardings(tree, mesh)`; else by the given tree of shardings. Global arrays are resharded."""
    sh = shardings(tree, mesh_or_shardings) if isinstance(mesh_or_shardings, Mesh) else mesh_or_shardings
    return jax.tree.map(_put_leaf, tree, sh)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch dimension split over ("data", "fsdp"): device i of the flattened mesh holds rows i B / n ..."""
    return NamedSharding(mesh, P(AXES))


def global_batch(local: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a global batch (a loader batch) -> global arrays split by `batch_sharding`;
    entries that are not numeric arrays (the loader's 'path') are dropped."""
    sharding = batch_sharding(mesh)
    out = {}
    for name, value in local.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            continue
        out[name] = jax.make_array_from_process_local_data(
            sharding, value, (value.shape[0] * jax.process_count(), *value.shape[1:]))
    return out


_barriers = itertools.count()


def barrier(what: str) -> None:
    """Wait until every process has reached this call (the coordination service's barrier, not a
    device collective, so no 30 s gloo limit); nothing to do in a single process. Every process
    must make the same sequence of calls."""
    if jax.process_count() > 1:
        multihost.sync_global_processes(f"osediff_jax {what} {next(_barriers)}", timeout=24 * 3600,
                                        processes=set(range(jax.process_count())))


def compile_together(jitted: Callable, *args: Any) -> Callable:
    """`jitted` compiled for `args`, returned once every process has compiled it. Processes compile
    at different speeds, or one loads from the compilation cache, and CPU collectives (gloo) give
    them 30 s to meet at a program's first collective; call the result with arguments of the same
    shapes and shardings."""
    compiled = jitted.lower(*args).compile()
    barrier("compiled")
    return compiled
