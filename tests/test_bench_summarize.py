"""summarize's verdicts against the issue's targets, on small synthetic records."""

import pytest

from benchmarks import summarize


def _machine(platform):
  return dict(date_utc="2026-01-01T00:00:00+00:00", cpu="stub", nproc=2, affinity_cpus=2,
              versions={"jax": "0", "torch": "0"}, load_average_1_5_15=[0, 0, 0],
              jax_device={"platform": platform, "device_kind": "stub"}, command="stub")


def _line(text, start):
  lines = [l for l in text.splitlines() if l.startswith(start)]
  assert len(lines) == 1, (start, text)
  return lines[0]


def _overhead_rows(config, batch, part1, part1_paired):
  """One config's rows: Part I ÷ Adam ``part1`` (of the medians), ``part1_paired`` (paired).

  Adam [1, 2, 3] s. Part I [q, 2q, 2r] (r ≤ q) or [2r, 2q, 3q] (r > q), for r = part1 and
  q = part1_paired within a factor 1.5: two repetitions at ratio q (the paired median),
  and the median time 2r.
  """
  r, q = part1, part1_paired
  assert q / 2 <= r <= 1.5 * q
  adam = [1.0, 2.0, 3.0]
  p1 = [q, 2 * q, 2 * r] if r <= q else [2 * r, 2 * q, 3 * q]
  med = lambda xs: sorted(xs)[1]  # noqa: E731
  rows = []
  for arm, times in (("adam", adam), ("part1", p1), ("part2", p1), ("sgd", adam),
                     ("sgd+homog", adam)):
    rows.append(dict(config=config, batch=batch, params=1, arm=arm, times_s=times,
                     us_per_step=1e6 * med(times) / 200,
                     ratio_vs_adam=med(times) / med(adam), ratio_vs_sgd=1.0))
  return rows


def _overhead(platform, b5=(1.0, 1.0), b128=(1.0, 1.0), b420=(1.0, 1.0), deep=(9.0, 9.0)):
  rows = (_overhead_rows("mlp784-128-10 b5", 5, *b5)
          + _overhead_rows("mlp784-128-10 b128", 128, *b128)
          + _overhead_rows("mlp784-128-10 b420", 420, *b420)
          + _overhead_rows("mlp784-1024-1024-10 b128", 128, *deep))
  return dict(machine=_machine(platform),
              settings=dict(arms=["adam", "part1", "part2", "sgd", "sgd+homog"]), rows=rows)


def test_the_stub_rows_give_the_ratios_asked_for():
  from benchmarks import common
  rows = _overhead_rows("c", 5, 1.3, 1.1)
  a, p1 = rows[0], rows[1]
  assert p1["ratio_vs_adam"] == pytest.approx(1.3)
  assert common.paired_ratio(p1["times_s"], a["times_s"]) == pytest.approx(1.1)


def test_cpu_overhead_targets_at_batches_5_128_420():
  text = summarize.overhead(_overhead("cpu", b5=(2.4, 2.4), b128=(1.3, 1.3), b420=(1.05, 1.15)))
  assert "≤ 2.50: met" in _line(text, "| mlp784-128-10 b5 |")
  assert "≤ 1.35: met" in _line(text, "| mlp784-128-10 b128 |")
  assert "≤ 1.10: borderline" in _line(text, "| mlp784-128-10 b420 |")  # paired 1.15 > 1.10
  assert "| (none) |" in _line(text, "| mlp784-1024-1024-10 b128 |")
  text = summarize.overhead(_overhead("cpu", b5=(2.6, 2.7)))
  assert "≤ 2.50: **missed**" in _line(text, "| mlp784-128-10 b5 |")


def test_gpu_overhead_target_is_1_2_at_batch_128_only():
  text = summarize.overhead(_overhead("gpu", b5=(3.0, 3.0), b128=(1.3, 1.3), b420=(1.5, 1.5)))
  assert "≤ 1.20: **missed**" in _line(text, "| mlp784-128-10 b128 |")  # met on the CPU (1.35)
  assert "| (none) |" in _line(text, "| mlp784-128-10 b5 |")
  assert "| (none) |" in _line(text, "| mlp784-128-10 b420 |")
  text = summarize.overhead(_overhead("gpu", b128=(1.15, 1.19)))
  assert "≤ 1.20: met" in _line(text, "| mlp784-128-10 b128 |")


def test_a_run_without_every_default_arm_gets_no_verdict():
  rec = _overhead("cpu", b5=(2.6, 2.6))
  rec["settings"]["arms"] = ["adam", "part1", "part2", "sgd", "part1-flatten"]
  text = summarize.overhead(rec)
  assert "met" not in text and "missed" not in text


def test_extra_arms_beside_the_defaults_are_listed_after_the_verdicts():
  rec = _overhead("cpu", b5=(2.6, 2.6))
  rec["settings"]["arms"] = [*summarize.DEFAULT_ARMS, "part1-onesum"]
  for r in [r for r in rec["rows"] if r["arm"] == "part1"]:
    rec["rows"].append(dict(r, arm="part1-onesum"))
  verdicts, extra = summarize.overhead(rec).split("Extra arms:")
  assert "≤ 2.50: **missed**" in _line(verdicts, "| mlp784-128-10 b5 |")
  assert "part1-onesum" not in verdicts
  arms = [line.split("|")[3].strip() for line in extra.splitlines() if line.startswith("| mlp")]
  assert set(arms) == {"adam", "part1-onesum"}


def _torch_row(batch, torch_part_x, whole_step_x):
  """homax: Adam 100 µs/step, homog 110 µs; torch's part ``torch_part_x`` × homax's 10 µs."""
  steps = 100
  t_adam = 1000e-6
  ts = {"homax adam": [100e-6 * steps] * 3, "homax homog": [110e-6 * steps] * 3,
        "torch adam": [t_adam * steps] * 3,
        "torch homog": [(t_adam + torch_part_x * 10e-6) * steps] * 3}
  return dict(batch=batch, steps=steps, times_s=ts, torch_adam_us=1000.0,
              torch_homog_us=1000 + 10 * torch_part_x, homax_adam_us=100.0, homax_homog_us=110.0,
              speedup_whole_step=whole_step_x, torch_part_us=10 * torch_part_x, homax_part_us=10.0,
              part_cheaper_x=torch_part_x, part_cheaper_no_monitor_x=torch_part_x)


def test_torch_targets_the_part_on_the_cpu_and_the_whole_step_on_a_gpu():
  rows = [_torch_row(5, 25.0, 9.0), _torch_row(128, 15.0, 30.0), _torch_row(420, 5.0, 1.0)]
  text = summarize.torch_table(dict(machine=_machine("cpu"), rows=rows))
  assert "| met |" in _line(text, "| 5 |")  # the part 25× (whole step 9×: not the CPU target)
  assert "| **missed** |" in _line(text, "| 128 |")
  assert "| (none) |" in _line(text, "| 420 |")
  text = summarize.torch_table(dict(machine=_machine("gpu"), rows=rows))
  assert "whole step: **missed**" in _line(text, "| 5 |")  # 9× < 20×
  assert "whole step: met" in _line(text, "| 128 |")  # 30×, though the part is 15×
  assert "whole step: **missed**" in _line(text, "| 420 |")


def _memory(platform, calls=None, pct=95.0):
  row = dict(P=10**7, config="part1", bytes=48e7, ms=1.0, gb_s=1.0, copy_gb_s=1.0, add_gb_s=1.0,
             pct_of_copy=pct, array_passes_at_copy_speed=12.0, ideal_arrays=12)
  settings = {} if calls is None else {"calls_per_timing": calls}
  return dict(machine=_machine(platform), settings=settings, rows=[row])


@pytest.mark.parametrize("platform, calls, pct, verdict", [
    ("cpu", 1, 95.0, "(target ≥ 90%: met)"),
    ("cpu", None, 80.0, "(target ≥ 90%: **missed**)"),
    ("gpu", 20, 95.0, "(target ≥ 90%: met)"),
    ("gpu", 20, 80.0, "(target ≥ 90%: **missed**)"),
    ("gpu", 1, 95.0, "(not judged)"),     # one call per timing: a dispatch-bound reference
    ("gpu", None, 95.0, "(not judged)"),  # a record from before calls_per_timing: one call
])
def test_memory_verdict_is_not_judged_for_gpu_records_timed_one_call_at_a_time(
    platform, calls, pct, verdict):
  text = summarize.memory(_memory(platform, calls, pct))
  assert verdict in _line(text, "| 1e+07 | part1 |")
  assert ("not judged against the target" in text) == (verdict == "(not judged)")


def test_seeds_targets():
  def row(problem, ratio, paired):
    return dict(problem=problem, data="stub", steps_per_seed=1, parallel_s=1.0,
                sequential_s=ratio, ratio=ratio, paired_ratio=paired)
  rec = dict(machine=_machine("cpu"), rows=[
      row("iris mlp4-10-3", 12.0, 9.0), row("mnist mlp784-128-10 b42", 1.6, 1.7),
      row("mnist mlp784-128-10 b5", 0.5, 0.5)])
  text = summarize.seeds(rec)
  assert "≥ 10: borderline" in _line(text, "| iris mlp4-10-3 |")
  assert "≥ 1.5: met" in _line(text, "| mnist mlp784-128-10 b42 |")
  assert "(context)" in _line(text, "| mnist mlp784-128-10 b5 |")


def test_summarize_knows_the_overhead_benchmarks_default_arms():
  from benchmarks import bench_overhead
  assert set(summarize.DEFAULT_ARMS) == set(bench_overhead.ARMS)


def test_repeat_is_printed_only_when_named(tmp_path, monkeypatch, capsys):
  """``--only repeat`` prints bench_repeat's table from its record; a plain run skips it."""
  import json
  from benchmarks import bench_repeat, common
  runs = [{"rows": _overhead_rows("mlp b420", 420, 1.05, 1.05)},
          {"rows": _overhead_rows("mlp b420", 420, 1.2, 1.2)}]
  rec = {"benchmark": "repeat", "machine": _machine("cpu"),
         "settings": {"overhead_args": ["--configs", "b420"], "pin": "0", "runs": 2},
         "runs": runs, "summary": bench_repeat.summary(runs)}
  (tmp_path / "benchmarks" / "results").mkdir(parents=True)
  (tmp_path / "benchmarks" / "results" / "repeat_cpu.json").write_text(json.dumps(rec))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  summarize.main(["--only", "repeat"])
  out = capsys.readouterr().out
  assert "`python -m benchmarks.bench_overhead --configs b420` pinned with `taskset -c 0`" in out
  assert "≤ 1.10: 1 of 2" in _line(out, "| mlp b420 |")
  summarize.main([])
  assert "How often" not in capsys.readouterr().out
