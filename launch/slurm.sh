#!/usr/bin/env bash
# Multi-node GPU training under SLURM, one JAX process per GPU (default) or per node:
#
#   sbatch --nodes=2 --gpus-per-node=4 --ntasks-per-node=4 launch/slurm.sh configs/a100x4.py runs/a100x8 [--config.X=Y ...]
#   PER_NODE=1 sbatch --nodes=2 --gpus-per-node=4 --ntasks-per-node=1 launch/slurm.sh configs/a100x4.py runs/a100x8
#
# Every task runs `python -m osediff_jax.train --config CONFIG --workdir WORKDIR [flags]` from the
# directory sbatch was called in (the workdir must be on a file system all nodes share: checkpoints
# are written there by every process together). osediff_jax.training.sharding.initialize() starts
# jax.distributed from SLURM's variables: the coordinator is the first node of the step on a port
# derived from the job id, SLURM_NTASKS processes, SLURM_PROCID this process's id. One task per GPU:
# JAX gives each task the GPU SLURM_LOCALID (so every task must see all GPUs of its node: request
# --gpus-per-node, not --gpus-per-task). One task per node (PER_NODE=1): every GPU of the node
# (JAX_LOCAL_DEVICE_IDS). The global batch of the config is split over all GPUs of all nodes.
# Set PYTHON to another interpreter (a virtual environment's) if needed. Preemption: SLURM's SIGTERM
# reaches every task, and the train command saves a checkpoint before exiting; resubmit to resume.
#SBATCH --job-name=osediff-jax
#SBATCH --nodes=2
#SBATCH --gpus-per-node=4
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%j.out
set -eu

if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [sbatch options] launch/slurm.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2

if [[ ${PER_NODE:-0} == 1 ]]; then
  gpus=$(nvidia-smi --list-gpus | wc -l)
  export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus - 1)))
fi
# srun starts SLURM_NTASKS tasks; --kill-on-bad-exit stops the job when one task fails.
exec srun --kill-on-bad-exit=1 "${PYTHON:-python}" -m osediff_jax.train --config "$config" --workdir "$workdir" "$@"
