#!/usr/bin/env bash
# Every GPU parity check and benchmark of the project, in one run of at most 8 minutes, on a GPU
# machine without network that has JAX (with its CUDA plugin), flax, optax, orbax, transformers,
# torch and peft installed. First, where there is network: `bash benchmarks/prepare_gpu.sh` (wheels
# in .whl/, SD-2.1-base configs in .gpu_assets/; both travel with the working tree). Then, there:
#
#   bash benchmarks/gpu.sh          # on the GPU machine
#   bash benchmarks/gpu.sh --cpu    # the same steps on the CPU at tiny sizes: checks this script
#
# Each step has its own time limit, cut further so the whole run ends within GPU_SH_BUDGET seconds
# (default 465); a step that no longer fits is reported as skipped. GPU_SH_ONLY="parity_full
# bf16_error" runs only the steps named (install always runs), e.g. in a second call. Logs go to
# $OUT/gpu_sh/ when $OUT is set (else a temporary folder); the summary table comes last.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_SH_BUDGET:-465}
START=$(date +%s)
MODE=gpu
case "${1:-}" in
  --cpu) MODE=cpu ;;
  "") ;;
  *) echo "usage: $0 [--cpu]" >&2; exit 2 ;;
esac

LOGS=${OUT:-$(mktemp -d)}/gpu_sh
mkdir -p "$LOGS"
SITE=$(mktemp -d /tmp/osediff_site.XXXXXX)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch and JAX share the GPU
export PIP_ROOT_USER_ACTION=ignore
ASSETS="$ROOT/.gpu_assets/sd21-base"
if [ ! -f "$ASSETS/unet/config.json" ]; then
  echo "$ASSETS/unet/config.json: missing; run benchmarks/prepare_gpu.sh first" >&2
  exit 1
fi
export OSEDIFF_SD21_BASE="$ASSETS"  # where the tests find the SD-2.1-base configs

if [ "$MODE" = gpu ]; then
  DEV=(--device gpu --configs "$ASSETS")
  SD_MODELS=(--dtype bfloat16 --size 512 --iters 10)
  PARITY_SMALL=(tests/test_unet_vae_parity.py tests/test_text_encoder.py tests/test_osediff_parity.py -k "not full_size")
  PARITY_FULL=(tests/test_full_size_parity.py tests/test_osediff_parity.py -k "full_size or full_unet or full_vae")
  SR=(--dtype bfloat16 --size 512 --iters 20 --throughput-iters 5)
  BF16=(--size 256)
  DEG=(--platform gpu --no-reference)
else
  export JAX_PLATFORMS=cpu
  DEV=(--device cpu --configs "$ASSETS")
  SD_MODELS=(--size 16 --iters 1)
  PARITY_SMALL=(tests/test_unet_vae_parity.py)
  PARITY_FULL=()  # the full SD-2.1 sizes take minutes on a small CPU
  SR=(--size 16 --iters 1 --batch 2 --throughput-iters 1)
  BF16=(--size 16)
  DEG=(--platform cpu --no-reference --batch 2 --size 64 --iters 1)
fi

NAMES=() STATUS=() SECONDS_TAKEN=()
record() { NAMES+=("$1"); STATUS+=("$2"); SECONDS_TAKEN+=("$3"); }

# step NAME LIMIT_S CMD...: runs CMD with a time limit cut to what is left of the budget.
step() {
  local name=$1 limit=$2
  shift 2
  if [ -n "${GPU_SH_ONLY:-}" ] && [ "$name" != install ] && [[ " ${GPU_SH_ONLY//,/ } " != *" $name "* ]]; then
    record "$name" "not run (GPU_SH_ONLY)" 0
    return
  fi
  local left=$((BUDGET - ($(date +%s) - START) - 15))
  if [ "$left" -lt 30 ]; then
    record "$name" "skipped (no time left)" 0
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s) rc
  timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  tail -n 30 "$LOGS/$name.log"
  local status=ok
  [ $rc -ne 0 ] && status="failed (exit $rc)"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timed out after ${limit}s"
  record "$name" "$status" $(($(date +%s) - t0))
}

install_deps() {
  # Wheels only for distributions this Python lacks: never shadow a preinstalled package.
  local missing=()
  for whl in .whl/*.whl; do
    local dist
    dist=$(basename "$whl" | cut -d- -f1)
    if ! PYTHONPATH= "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null; then
      missing+=("$whl")
    fi
  done
  echo "installing ${#missing[@]} missing wheel(s): ${missing[*]:-none}"
  if [ ${#missing[@]} -gt 0 ]; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "${missing[@]}" || return 1
  fi
  "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation --target "$SITE" . || return 1
  cd /tmp && "$PY" -c "import osediff_jax, diffusers, jax, torch; print('osediff_jax from', osediff_jax.__file__);
print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
}

export -f install_deps
export PY SITE
step install 120 bash -c install_deps
if [ "${STATUS[0]}" != ok ]; then
  echo "installation failed; see $LOGS/install.log" >&2
else
  # Benchmarks run as modules from the repository root (`-m benchmarks.X`), like pytest: the tree's code.
  # In order of importance: later steps get what is left of the budget.
  step sr 170 "$PY" -m benchmarks.sr "${DEV[@]}" "${SR[@]}"
  # cuDNN attention is the fast path; should it fail on this device, the XLA path is measured instead.
  ATTN=()
  case "${STATUS[-1]}" in
    failed*) step sr_xla 170 "$PY" -m benchmarks.sr "${DEV[@]}" "${SR[@]}" --attention xla
             [ "${STATUS[-1]}" = ok ] && ATTN=(--attention xla) ;;
  esac
  step sd_models 130 "$PY" -m benchmarks.sd_models "${DEV[@]}" "${SD_MODELS[@]}" "${ATTN[@]}"
  # Parity in true float32 on this device (no TF32): skips count as failures (CI=true).
  PYTEST=(env CI=true JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -m pytest -q -s -p no:cacheprovider)
  step parity_small 100 "${PYTEST[@]}" "${PARITY_SMALL[@]}"
  if [ ${#PARITY_FULL[@]} -gt 0 ]; then
    step parity_full 180 "${PYTEST[@]}" "${PARITY_FULL[@]}"
  else
    record parity_full "not run (--cpu)" 0
  fi
  step bf16_error 130 "$PY" -m benchmarks.bf16_error "${DEV[@]}" "${BF16[@]}" "${ATTN[@]}"
  # Degradation throughput (target >= 200 images/s at 512, batch 16); ../shared's photos do not
  # travel, so the script degrades random content, which runs at the same speed.
  step degradation 60 "$PY" -m benchmarks.degradation "${DEG[@]}"
  # PSNR/SSIM/NIQE run in NumPy on the host, in pyiqa too: their benchmark is the CPU one.
  record evaluation "CPU-only metrics: see BENCHMARKS.md" 0
fi

echo
echo "################ gpu.sh summary ($MODE mode, $(($(date +%s) - START)) s total, logs in $LOGS)"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
grep -h -E "^(jax|torch) " "$LOGS/install.log" 2>/dev/null
for i in "${!NAMES[@]}"; do
  log="$LOGS/${NAMES[$i]}.log"
  if [ -f "$log" ] && [ "${STATUS[$i]}" = ok ]; then
    grep -E "^(### |\|)" "$log"
    case "${NAMES[$i]}" in parity*) grep -E "(err|diff)|passed|failed" "$log" ;; esac
  fi
done
echo
printf "| %-14s | %-40s | %7s |\n" step status seconds
printf "|%s|%s|%s|\n" "----------------" "------------------------------------------" "---------"
failed=0
for i in "${!NAMES[@]}"; do
  printf "| %-14s | %-40s | %7s |\n" "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}"
  case "${STATUS[$i]}" in ok|"not present"*|"not run"*) ;; *) failed=1 ;; esac
done
rm -rf "$SITE"
exit $failed
