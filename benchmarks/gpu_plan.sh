#!/usr/bin/env bash
# The runs the next GPU session should make (benchmarks/RESULTS.md §6, "What the
# next GPU session should run"), in one call that fits a 15-minute device lease.
#
#   bash benchmarks/gpu_plan.sh [LOG_DIR]      # on the GPU machine
#
# LOG_DIR (default benchmarks/out/gpu_plan) gets each step's printed output; the
# JSON records go where every benchmark writes them (benchmarks/out/ and, for
# full or tagged runs, benchmarks/results/). Each step is capped at STEP_TIMEOUT
# seconds (default 240) and a failing step does not stop the others; the exit
# status is 1 if any failed. PYTHON picks the interpreter (default python3).
# PLATFORM=cpu EXTRA="--quick --no-write" checks the script on a CPU.
#
# As in session 7's runs: JAX_DEFAULT_MATMUL_PRECISION=highest (full-float32
# matmuls, as torch's) and XLA_PYTHON_CLIENT_PREALLOCATE=false, unless set.
# bench_seeds needs the Fashion-MNIST IDX files: if /usr/share/datasets/fashion-mnist
# is missing and the checkout has a .fmnist/ folder (git-ignored; copy the files
# there before the call and carry it), they are copied from it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

logs="${1:-benchmarks/out/gpu_plan}"
mkdir -p "$logs" || exit 1
py="${PYTHON:-python3}"
platform="${PLATFORM:-gpu}"
read -r -a extra <<< "${EXTRA:-}"
export JAX_DEFAULT_MATMUL_PRECISION="${JAX_DEFAULT_MATMUL_PRECISION:-highest}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"

fmnist=/usr/share/datasets/fashion-mnist
if [[ ! -d "$fmnist" && -d .fmnist ]]; then
  mkdir -p "$fmnist" && cp .fmnist/* "$fmnist"/ && echo "# copied .fmnist/ to $fmnist"
fi

echo "# $(date -u +%FT%TZ) platform=$platform JAX_DEFAULT_MATMUL_PRECISION=$JAX_DEFAULT_MATMUL_PRECISION" \
     "XLA_PYTHON_CLIENT_PREALLOCATE=$XLA_PYTHON_CLIENT_PREALLOCATE"
"$py" -c "import jax; print('# jax devices:', jax.devices())" || exit 1

failed=()
step() {
  local name="$1"
  shift
  echo
  echo "## $*" | tee "$logs/$name.log"
  timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee -a "$logs/$name.log"
  local status="${PIPESTATUS[0]}"
  if (( status != 0 )); then failed+=("$name (exit $status)"); fi
}

# 1. Where a Part I step's time goes, then the one-reduction formulation of N and D.
step profile_step "$py" -m benchmarks.profile_step
step overhead_onesum "$py" -m benchmarks.bench_overhead --platform "$platform" \
  --arms adam part1 part1-onesum --configs b5 b128 b420 --tag onesum "${extra[@]}"
# 2. The memory benchmark with its device-loop timing (20 steps per timing on a GPU).
step memory "$py" -m benchmarks.bench_memory --platform "$platform" "${extra[@]}"
# 3-4. The seeds rows the cut run of session 7 lacks, with their JSON.
step seeds_b5 "$py" -m benchmarks.bench_seeds --platform "$platform" --problems mnist-b5 \
  --reps 3 --tag b5 "${extra[@]}"
step seeds_reps3 "$py" -m benchmarks.bench_seeds --platform "$platform" --problems iris mnist \
  --reps 3 --tag reps3 "${extra[@]}"

if (( ${#failed[@]} )); then
  echo
  echo "# failed: ${failed[*]}"
  exit 1
fi
