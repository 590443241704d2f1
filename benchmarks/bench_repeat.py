"""How often the overhead targets are met, run after run: ``bench_overhead`` in N fresh processes.

On a shared 2-core CPU one run of ``bench_overhead`` is one draw: runs
minutes apart differ by as much as a target's margin (benchmarks/RESULTS.md
§1). This script runs it ``--runs`` times, each in a new Python process (one
after another, optionally pinned with ``--pin``, e.g. ``--pin 0`` for
``taskset -c 0``), and counts, per config, the runs in which each target is
met: Part I ÷ Adam ≤ the batch's target (5: 2.5, 128: 1.35, 420: 1.10 on the
CPU; 128: 1.2 on a GPU), and Part II ≤ Part I. As in ``summarize``, a run
meets a target only if both of its statistics do: the ratio of the medians
and the median of the per-repetition (paired) ratios.

Each run's rows are kept (``runs`` in the JSON) with the load average before
it; a campaign cut short keeps its finished runs in
``benchmarks/out/repeat_<platform>.<start>.progress.json``.

Usage::

  python -m benchmarks.bench_repeat                  # 10 runs, both cores (~6 min)
  python -m benchmarks.bench_repeat --pin 0 --tag 1core
  python -m benchmarks.bench_repeat --runs 3 -- --configs b420 --reps 9

Arguments after ``--`` go to ``bench_overhead`` (default: ``--configs b5 b128
b420 --arms adam part1 part2``); other ones, or fewer than 10 runs, make the
campaign partial (kept in ``benchmarks/results/`` only with ``--tag``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import common, summarize

RUNS = 10
OVERHEAD_ARGS = ("--configs", "b5", "b128", "b420", "--arms", "adam", "part1", "part2")
_MARK = "@@bench_repeat record "
# The child: one bench_overhead run that writes no JSON and prints its rows.
_CHILD = (
    "import json, sys\n"
    "from benchmarks import bench_overhead, common\n"
    "rec = bench_overhead.main(sys.argv[1:])\n"
    f"print({_MARK!r} + json.dumps(common._jsonable(rec)), flush=True)\n"
)


def run_once(overhead_args, pin=None, platform="auto", timeout=None) -> dict:
  """One ``bench_overhead`` run in a new process: its record (settings and rows)."""
  cmd = [sys.executable, "-c", _CHILD, *overhead_args, "--no-write", "--platform", platform]
  if pin is not None:
    cmd = ["taskset", "-c", pin, *cmd]
  proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(
                            p for p in (str(common.ROOT), os.environ.get("PYTHONPATH")) if p)})
  lines = [l for l in proc.stdout.splitlines() if l.startswith(_MARK)]
  if proc.returncode != 0 or not lines:
    shown = " ".join(["python -m benchmarks.bench_overhead", *cmd[cmd.index(_CHILD) + 1:]])
    if pin is not None:
      shown = f"taskset -c {pin} {shown}"
    raise RuntimeError(f"bench_overhead run failed (exit {proc.returncode}): {shown}\n"
                       f"{proc.stderr[-2000:]}")
  return json.loads(lines[-1][len(_MARK):])


def run_statistics(rows) -> dict[str, dict]:
  """Per config of one run: Part I ÷ Adam and Part II ÷ Part I, each as (ratio of the
  medians, median of the per-repetition ratios), and the batch."""
  out = {}
  for c in dict.fromkeys(r["config"] for r in rows):
    arms = {r["arm"]: r for r in rows if r["config"] == c}
    a = arms["adam"]
    stats = {"batch": a["batch"]}
    if "part1" in arms:
      p1 = arms["part1"]
      stats["part1_vs_adam"] = (p1["us_per_step"] / a["us_per_step"],
                                common.paired_ratio(p1["times_s"], a["times_s"]))
      if "part2" in arms:
        p2 = arms["part2"]
        stats["part2_vs_part1"] = (p2["us_per_step"] / p1["us_per_step"],
                                   common.paired_ratio(p2["times_s"], p1["times_s"]))
    out[c] = stats
  return out


def summary(runs, targets) -> list[dict]:
  """Per config over the runs: each statistic's median, min and max over runs, and in
  how many runs each target was met (both statistics within it)."""
  per_run = [run_statistics(r["rows"]) for r in runs]
  rows = []
  for c in dict.fromkeys(c for s in per_run for c in s):
    got = [s[c] for s in per_run if c in s]
    row = {"config": c, "batch": got[0]["batch"], "runs": len(got)}
    for key, limit in (("part1_vs_adam", targets.get(got[0]["batch"])), ("part2_vs_part1", 1.0)):
      values = [g[key] for g in got if key in g]
      if not values:
        continue
      v = np.asarray(values, np.float64)  # (runs, 2): of the medians, paired
      row[key] = {"median": np.median(v, 0).tolist(), "min": v.min(0).tolist(),
                  "max": v.max(0).tolist(), "per_run": v.tolist()}
      if limit is not None:
        row[key]["target"] = limit
        row[key]["met_runs"] = int(np.sum(np.all(v <= limit, axis=1)))
        row[key]["one_statistic_runs"] = int(np.sum(np.any(v <= limit, axis=1)
                                                    & ~np.all(v <= limit, axis=1)))
    rows.append(row)
  return rows


def table(rows) -> str:
  def cell(stat):
    if stat is None:
      return "-", "-"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    text = f"{med[0]:.3f} / {med[1]:.3f} ({lo[0]:.3f}–{hi[0]:.3f})"
    if "target" not in stat:
      return text, "(none)"
    return text, (f"≤ {stat['target']:.2f}: {stat['met_runs']} of {stat['runs']}"
                  + (f" (+{stat['one_statistic_runs']} borderline)"
                     if stat["one_statistic_runs"] else ""))

  out = ["| model, batch | runs | Part I ÷ Adam: median over runs (range of the first) | met in |"
         " Part II ÷ Part I (likewise) | met in |", "|---|---|---|---|---|---|"]
  for r in rows:
    cells = []
    for key in ("part1_vs_adam", "part2_vs_part1"):
      stat = r.get(key)
      if stat is not None:
        stat = dict(stat, runs=r["runs"])
      cells += cell(stat)
    out.append(f"| {r['config']} | {r['runs']} | " + " | ".join(cells) + " |")
  return "\n".join(out)


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  child = list(OVERHEAD_ARGS)
  if "--" in argv:
    child = argv[argv.index("--") + 1:]
    argv = argv[:argv.index("--")]
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--runs", type=int, default=RUNS, help=f"bench_overhead runs (default {RUNS})")
  p.add_argument("--pin", default=None,
                 help="CPUs for every run (taskset -c PIN), e.g. 0; default: not pinned")
  p.add_argument("--timeout", type=float, default=None, help="seconds per run (default: none)")
  args = p.parse_args(argv)
  if args.runs < 1:
    p.error(f"--runs must be at least 1, got {args.runs}")
  for bad in ("--no-write", "--platform", "--tag"):
    if bad in child:
      p.error(f"{bad} is set by bench_repeat itself; do not pass it to bench_overhead after --")
  if args.quick and "--quick" not in child:
    child.append("--quick")
  common.setup_platform(args)
  info = common.machine_info()
  platform = common.jax_device()["platform"]
  targets = summarize.OVERHEAD_TARGETS["gpu" if platform == "gpu" else "cpu"]
  print(common.header(f"overhead targets over {args.runs} runs of bench_overhead", info))
  print("each run: python -m benchmarks.bench_overhead " + " ".join(child)
        + (f" (taskset -c {args.pin})" if args.pin is not None else ""), flush=True)
  runs = []
  record = dict(settings=dict(runs=args.runs, overhead_args=child, pin=args.pin,
                              statistic="per run and config: Part I ÷ Adam and Part II ÷"
                                        " Part I, as the ratio of the medians and the median"
                                        " of the per-repetition ratios"),
                runs=runs, summary=[])
  for i in range(args.runs):
    load = [round(x, 2) for x in os.getloadavg()]
    rec = run_once(child, args.pin, args.platform if args.platform != "auto" else platform,
                   args.timeout)
    runs.append(dict(run=i, load_average_before=load, rows=rec["rows"],
                     settings=rec["settings"]))
    stats = run_statistics(rec["rows"])
    print(f"run {i + 1}/{args.runs} (load {load[0]}): " + "; ".join(
        f"{c.split()[-1]} Part I ÷ Adam {s['part1_vs_adam'][0]:.3f} / {s['part1_vs_adam'][1]:.3f}"
        for c, s in stats.items() if "part1_vs_adam" in s), flush=True)
    record["summary"] = summary(runs, targets)
    common.progress("repeat", args, record, info)
  print()
  print(table(record["summary"]))
  # Fewer runs than the default, or other bench_overhead arguments, make it partial.
  partial = child != list(OVERHEAD_ARGS) or args.runs < RUNS
  common.write("repeat", args, record, info, partial=partial)
  return record


if __name__ == "__main__":
  main()
