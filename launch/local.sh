#!/usr/bin/env bash
# N processes on this machine, each with D devices, as one multi-process JAX job:
#
#   launch/local.sh N D COMMAND [ARGS...]
#   launch/local.sh 2 2 python -m osediff_jax.train --config configs/tiny.py --workdir runs/tiny
#
# Each process gets JAX_COORDINATOR_ADDRESS (a free local port), JAX_NUM_PROCESSES=N and
# JAX_PROCESS_ID=i, which osediff_jax.training.sharding.initialize() passes to jax.distributed.
# CPU (JAX_PLATFORMS unset or "cpu"): D host devices per process
# (XLA_FLAGS=--xla_force_host_platform_device_count=D), collectives over gloo.
# GPU (JAX_PLATFORMS=cuda): process i sees GPUs i*D .. i*D+D-1 (JAX_LOCAL_DEVICE_IDS).
# Output lines are prefixed with "[i] ". When a process fails, the others are stopped and the
# script exits with that first failure's code; Ctrl-C / SIGTERM are passed on to every process.
set -u

if [[ $# -lt 3 || ! $1 =~ ^[1-9][0-9]*$ || ! $2 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh N D COMMAND [ARGS...]  (N processes, D devices each; N, D positive integers)" >&2
  exit 2
fi
nproc=$1
ndev=$2
shift 2

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || exit 1
platform=${JAX_PLATFORMS:-cpu}

pids=()
for ((i = 0; i < nproc; i++)); do
  (
    export JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$nproc" JAX_PROCESS_ID="$i"
    if [[ $platform == cpu ]]; then
      export JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$ndev"
    else
      export JAX_LOCAL_DEVICE_IDS=$(seq -s, $((i * ndev)) $((i * ndev + ndev - 1)))
    fi
    exec "$@"
  ) > >(sed -u "s/^/[$i] /") 2> >(sed -u "s/^/[$i] /" >&2) &
  pids+=($!)
done

declare -A alive
for pid in "${pids[@]}"; do alive[$pid]=1; done

# TERM to every process still running, KILL after LAUNCH_GRACE seconds (default 30: time to save).
stop() {
  local pid t
  for pid in "${!alive[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for ((t = 0; t < ${LAUNCH_GRACE:-30} * 10; t++)); do
    for pid in "${!alive[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=; done
    [[ -z ${pid:-} ]] && return
    sleep 0.1
  done
  for pid in "${!alive[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}
trap 'stop; wait; exit 130' INT
trap 'stop; wait; exit 143' TERM

status=0
while ((${#alive[@]} > 0)); do
  done_pid=
  wait -n -p done_pid "${!alive[@]}"
  code=$?
  [[ -z ${done_pid:-} ]] && break
  unset "alive[$done_pid]"
  if ((code != 0)); then
    status=$code
    echo "launch/local.sh: a process exited with $code; stopping the others" >&2
    stop
    break
  fi
done
wait
exit $status
