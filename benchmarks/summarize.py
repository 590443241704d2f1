"""Markdown tables of the benchmark results against the issue's targets.

Reads ``benchmarks/results/<name>_<platform>.json`` (what the four scripts
wrote) and prints the tables used in ``benchmarks/RESULTS.md``.

Usage::

  python -m benchmarks.summarize              # CPU results
  python -m benchmarks.summarize --platform gpu
  python -m benchmarks.summarize --only overhead --tag 1core
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import common


TABLES = ("overhead", "torch", "memory", "seeds", "repeat", "repeat_seeds")


def record_path(name, platform, tag=""):
  return common.ROOT / "benchmarks" / "results" / f"{name}_{platform}{'_' + tag if tag else ''}.json"


def load(name, platform, tag=""):
  """The record, None if there is none, or SystemExit naming an unreadable file."""
  path = record_path(name, platform, tag)
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
      raise ValueError("not a JSON object")
  except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
    raise SystemExit(f"summarize: {path}: not a readable benchmark record ({e})") from None
  if record.get("quick") or record.get("partial"):
    print(f"warning: {path.relative_to(common.ROOT)} is a {'--quick' if record.get('quick') else 'partial'}"
          " run, not a full one", file=sys.stderr)
  return record


def on_gpu(rec):
  return rec["machine"]["jax_device"]["platform"] == "gpu"


def ok(flag):
  return "met" if flag else "**missed**"


def verdict(*flags):
  """met if every statistic meets the target, missed if none, else borderline."""
  if all(flags):
    return "met"
  if not any(flags):
    return "**missed**"
  return "borderline (one statistic meets it)"


def machine_line(rec):
  m = rec["machine"]
  v = m["versions"]
  return (f"{m['date_utc']}, {m['cpu']} ({m['nproc']} cores, process allowed on"
          f" {m.get('affinity_cpus')}), jax {v.get('jax')} on"
          f" {m['jax_device']['device_kind']}, torch {v.get('torch', '-')}; load average"
          f" (1/5/15 min) before {m['load_average_1_5_15']}, after"
          f" {m.get('load_average_after')}. Command: `{m['command']}`")


def overhead_arms(rec, arms=None):
  """Every arm of a run (or those in ``arms``) against Adam (runs with ``--arms``)."""
  out = [machine_line(rec), "",
         "Ratios: of the medians / median of the per-repetition (paired) ratios.", "",
         "| model, batch | P | arm | µs/step | ÷ Adam |", "|---|---|---|---|---|"]
  adam = {r["config"]: r for r in rec["rows"] if r["arm"] == "adam"}
  for r in rec["rows"]:
    if arms is not None and r["arm"] not in arms:
      continue
    a = adam[r["config"]]
    out.append(f"| {r['config']} | {r['params']} | {r['arm']} | {r['us_per_step']:.0f} |"
               f" {r['ratio_vs_adam']:.2f} / {common.paired_ratio(r['times_s'], a['times_s']):.2f} |")
  return "\n".join(out)


DEFAULT_ARMS = ("adam", "part1", "part2", "sgd", "sgd+homog")


def overhead(rec):
  """The targets' table; a run without every default arm gets the arms' table alone,
  one with extra arms (``--arms``) gets both, the second without verdicts."""
  extra = [a for a in rec["settings"]["arms"] if a not in DEFAULT_ARMS]
  if not set(DEFAULT_ARMS) <= set(rec["settings"]["arms"]):
    return overhead_arms(rec)
  if extra:
    return overhead_defaults(rec) + "\n\nExtra arms:\n\n" + overhead_arms(rec, ["adam", *extra])
  return overhead_defaults(rec)


# The targets for Part I ÷ Adam by batch size (paper MLP): for the
# 2-core CPU at three batch sizes; on a GPU, overhead <= 1.2 at batch 128 only.
OVERHEAD_TARGETS = {"cpu": {5: 2.5, 128: 1.35, 420: 1.10}, "gpu": {128: 1.2}}


def overhead_defaults(rec):
  targets = OVERHEAD_TARGETS["gpu" if on_gpu(rec) else "cpu"]
  out = [machine_line(rec), "",
         "Ratios: of the medians / median of the per-repetition (paired) ratios.", "",
         "| model, batch | P | Adam µs/step | Part I µs/step | Part I ÷ Adam | target |"
         " Part II µs/step | Part II ÷ Adam | Part II ≤ Part I | SGD µs | SGD + homogeneity µs |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
  configs = []
  for r in rec["rows"]:
    if r["config"] not in configs:
      configs.append(r["config"])
  for c in configs:
    rows = {r["arm"]: r for r in rec["rows"] if r["config"] == c}
    a, p1, p2 = rows["adam"], rows["part1"], rows["part2"]
    r1 = (p1["ratio_vs_adam"], common.paired_ratio(p1["times_s"], a["times_s"]))
    r2 = (p2["ratio_vs_adam"], common.paired_ratio(p2["times_s"], a["times_s"]))
    r21 = (p2["us_per_step"] / p1["us_per_step"], common.paired_ratio(p2["times_s"], p1["times_s"]))
    deep = "1024" in c
    target = None if deep else targets.get(a["batch"])
    t = (f"≤ {target:.2f}: {verdict(*(x <= target for x in r1))}" if target else "(none)")
    t21 = (verdict(*(x <= 1.0 for x in r21)) if not deep else
           ("yes" if max(r21) <= 1 else "no"))
    sgd, sh = rows.get("sgd"), rows.get("sgd+homog")
    out.append(
        f"| {c} | {a['params']} | {a['us_per_step']:.0f} | {p1['us_per_step']:.0f} |"
        f" {r1[0]:.2f} / {r1[1]:.2f} | {t} | {p2['us_per_step']:.0f} | {r2[0]:.2f} / {r2[1]:.2f} |"
        f" {t21} (÷ {r21[0]:.2f} / {r21[1]:.2f}) | {sgd['us_per_step']:.0f} |"
        f" {sh['us_per_step']:.0f} (÷ SGD {sh['ratio_vs_sgd']:.2f}) |")
  return "\n".join(out)


def torch_table(rec):
  out = [machine_line(rec), "",
         "Parts and ratios: from the medians / from the median of the per-repetition (paired)"
         " differences.", "",
         "| batch | torch Adam µs | torch homog. µs | homax Adam µs | homax homog. µs | whole step × |"
         " torch part µs | homax part µs | part × | target ≥ 20× | part × without the seed's monitoring |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rec["rows"]:
    ts, n = r["times_s"], r["steps"]
    ph = common.paired_difference(ts["homax homog"], ts["homax adam"]) / n
    pt = common.paired_difference(ts["torch homog"], ts["torch adam"]) / n
    x1 = r["part_cheaper_x"]
    x2 = pt / ph if ph > 0 else None
    fmt = lambda x: "n/a" if x is None else f"{x:.1f}"
    if on_gpu(rec):  # on a GPU the target is the whole step, >= 20x the published code's
      tgt = "whole step: " + ok(r["speedup_whole_step"] >= 20)
    else:
      tgt = ("(none)" if r["batch"] not in (5, 128) else
             verdict(*((x is not None and x >= 20) for x in (x1, x2))))
    xn = r["part_cheaper_no_monitor_x"]
    out.append(
        f"| {r['batch']} | {r['torch_adam_us']:.0f} | {r['torch_homog_us']:.0f} |"
        f" {r['homax_adam_us']:.0f} | {r['homax_homog_us']:.0f} | {r['speedup_whole_step']:.1f} |"
        f" {r['torch_part_us']:.0f} / {1e6 * pt:.0f} | {r['homax_part_us']:.0f} / {1e6 * ph:.0f} |"
        f" {fmt(x1)} / {fmt(x2)} | {tgt} | {fmt(xn)} |")
  return "\n".join(out)


def memory(rec):
  calls = rec["settings"].get("calls_per_timing", 1)
  # One call per timing on a GPU: the copy reference's time is mostly dispatch and
  # wait (Part I then exceeds 100 % of "copy"), so no verdict is drawn from it.
  # With more steps per timing they run in one jitted fori_loop (bench_memory --calls).
  judged = not (on_gpu(rec) and calls == 1)
  out = [machine_line(rec), "",
         f"Steps per timing: {calls}." + ("" if judged else
         " One call per timing on a GPU makes the copy reference dispatch-bound: % of copy"
         " is printed, not judged against the target."), "",
         "| P | config | bytes (formula) | ms | GB/s | copy GB/s (x·1.0001 / x+y) | % of copy |"
         " copy-speed passes (ideal) | notes |",
         "|---|---|---|---|---|---|---|---|---|"]
  for r in rec["rows"]:
    tgt = ""
    if r["P"] == 10**7 and r["config"] in ("part1", "part2"):
      tgt = (" (target ≥ 90%: " + ok(r["pct_of_copy"] >= 90) + ")" if judged
             else " (not judged)")
    notes = []
    if "best_part1_pct_of_copy" in r and on_gpu(rec):
      notes.append("CPU-blocked prototype; no bound drawn on a GPU")
    elif "best_part1_pct_of_copy" in r:
      notes.append(f"bound estimate for an XLA Part I step: {r['best_part1_pct_of_copy']:.0f}%"
                   if r["P"] >= 10**7 else "no bound in cache (see notes)")
    if "max_rel_diff_vs_homax" in r:
      notes.append(f"prototype, not in homax; rel. diff vs homax {r['max_rel_diff_vs_homax']:.1e}")
    elif r["config"] == "part1-blocked":
      notes.append("prototype, not in homax")
    out.append(
        f"| {r['P']:.0e} | {r['config']} | {r['bytes']:.3g} ({r['ideal_arrays'] * 4}·P) |"
        f" {r['ms']:.3f} | {r['gb_s']:.1f} | {r['copy_gb_s']:.1f} / {r['add_gb_s']:.1f} |"
        f" {r['pct_of_copy']:.0f}{tgt} | {r['array_passes_at_copy_speed']:.1f} ({r['ideal_arrays']}) |"
        f" {'; '.join(notes)} |")
  return "\n".join(out)


# The targets for 32 vmapped seeds ÷ 32 one after another (throughput), at least:
# Iris, and the paper MNIST MLP at the published batch 42 (batch 5 is context).
SEEDS_TARGETS = {"iris": 10.0, "b42": 1.5}


def seeds_target(problem: str):
  """The target of a ``bench_seeds`` problem (by its first or last word), or None."""
  words = problem.split()
  return SEEDS_TARGETS.get(words[0], SEEDS_TARGETS.get(words[-1]))


def seeds(rec):
  out = [machine_line(rec), "",
         "| problem | data | steps per seed | 32 seeds, vmap (s) | 32 seeds, one after another (s) |"
         " ratio × | target |",
         "|---|---|---|---|---|---|---|"]
  for r in rec["rows"]:
    target = seeds_target(r["problem"])
    if target is None:
      tgt = "(context)"
    else:
      tgt = f"≥ {target:g}: " + verdict(r["ratio"] >= target,
                                        r.get("paired_ratio", r["ratio"]) >= target)
    out.append(
        f"| {r['problem']} | {r['data']} | {r['steps_per_seed']} | {r['parallel_s']:.3f} |"
        f" {r['sequential_s']:.3f} | {r['ratio']:.1f} | {tgt} |")
  if any("group_ratio" in r for r in rec["rows"]):
    out += ["", "The 32 seeds as vmapped groups of g seeds, one group after another: throughput"
            " ÷ the sequential arm (g = 1); and what the 32-seed step moves:", "",
            "| problem | " + " | ".join(f"g = {g}" for g in rec["rows"][0]["group_ratio"])
            + " | XLA MB per seed-step | carry MB (32 seeds) | copy GB/s | bound × |",
            "|---|" + "---|" * (len(rec["rows"][0]["group_ratio"]) + 4)]
    for r in rec["rows"]:
      bound = r.get("bandwidth_bound_ratio")
      copy_and_bound = "- | -" if bound is None else f"{r['copy_gb_s']:.1f} | {bound:.2f}"
      out.append(
          f"| {r['problem']} | " + " | ".join(f"{x:.2f}" for x in r["group_ratio"].values())
          + f" | {r['xla_bytes_per_seed_step'] / 1e6:.2f} | {r['carry_bytes'] / 1e6:.1f} |"
          f" {copy_and_bound} |")
  if rec.get("shuffle"):
    out += ["", "Shuffle of 32 vmapped seeds, one call (µs):", "",
            "| n | jax.random.permutation | counting | × | identical | the trainer uses |",
            "|---|---|---|---|---|---|"]
    for r in rec["shuffle"]:
      out.append(f"| {r['n']} | {r['sort_us']:.0f} | {r['count_us']:.0f} | {r['speedup']:.2f} |"
                 f" {'yes' if r['identical'] else 'NO'} | {r['used_by_trainer']} |")
  return "\n".join(out)


def repeat(rec):
  """``bench_repeat``'s table: per config or problem, in how many runs each target was met.

  Computed from the stored runs' rows, so that records written before the seeds option
  (arguments under ``overhead_args``, their stored ``summary`` in an earlier layout) read
  the same way."""
  from benchmarks import bench_repeat
  st = rec["settings"]
  bench = st.get("bench", "overhead")
  args = st.get("bench_args", st.get("overhead_args"))
  platform = rec["machine"]["jax_device"]["platform"]
  return (machine_line(rec) + f"\n\nEach run: `python -m benchmarks.bench_{bench} "
          + " ".join(args) + "`"
          + (f" pinned with `taskset -c {st['pin']}`" if st["pin"] is not None else "")
          + ". Ratios: of the medians / paired.\n\n"
          + bench_repeat.table(bench_repeat.summary(rec["runs"], bench, platform)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--platform", default="cpu")
  p.add_argument("--tag", default="", help="the --tag the results were written with")
  p.add_argument("--only", nargs="+", default=None, choices=TABLES,
                 help="overhead, torch, memory, seeds, repeat, repeat_seeds (the last two only"
                      " when named)")
  args = p.parse_args(argv)
  for name, fn, title in (("overhead", overhead, "Overhead vs Adam"),
                          ("torch", torch_table, "Against the published code"),
                          ("memory", memory, "Against the memory limit"),
                          ("seeds", seeds, "Seeds in parallel"),
                          ("repeat", repeat, "How often the overhead targets are met"),
                          ("repeat_seeds", repeat, "How often the seeds targets are met")):
    if (args.only and name not in args.only) or (name.startswith("repeat") and not args.only):
      continue
    rec = load(name, args.platform, args.tag)
    if rec:
      try:
        table = fn(rec)
      except KeyError as e:  # a field the table reads (bugs in the tables keep their traceback)
        raise SystemExit(f"summarize: {record_path(name, args.platform, args.tag)}: an incomplete"
                         f" or damaged record ({type(e).__name__}: {e})") from None
    else:
      table = f"(no results for {name} on {args.platform} {args.tag})"
    print(f"### {title}\n")
    print(table)
    print()


if __name__ == "__main__":
  main()
