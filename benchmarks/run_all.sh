#!/usr/bin/env bash
# Runs the four benchmarks, one command each, from the repository root.
#
#   benchmarks/run_all.sh            # on whatever jax.devices() gives (CPU here)
#   benchmarks/run_all.sh --quick    # a quick check that every script runs
#   benchmarks/run_all.sh --gpu      # require a GPU: jax on it, torch on CUDA
#   benchmarks/run_all.sh --cpu      # force the CPU even where a GPU exists
#   benchmarks/run_all.sh --gpu --allow-synthetic  # bench_seeds may use synthetic
#                                    # data where Fashion-MNIST is missing
#
# --allow-synthetic goes to bench_seeds only. Any other arguments are passed to
# every script (e.g. --tag mytag, --no-write).
# Each script prints its table and writes benchmarks/out/<name>_<platform>.json
# and benchmarks/results/<name>_<platform>.json (machine, load, versions, date,
# command, device name). Each full run takes up to ~5 minutes on 2 CPU cores.
#
# Environment: PYTHON (default python), BENCH_TIMEOUT (seconds per script, none
# by default). A script that fails or runs out of time does not stop the others;
# the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

args=()
seeds_args=()
for a in "$@"; do
  case "$a" in
    --gpu)
      args+=(--platform gpu)
      # As in the stored GPU runs (RESULTS §6), unless set otherwise: full-float32
      # matmuls, as torch's, and a GPU that jax shares with torch's worker.
      export JAX_DEFAULT_MATMUL_PRECISION="${JAX_DEFAULT_MATMUL_PRECISION:-highest}"
      export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
      ;;
    --cpu) args+=(--platform cpu) ;;
    --allow-synthetic) seeds_args+=(--allow-synthetic) ;;
    *) args+=("$a") ;;
  esac
done

py="${PYTHON:-python}"
limit=()
if [[ -n "${BENCH_TIMEOUT:-}" ]]; then limit=(timeout "${BENCH_TIMEOUT}"); fi

echo "# $(date -u +%FT%TZ)  nproc=$(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)  JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-}  XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-}"
"$py" -c "import jax; print('# jax devices:', jax.devices())" || exit 1
failed=()
for bench in bench_overhead bench_torch bench_memory bench_seeds; do
  extra=()
  if [[ "$bench" == bench_seeds ]]; then extra=("${seeds_args[@]}"); fi
  echo
  echo "## ${py} -m benchmarks.${bench} ${args[*]:-} ${extra[*]:-}"
  "${limit[@]}" "$py" -m "benchmarks.${bench}" "${args[@]}" "${extra[@]}" || failed+=("$bench (exit $?)")
done
if (( ${#failed[@]} )); then
  echo
  echo "# failed: ${failed[*]}"
  exit 1
fi
