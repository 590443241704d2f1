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


def _scaled_part2(rec, config, factor):
  """Part II of ``config`` at ``factor`` × Part I's time in every repetition."""
  rows = {r["arm"]: r for r in rec["rows"] if r["config"] == config}
  p1, p2 = rows["part1"], rows["part2"]
  p2["times_s"] = [factor * t for t in p1["times_s"]]
  p2["us_per_step"] = factor * p1["us_per_step"]


def test_part_ii_against_part_i_verdict_and_ratios():
  """Part II ≤ Part I: met at ÷ 1.00 (equal counts), missed above; the deep MLP (no target)
  says yes or no."""
  rec = _overhead("cpu")
  _scaled_part2(rec, "mlp784-128-10 b5", 0.5)
  _scaled_part2(rec, "mlp784-128-10 b128", 1.25)
  _scaled_part2(rec, "mlp784-1024-1024-10 b128", 1.25)
  text = summarize.overhead(rec)
  assert "| met (÷ 0.50 / 0.50) |" in _line(text, "| mlp784-128-10 b5 |")
  assert "| **missed** (÷ 1.25 / 1.25) |" in _line(text, "| mlp784-128-10 b128 |")
  assert "| met (÷ 1.00 / 1.00) |" in _line(text, "| mlp784-128-10 b420 |")  # equal: met
  assert "| no (÷ 1.25 / 1.25) |" in _line(text, "| mlp784-1024-1024-10 b128 |")
  _scaled_part2(rec, "mlp784-1024-1024-10 b128", 1.0)
  assert "| yes (÷ 1.00 / 1.00) |" in _line(summarize.overhead(rec), "| mlp784-1024-1024-10 b128 |")
  # The two statistics disagree (medians 0.60, paired 1.20): no, as for a missed target.
  rows = {r["arm"]: r for r in rec["rows"] if r["config"] == "mlp784-1024-1024-10 b128"}
  assert rows["part1"]["times_s"] == [9.0, 18.0, 18.0]
  rows["part2"]["times_s"] = [10.8, 21.6, 9.0]
  rows["part2"]["us_per_step"] = 0.6 * rows["part1"]["us_per_step"]
  assert "| no (÷ 0.60 / 1.20) |" in _line(summarize.overhead(rec), "| mlp784-1024-1024-10 b128 |")


def _exact_torch_row(batch, homax_homog_s):
  """A one-step torch row in exact binary values: torch Adam 2 s, homogeneity 12 s (part
  10 s); homax Adam 1 s, homogeneity ``homax_homog_s``; ratios as ``bench_torch`` makes them."""
  ts = {"homax adam": [1.0] * 3, "homax homog": [homax_homog_s] * 3,
        "torch adam": [2.0] * 3, "torch homog": [12.0] * 3}
  part = homax_homog_s - 1.0
  return dict(batch=batch, steps=1, times_s=ts, torch_adam_us=2e6, torch_homog_us=12e6,
              homax_adam_us=1e6, homax_homog_us=1e6 * homax_homog_s,
              speedup_whole_step=12.0 / homax_homog_s, torch_part_us=10e6, homax_part_us=1e6 * part,
              part_cheaper_x=10.0 / part if part > 0 else None,
              part_cheaper_no_monitor_x=10.0 / part if part > 0 else None)


def test_targets_are_met_at_exactly_their_value():
  """≥ 20× (torch, both statistics), ≥ 90 % of copy and ≥ 10× (Iris seeds) include the bound."""
  row = _exact_torch_row(5, homax_homog_s=1.5)  # parts 10 s and 0.5 s: 20×, paired too
  assert row["part_cheaper_x"] == 20.0
  assert "| met |" in _line(summarize.torch_table(dict(machine=_machine("cpu"), rows=[row])),
                            "| 5 |")
  on_gpu = dict(row, speedup_whole_step=20.0)  # the GPU's target: the whole step, 20×
  assert "whole step: met" in _line(
      summarize.torch_table(dict(machine=_machine("gpu"), rows=[on_gpu])), "| 5 |")
  text = summarize.memory(_memory("cpu", 1, 90.0))
  assert "(target ≥ 90%: met)" in _line(text, "| 1e+07 | part1 |")
  rec = dict(machine=_machine("cpu"), rows=[dict(
      problem="iris mlp4-10-3", data="stub", steps_per_seed=1, parallel_s=1.0, sequential_s=10.0,
      ratio=10.0, paired_ratio=10.0)])
  assert "≥ 10: met" in _line(summarize.seeds(rec), "| iris mlp4-10-3 |")


def test_the_memory_target_is_judged_on_part_i_and_ii_at_p_1e7_only():
  rec = _memory("cpu", 1, 50.0)
  row = rec["rows"][0]
  rec["rows"] = [dict(row, config="pass1"), dict(row, P=10**6), dict(row, config="part2")]
  text = summarize.memory(rec)
  assert "target" not in _line(text, "| 1e+07 | pass1 |")
  assert "target" not in _line(text, "| 1e+06 | part1 |")
  assert "(target ≥ 90%: **missed**)" in _line(text, "| 1e+07 | part2 |")


def test_a_quick_or_partial_record_is_read_with_a_warning(tmp_path, monkeypatch, capsys):
  import json
  monkeypatch.setattr(summarize.common, "ROOT", tmp_path)
  results = tmp_path / "benchmarks" / "results"
  results.mkdir(parents=True)
  for flags, warning in (({}, None), ({"partial": True}, "is a partial run"),
                         ({"quick": True}, "is a --quick run"),
                         ({"quick": True, "partial": True}, "is a --quick run")):
    (results / "x_cpu.json").write_text(json.dumps(dict(flags, rows=[])))
    assert summarize.load("x", "cpu") == dict(flags, rows=[])
    err = capsys.readouterr().err
    if warning is None:
      assert err == ""
    else:
      assert f"warning: benchmarks/results/x_cpu.json {warning}, not a full one" in err


def test_a_homax_part_of_zero_has_no_torch_ratio():
  """homax's homogeneity part within the noise (≤ 0): 'n/a', and the target is missed."""
  row = _exact_torch_row(128, homax_homog_s=1.0)
  assert row["part_cheaper_x"] is None
  line = _line(summarize.torch_table(dict(machine=_machine("cpu"), rows=[row])), "| 128 |")
  assert "| n/a / n/a | **missed** | n/a |" in line, line
