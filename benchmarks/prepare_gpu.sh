#!/usr/bin/env bash
# Prepares what benchmarks/gpu.sh needs on a GPU machine without network (Python 3.12, x86-64
# Linux), in two gitignored folders at the repository root:
#   .whl/         wheels of the packages such a machine may lack (diffusers and its small deps, pillow,
#                 pytest, wheel), at the versions installed here; gpu.sh installs only those it lacks;
#   .gpu_assets/  the SD-2.1-base configs (JSON only, no weights) from ../shared/reference/sd21-base.
# Run it here, with network: `bash benchmarks/prepare_gpu.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIGS=${SD21_CONFIGS:-../shared/reference/sd21-base}
PACKAGES=(diffusers importlib_metadata zipp requests urllib3 idna certifi charset_normalizer regex filelock
          pillow pytest pluggy iniconfig pygments packaging)
# Not installed here: setuptools >= 70.1 builds wheels without it, an older one there needs it.
EXTRA=(wheel==0.45.1)

[ -f "$CONFIGS/unet/config.json" ] || { echo "$CONFIGS/unet/config.json: missing (set SD21_CONFIGS)" >&2; exit 1; }
pins=()
for p in "${PACKAGES[@]}"; do
  pins+=("$p==$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")")
done

rm -rf .whl .gpu_assets
mkdir -p .whl .gpu_assets
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform any -d .whl "${pins[@]}" "${EXTRA[@]}"
cp -r --no-preserve=mode "$CONFIGS" .gpu_assets/sd21-base

echo "wheels in .whl/:"
ls -1 .whl
total_kib=$(du -sk --exclude=.git . | cut -f1)
echo "working tree without .git: $((total_kib / 1024)) MiB (must stay under 64 MiB to travel)"
[ "$total_kib" -lt $((64 * 1024)) ] || { echo "working tree too large to travel" >&2; exit 1; }
