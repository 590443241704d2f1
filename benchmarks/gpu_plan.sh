#!/usr/bin/env bash
# The runs the next GPU session should make (benchmarks/RESULTS.md §6), in one
# call that fits a 15-minute device lease.
#
#   bash benchmarks/gpu_plan.sh [LOG_DIR]      # on the GPU machine
#
# LOG_DIR (default benchmarks/out/gpu_plan) gets each step's printed output and,
# from profile_step, each arm's compiled program (hlo/). The JSON records go where
# every benchmark writes them (benchmarks/out/ and, for full or tagged runs,
# benchmarks/results/). Each step is capped (its own cap, and what is left of
# BUDGET_S seconds, default 540, counted from the start); a failing step does
# not stop the others, and the exit status is 1 if any failed. If OUT is set
# (the device tool's output folder), the logs and records are packed into
# $OUT/gpu_plan.tgz after every step, so a cut call keeps what it finished.
# PYTHON picks the interpreter (default python3). PLATFORM=cpu
# EXTRA="--quick --no-write" checks the script on a CPU.
#
# As in session 7's runs: JAX_DEFAULT_MATMUL_PRECISION=highest (full-float32
# matmuls, as torch's) and XLA_PYTHON_CLIENT_PREALLOCATE=false, unless set.
# bench_seeds needs the Fashion-MNIST IDX files: if /usr/share/datasets/fashion-mnist
# is missing and the checkout has a .fmnist/ folder (git-ignored; copy the files
# there before the call and carry it), they are copied from it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

start=$SECONDS
budget="${BUDGET_S:-540}"
logs="${1:-benchmarks/out/gpu_plan}"
mkdir -p "$logs" || exit 1
py="${PYTHON:-python3}"
platform="${PLATFORM:-gpu}"
read -r -a extra <<< "${EXTRA:-}"
export JAX_DEFAULT_MATMUL_PRECISION="${JAX_DEFAULT_MATMUL_PRECISION:-highest}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export PYTHONUNBUFFERED=1

fmnist=/usr/share/datasets/fashion-mnist
if [[ ! -d "$fmnist" && -d .fmnist ]]; then
  mkdir -p "$fmnist" && cp .fmnist/* "$fmnist"/ && echo "# copied .fmnist/ to $fmnist"
fi

echo "# $(date -u +%FT%TZ) platform=$platform JAX_DEFAULT_MATMUL_PRECISION=$JAX_DEFAULT_MATMUL_PRECISION" \
     "XLA_PYTHON_CLIENT_PREALLOCATE=$XLA_PYTHON_CLIENT_PREALLOCATE budget=${budget}s"
"$py" -c "import jax; print('# jax', jax.__version__, 'devices:', jax.devices())" || exit 1

pack() {
  if [[ -n "${OUT:-}" ]]; then
    tar czf "$OUT/gpu_plan.tgz" "$logs" benchmarks/results benchmarks/out/*.json 2>/dev/null
  fi
}

failed=()
step() {
  local name="$1" cap="$2"
  shift 2
  local left=$(( budget - (SECONDS - start) ))
  (( cap > left )) && cap=$left
  echo
  if (( cap < 20 )); then
    echo "## $name: skipped, ${left}s of the budget left" | tee "$logs/$name.log"
    failed+=("$name (skipped)")
    return
  fi
  echo "## $(date -u +%T) [cap ${cap}s] $*" | tee "$logs/$name.log"
  timeout "$cap" "$@" 2>&1 | tee -a "$logs/$name.log"
  local status="${PIPESTATUS[0]}"
  if (( status != 0 )); then failed+=("$name (exit $status)"); fi
  pack
}

# 1. Where a step's time goes on the device, and each arm's compiled program:
#    Adam, Part I (homax: one reduction for N and D on a single NVIDIA GPU since
#    session 9), Part I with N and D as two reductions of the concatenated
#    vectors, Part I on one flat vector (optax.flatten), Part II.
step profile_step 60 "$py" -m benchmarks.profile_step \
  --arms adam part1 part1-onesum-direct part1-flatten part2 --top 25 --hlo-dir "$logs/hlo"
# 2. The full overhead run (all five default arms, so it is the record), with the
#    formulation experiments beside them.
step overhead 180 "$py" -m benchmarks.bench_overhead --platform "$platform" \
  --arms adam part1 part2 sgd sgd+homog part1-onesum-direct part1-flatten "${extra[@]}"
# 3. homax's tests that run the update against the published code, on the device
#    (session 9 ran them before the one-reduction sums became homax's GPU form).
if [[ "$platform" == gpu ]]; then
  step pytest 110 "$py" -m pytest -p no:cacheprovider tests/test_seed_equivalence.py \
    tests/test_paper.py tests/test_transformation.py tests/test_derivative.py
fi
# 4. Against the published code on the device, with the order of the arms that
#    session 13 made fair (each homax arm right after a torch run; session 7's
#    run rotated all six arms singly, which favoured homax on the CPU).
step torch 100 "$py" -m benchmarks.bench_torch --platform "$platform" --reps 7 "${extra[@]}"
# 5. The MNIST seeds rows (session 9's run was cut in them), with what is left.
step seeds_mnist 600 "$py" -m benchmarks.bench_seeds --platform "$platform" \
  --problems mnist mnist-b5 --reps 3 --tag mnist "${extra[@]}"
# Done in session 9: bench_memory with 20 steps per timing, the Iris seeds JSON.

echo
echo "# $(date -u +%T) done in $(( SECONDS - start ))s"
if (( ${#failed[@]} )); then
  echo "# failed: ${failed[*]}"
  pack
  exit 1
fi
pack
