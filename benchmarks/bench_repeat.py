"""How often a target is met, run after run: ``bench_overhead`` (or ``bench_seeds``) in N fresh processes.

On a shared 2-core CPU one run of a benchmark is one draw: runs minutes apart
differ by as much as a target's margin (benchmarks/RESULTS.md §1). This
script runs ``bench_overhead`` (default) or, with ``--bench seeds``,
``bench_seeds`` ``--runs`` times, each in a new Python process (one after
another, optionally pinned with ``--pin``, e.g. ``--pin 0`` for
``taskset -c 0``), and counts, per config or problem, the runs in which each
target is met:

* overhead: Part I ÷ Adam ≤ the batch's target (5: 2.5, 128: 1.35, 420: 1.10
  on the CPU; 128: 1.2 on a GPU), and Part II ÷ Part I ≤ 1;
* seeds: 32 vmapped seeds ÷ 32 one after another ≥ 10 (Iris) or ≥ 1.5 (the
  MNIST MLP at batch 42).

As in ``summarize``, a run meets a target only if both of its statistics do:
the ratio of the medians and the median of the per-repetition (paired)
ratios; "borderline" runs meet it in one of the two.

Each run's rows are kept (``runs`` in the JSON) with the load average before
it; a campaign cut short keeps its finished runs in
``benchmarks/out/<name>_<platform>.<start>.progress.json``. Records:
``repeat_<platform>[_tag].json`` (overhead), ``repeat_seeds_<platform>[_tag].json``.

Usage::

  python -m benchmarks.bench_repeat                  # 10 overhead runs, both cores (~4.5 min)
  python -m benchmarks.bench_repeat --pin 0 --tag 1core
  python -m benchmarks.bench_repeat --bench seeds     # 10 Iris runs of bench_seeds
  python -m benchmarks.bench_repeat --runs 3 -- --configs b420 --reps 9

Arguments after ``--`` go to the benchmark (default: ``--configs b5 b128
b420 --arms adam part1 part2`` for overhead, ``--problems iris`` for seeds);
other ones, or fewer than 10 runs, make the campaign partial (kept in
``benchmarks/results/`` only with ``--tag``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks import common, summarize

RUNS = 10
DEFAULT_ARGS = {
    "overhead": ("--configs", "b5", "b128", "b420", "--arms", "adam", "part1", "part2"),
    "seeds": ("--problems", "iris"),
}
OVERHEAD_ARGS = DEFAULT_ARGS["overhead"]
SEEDS_TARGETS = summarize.SEEDS_TARGETS
# What each statistic is, for the table: (label, the target is an upper bound).
STATISTICS = {
    "part1_vs_adam": ("Part I ÷ Adam", True),
    "part2_vs_part1": ("Part II ÷ Part I", True),
    "vmap_vs_sequential": ("throughput, 32 vmapped ÷ one after another", False),
}
_MARK = "@@bench_repeat record "


def _child(bench: str) -> str:
  """The child's program: one run of the benchmark that writes no JSON and prints its record."""
  return ("import json, sys\n"
          f"from benchmarks import bench_{bench}, common\n"
          f"rec = bench_{bench}.main(sys.argv[1:])\n"
          f"print({_MARK!r} + json.dumps(common._jsonable(rec)), flush=True)\n")


def run_once(bench_args, pin=None, platform="auto", timeout=None, bench="overhead",
             env=None) -> dict:
  """One run of ``bench_<bench>`` in a new process: its record (settings and rows).

  ``env``: the child's environment (default: this process's).
  """
  child = _child(bench)
  cmd = [sys.executable, "-c", child, *bench_args, "--no-write", "--platform", platform]
  if pin is not None:
    cmd = ["taskset", "-c", pin, *cmd]
  shown = " ".join([f"python -m benchmarks.bench_{bench}", *cmd[cmd.index(child) + 1:]])
  if pin is not None:
    shown = f"taskset -c {pin} {shown}"
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(common.ROOT), env.get("PYTHONPATH")) if p)
  try:
    proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
  except subprocess.TimeoutExpired as e:
    raise RuntimeError(f"bench_{bench} run exceeded --timeout {timeout:g} s: {shown}") from e
  lines = [l for l in proc.stdout.splitlines() if l.startswith(_MARK)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"bench_{bench} run failed (exit {proc.returncode}): {shown}\n"
                       f"{proc.stderr[-2000:]}")
  return json.loads(lines[-1][len(_MARK):])


def run_statistics(rows, bench="overhead", platform="cpu") -> dict[str, dict]:
  """Per config (overhead) or problem (seeds) of one run: ``{statistic: {"values": (ratio
  of the medians, median of the per-repetition ratios), "target": limit or None}}``."""
  out = {}
  if bench == "seeds":
    for r in rows:
      target = summarize.seeds_target(r["problem"])
      out[r["problem"]] = {"vmap_vs_sequential": {
          "values": (r["ratio"], r.get("paired_ratio", r["ratio"])), "target": target}}
    return out
  targets = summarize.OVERHEAD_TARGETS["gpu" if platform == "gpu" else "cpu"]
  for c in dict.fromkeys(r["config"] for r in rows):
    arms = {r["arm"]: r for r in rows if r["config"] == c}
    a = arms["adam"]
    stats = {}
    if "part1" in arms:
      p1 = arms["part1"]
      # The targets are for the paper's MLP; the deep MLP has none.
      target = None if "1024" in c else targets.get(a["batch"])
      stats["part1_vs_adam"] = {
          "values": (p1["us_per_step"] / a["us_per_step"],
                     common.paired_ratio(p1["times_s"], a["times_s"])), "target": target}
      if "part2" in arms:
        p2 = arms["part2"]
        stats["part2_vs_part1"] = {
            "values": (p2["us_per_step"] / p1["us_per_step"],
                       common.paired_ratio(p2["times_s"], p1["times_s"])), "target": 1.0}
    out[c] = stats
  return out


def summary(runs, bench="overhead", platform="cpu") -> list[dict]:
  """Per config or problem over the runs: each statistic's median, min and max over the
  runs, and in how many runs its target was met (both statistics) or borderline (one)."""
  per_run = [run_statistics(r["rows"], bench, platform) for r in runs]
  rows = []
  for unit in dict.fromkeys(u for s in per_run for u in s):
    got = [s[unit] for s in per_run if unit in s]
    row = {"unit": unit, "runs": len(got)}
    for key in dict.fromkeys(k for g in got for k in g):
      v = np.asarray([g[key]["values"] for g in got if key in g], np.float64)  # (runs, 2)
      stat = {"median": np.median(v, 0).tolist(), "min": v.min(0).tolist(),
              "max": v.max(0).tolist(), "per_run": v.tolist(), "runs": len(v)}
      limit = got[0][key]["target"]
      if limit is not None:
        within = v <= limit if STATISTICS[key][1] else v >= limit
        stat.update(target=limit, met_runs=int(np.sum(within.all(1))),
                    one_statistic_runs=int(np.sum(within.any(1) & ~within.all(1))))
      row[key] = stat
    rows.append(row)
  return rows


def table(rows) -> str:
  keys = [k for k in STATISTICS if any(k in r for r in rows)]

  def cell(key, stat):
    if stat is None:
      return "-", "-"
    med, lo, hi = stat["median"], stat["min"], stat["max"]
    text = f"{med[0]:.3f} / {med[1]:.3f} ({lo[0]:.3f}–{hi[0]:.3f})"
    if "target" not in stat:
      return text, "(none)"
    sign = "≤" if STATISTICS[key][1] else "≥"
    return text, (f"{sign} {stat['target']:.2f}: {stat['met_runs']} of {stat['runs']}"
                  + (f" (+{stat['one_statistic_runs']} borderline)"
                     if stat["one_statistic_runs"] else ""))

  head = ["model, batch" if "vmap_vs_sequential" not in keys else "problem", "runs"]
  for i, k in enumerate(keys):
    head += [f"{STATISTICS[k][0]}: median over runs (range of the first)" if i == 0 else
             f"{STATISTICS[k][0]} (likewise)", "met in"]
  out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [c for k in keys for c in cell(k, r.get(k))]
    out.append(f"| {r['unit']} | {r['runs']} | " + " | ".join(cells) + " |")
  return "\n".join(out)


def _pin_problem(pin: str) -> str | None:
  """Why ``taskset -c PIN`` would fail here (a CPU list this process may not use), or None."""
  allowed = os.sched_getaffinity(0)
  cpus = set()
  try:
    for part in pin.split(","):  # taskset's list: 0, 0,1, 0-3 or 0-6:2
      span, _, stride = part.partition(":")
      first, _, last = span.partition("-")
      cpus.update(range(int(first), int(last or first) + 1, int(stride or 1)))
  except ValueError:
    return "not a CPU list such as 0, 0,1, 0-1 or 0-6:2"
  missing = sorted(cpus - allowed)
  if not cpus or missing:
    return f"CPU(s) {missing or pin} not available here (this process may use {sorted(allowed)})"
  return None


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  child = None
  if "--" in argv:
    child = argv[argv.index("--") + 1:]
    argv = argv[:argv.index("--")]
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--bench", choices=tuple(DEFAULT_ARGS), default="overhead",
                 help="the benchmark to repeat (default: overhead)")
  p.add_argument("--runs", type=common.positive_int, default=RUNS, help=f"runs (default {RUNS})")
  p.add_argument("--pin", default=None,
                 help="CPUs for every run (taskset -c PIN), e.g. 0; default: not pinned")
  p.add_argument("--timeout", type=common.positive_float, default=None,
                 help="seconds per run (default: none)")
  args = p.parse_args(argv)
  if args.pin is not None:
    problem = _pin_problem(args.pin)
    if problem:
      p.error(f"--pin {args.pin}: {problem}")
  default = list(DEFAULT_ARGS[args.bench])
  child = default if child is None else child
  for bad in ("--no-write", "--platform", "--tag"):
    if bad in child:
      p.error(f"{bad} is set by bench_repeat itself; do not pass it to bench_{args.bench}"
              " after --")
  if args.quick and "--quick" not in child:
    child.append("--quick")
  # This process only names the platform; on a GPU it must not take the memory its runs
  # need (jax preallocates 75 % by default). The runs get the environment as it was.
  child_env = dict(os.environ)
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  common.setup_platform(args)
  info = common.machine_info()
  platform = common.jax_device()["platform"]
  name = "repeat" if args.bench == "overhead" else f"repeat_{args.bench}"
  print(common.header(f"targets over {args.runs} runs of bench_{args.bench}", info))
  print(f"each run: python -m benchmarks.bench_{args.bench} " + " ".join(child)
        + (f" (taskset -c {args.pin})" if args.pin is not None else ""), flush=True)
  runs = []
  record = dict(settings=dict(bench=args.bench, runs=args.runs, bench_args=child, pin=args.pin,
                              statistic="per run and config or problem: the ratio of the"
                                        " medians and the median of the per-repetition"
                                        " ratios"),
                runs=runs, summary=[])
  for i in range(args.runs):
    load = [round(x, 2) for x in os.getloadavg()]
    rec = run_once(child, args.pin, args.platform if args.platform != "auto" else platform,
                   args.timeout, bench=args.bench, env=child_env)
    runs.append(dict(run=i, load_average_before=load, rows=rec["rows"],
                     settings=rec["settings"]))
    stats = run_statistics(rec["rows"], args.bench, platform)
    print(f"run {i + 1}/{args.runs} (load {load[0]}): " + "; ".join(
        f"{unit.split()[-1]} {STATISTICS[k][0]} {v['values'][0]:.3f} / {v['values'][1]:.3f}"
        for unit, st in stats.items() for k, v in st.items() if k != "part2_vs_part1"),
        flush=True)
    record["summary"] = summary(runs, args.bench, platform)
    common.progress(name, args, record, info)
  print()
  print(table(record["summary"]))
  # Fewer runs than the default, or other arguments to the benchmark, make it partial.
  partial = child != default or args.runs < RUNS
  common.write(name, args, record, info, partial=partial)
  return record


if __name__ == "__main__":
  main()
