#!/usr/bin/env bash
# Runs the four benchmarks, one command each, from the repository root.
#
#   benchmarks/run_all.sh            # on whatever jax.devices() gives (CPU here)
#   benchmarks/run_all.sh --quick    # a quick check that every script runs
#   benchmarks/run_all.sh --gpu      # require a GPU: jax on it, torch on CUDA
#   benchmarks/run_all.sh --cpu      # force the CPU even where a GPU exists
#
# Any other arguments are passed to every script (e.g. --tag mytag, --no-write).
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
for a in "$@"; do
  case "$a" in
    --gpu) args+=(--platform gpu) ;;
    --cpu) args+=(--platform cpu) ;;
    *) args+=("$a") ;;
  esac
done

py="${PYTHON:-python}"
limit=()
if [[ -n "${BENCH_TIMEOUT:-}" ]]; then limit=(timeout "${BENCH_TIMEOUT}"); fi

echo "# $(date -u +%FT%TZ)  nproc=$(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" -c "import jax; print('# jax devices:', jax.devices())" || exit 1
failed=()
for bench in bench_overhead bench_torch bench_memory bench_seeds; do
  echo
  echo "## ${py} -m benchmarks.${bench} ${args[*]:-}"
  "${limit[@]}" "$py" -m "benchmarks.${bench}" "${args[@]}" || failed+=("$bench (exit $?)")
done
if (( ${#failed[@]} )); then
  echo
  echo "# failed: ${failed[*]}"
  exit 1
fi
