"""bench_repeat: bench_overhead in fresh processes, and how often each target is met."""

import json
import os

import numpy as np
import pytest

from conftest import assert_refused
from benchmarks import bench_repeat, common, summarize


def _rows(config, batch, adam, part1, part2=None):
  """bench_overhead rows of one config from per-repetition run times (s)."""
  rows = []
  for arm, times in (("adam", adam), ("part1", part1), ("part2", part2)):
    if times is not None:
      rows.append(dict(config=config, batch=batch, arm=arm, times_s=list(times),
                       us_per_step=1e6 * common.median(times) / 200))
  return rows


def test_a_run_meets_a_target_only_if_both_statistics_do():
  runs = [
      # b420: 1.05 / 1.05 -> met; Part II ÷ Part I 0.9 -> met.
      {"rows": _rows("m b420", 420, [1.0, 1.0, 1.0], [1.05, 1.05, 1.05], [0.945] * 3)},
      # ratio of the medians 1.2 (missed), paired median 1.1 (met) -> borderline;
      # Part II = Part I: 1.0 / 1.0 -> met.
      {"rows": _rows("m b420", 420, [1.0, 1.0, 2.0], [1.2, 1.1, 2.0], [1.2, 1.1, 2.0])},
      # 1.2 / 1.2 -> missed; Part II slower than Part I -> missed.
      {"rows": _rows("m b420", 420, [1.0] * 3, [1.2] * 3, [1.3] * 3)},
  ]
  (row,) = bench_repeat.summary(runs)
  assert row["unit"] == "m b420" and row["runs"] == 3
  p1 = row["part1_vs_adam"]
  assert p1["target"] == 1.10 and p1["met_runs"] == 1 and p1["one_statistic_runs"] == 1
  assert p1["per_run"][1] == pytest.approx([1.2, 1.1])
  assert p1["min"] == pytest.approx([1.05, 1.05]) and p1["max"] == pytest.approx([1.2, 1.2])
  assert p1["median"] == pytest.approx([1.2, 1.1])
  p21 = row["part2_vs_part1"]
  assert p21["target"] == 1.0 and p21["met_runs"] == 2 and p21["one_statistic_runs"] == 0
  text = bench_repeat.table([row])
  assert "≤ 1.10: 1 of 3 (+1 borderline)" in text and "≤ 1.00: 2 of 3" in text


def test_the_targets_are_the_issues_by_platform_and_batch():
  runs = [{"rows": _rows("mlp784-128-10 b128", 128, [1.0], [1.3])
           + _rows("mlp784-1024-1024-10 b128", 128, [1.0], [1.3])
           + _rows("mlp784-128-10 b5", 5, [1.0], [2.0])}]
  cpu = {r["unit"]: r["part1_vs_adam"] for r in bench_repeat.summary(runs)}
  assert cpu["mlp784-128-10 b128"]["target"] == summarize.OVERHEAD_TARGETS["cpu"][128] == 1.35
  assert cpu["mlp784-128-10 b5"]["target"] == 2.5
  assert "target" not in cpu["mlp784-1024-1024-10 b128"]  # the deep MLP has none
  gpu = {r["unit"]: r["part1_vs_adam"] for r in bench_repeat.summary(runs, platform="gpu")}
  assert gpu["mlp784-128-10 b128"]["target"] == 1.2 and "target" not in gpu["mlp784-128-10 b5"]
  row = [r for r in bench_repeat.summary(runs) if r["unit"].startswith("mlp784-1024")]
  assert "(none)" in bench_repeat.table(row)


def _seeds_rows(iris, mnist):
  """bench_seeds rows: (ratio of the medians, paired) for Iris and the b42 MNIST MLP."""
  return [dict(problem="iris mlp4-10-3", ratio=iris[0], paired_ratio=iris[1]),
          dict(problem="mnist mlp784-128-10 b42", ratio=mnist[0], paired_ratio=mnist[1]),
          dict(problem="mnist mlp784-128-10 b5", ratio=0.5, paired_ratio=0.5)]


def test_seeds_targets_are_lower_bounds():
  runs = [{"rows": _seeds_rows((10.2, 10.4), (0.6, 0.7))},
          {"rows": _seeds_rows((9.5, 10.1), (1.6, 1.5))},
          {"rows": _seeds_rows((8.0, 8.2), (0.7, 0.7))}]
  rows = {r["unit"]: r["vmap_vs_sequential"] for r in bench_repeat.summary(runs, "seeds")}
  iris, b42, b5 = (rows[k] for k in ("iris mlp4-10-3", "mnist mlp784-128-10 b42",
                                     "mnist mlp784-128-10 b5"))
  assert (iris["target"], iris["met_runs"], iris["one_statistic_runs"]) == (10.0, 1, 1)
  assert (b42["target"], b42["met_runs"], b42["one_statistic_runs"]) == (1.5, 1, 0)
  assert "target" not in b5
  text = bench_repeat.table(bench_repeat.summary(runs, "seeds"))
  assert "≥ 10.00: 1 of 3 (+1 borderline)" in text and "| problem | runs |" in text


@pytest.fixture(autouse=True)
def _restore_preallocate(monkeypatch):
  """main sets XLA_PYTHON_CLIENT_PREALLOCATE in its own process; restored after each test."""
  # setenv records the variable's original state (absent included), which
  # teardown restores; delenv alone records nothing when it is absent.
  monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "")
  monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE")


def _fake_run(calls, envs=None):
  def run_once(child, pin=None, platform="auto", timeout=None, bench="overhead", env=None):
    calls.append((list(child), pin))
    if envs is not None:
      envs.append(env)
    k = len(calls)
    return {"settings": {"arms": ["adam", "part1", "part2"]},
            "rows": _rows("mlp784-128-10 b420", 420, [1.0] * 3, [1.0 + 0.07 * k] * 3,
                          [1.0] * 3)}
  return run_once


def test_every_run_is_a_new_bench_overhead_process_and_is_kept(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(bench_repeat, "run_once", _fake_run(calls))
  monkeypatch.setattr(common, "OUT_DIRS", (tmp_path / "out", tmp_path / "results"))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  rec = bench_repeat.main(["--runs", "3", "--pin", "0", "--platform", "cpu", "--tag", "t",
                           "--", "--configs", "b420", "--reps", "9"])
  assert calls == [(["--configs", "b420", "--reps", "9"], "0")] * 3
  assert [r["run"] for r in rec["runs"]] == [0, 1, 2]
  (row,) = rec["summary"]
  assert np.allclose(row["part1_vs_adam"]["per_run"], [[1.07] * 2, [1.14] * 2, [1.21] * 2])
  assert row["part1_vs_adam"]["met_runs"] == 1  # 1.07 only
  stored = json.loads((tmp_path / "results" / "repeat_cpu_t.json").read_text())
  assert stored["partial"] is True and len(stored["runs"]) == 3
  assert not list((tmp_path / "out").glob("*.progress.json"))


@pytest.mark.parametrize("argv, partial", [
    ([], False),
    (["--runs", "12"], False),
    (["--runs", "3"], True),
    (["--", "--configs", "b420"], True),
])
def test_fewer_runs_or_other_arguments_make_a_campaign_partial(tmp_path, monkeypatch, argv,
                                                                partial):
  monkeypatch.setattr(bench_repeat, "run_once", _fake_run([]))
  monkeypatch.setattr(common, "OUT_DIRS", (tmp_path / "out", tmp_path / "results"))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  bench_repeat.main(["--platform", "cpu", *argv])
  kept = tmp_path / "results" / "repeat_cpu.json"
  assert kept.exists() != partial
  assert json.loads((tmp_path / "out" / "repeat_cpu.json").read_text())["partial"] is partial


def test_a_campaign_cut_short_keeps_its_finished_runs(tmp_path, monkeypatch):
  calls = []
  fake = _fake_run(calls)

  def run_once(*a, **k):
    if len(calls) == 2:
      raise RuntimeError("bench_overhead run failed")
    return fake(*a, **k)

  monkeypatch.setattr(bench_repeat, "run_once", run_once)
  monkeypatch.setattr(common, "OUT_DIRS", (tmp_path / "out", tmp_path / "results"))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  with pytest.raises(RuntimeError, match="failed"):
    bench_repeat.main(["--platform", "cpu"])
  (kept,) = (tmp_path / "out").glob("repeat_cpu.*.progress.json")
  rec = json.loads(kept.read_text())
  assert rec["finished"] is False and len(rec["runs"]) == 2
  assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("bad", ["--no-write", "--tag", "--platform"])
def test_arguments_bench_repeat_sets_are_refused_after_the_separator(bad, capsys):
  assert_refused(bench_repeat.main, ["--no-write", "--", bad, "x"], capsys,
                 f"{bad} is set by bench_repeat itself")


def test_runs_must_be_positive(capsys):
  assert_refused(bench_repeat.main, ["--runs", "0", "--no-write"], capsys,
                 "argument --runs: must be an int >= 1, got 0")


@pytest.mark.parametrize("pin, message", [
    ("999", "--pin 999: CPU(s) [999] not available here"),
    ("0-999", "--pin 0-999: CPU(s) ["),
    ("x", "--pin x: not a CPU list"),
    ("", "--pin : not a CPU list"),
])
def test_pin_must_name_cpus_of_this_machine(pin, message, capsys):
  """Refused before any run (taskset used to fail in the first child)."""
  assert_refused(bench_repeat.main, ["--pin", pin, "--no-write"], capsys, message)


def test_pin_accepts_the_cpus_this_process_may_use():
  cpus = sorted(os.sched_getaffinity(0))
  assert bench_repeat._pin_problem(str(cpus[0])) is None
  assert bench_repeat._pin_problem(",".join(map(str, cpus))) is None
  assert bench_repeat._pin_problem(f"{cpus[0]}-{cpus[-1]}") is None or len(cpus) != cpus[-1] - cpus[0] + 1
  assert bench_repeat._pin_problem(f"{cpus[0]}-{cpus[0]}:2") is None  # taskset's stride form
  assert "[999]" in bench_repeat._pin_problem(f"{cpus[0]}-999:999")


def test_one_real_run_in_a_child_process():
  """The child protocol end to end: a 2-step, 1-repetition bench_overhead of batch 5."""
  rec = bench_repeat.run_once(["--configs", "b5", "--arms", "adam", "part1", "part2",
                               "--steps", "2", "--reps", "1"], platform="cpu", timeout=300)
  assert [(r["config"], r["arm"]) for r in rec["rows"]] == [
      ("mlp784-128-10 b5", a) for a in ("adam", "part1", "part2")]
  stats = bench_repeat.run_statistics(rec["rows"])
  assert set(stats["mlp784-128-10 b5"]) == {"part1_vs_adam", "part2_vs_part1"}


def test_a_failing_child_is_reported_with_its_command():
  with pytest.raises(RuntimeError, match=r"bench_overhead run failed \(exit 2\).*--arms part3"):
    bench_repeat.run_once(["--arms", "part3"], platform="cpu", timeout=300)


def test_a_seeds_campaign_repeats_bench_seeds_on_iris(tmp_path, monkeypatch):
  calls = []

  def run_once(child, pin=None, platform="auto", timeout=None, bench="overhead", env=None):
    calls.append((list(child), bench))
    return {"settings": {}, "rows": _seeds_rows((9.0, 9.5), (0.6, 0.6))[:1]}

  monkeypatch.setattr(bench_repeat, "run_once", run_once)
  monkeypatch.setattr(common, "OUT_DIRS", (tmp_path / "out", tmp_path / "results"))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  rec = bench_repeat.main(["--bench", "seeds", "--platform", "cpu"])
  assert calls == [(["--problems", "iris"], "seeds")] * bench_repeat.RUNS
  assert rec["settings"]["bench"] == "seeds" and rec["settings"]["bench_args"] == calls[0][0]
  stored = json.loads((tmp_path / "results" / "repeat_seeds_cpu.json").read_text())
  assert stored["partial"] is False
  (row,) = stored["summary"]
  assert row["vmap_vs_sequential"]["met_runs"] == 0


def test_a_seeds_child_runs_bench_seeds():
  """The seeds child imports and runs bench_seeds (here its --help: it exits without a
  record, which is reported as a failed run with the command)."""
  with pytest.raises(RuntimeError, match=r"bench_seeds run failed \(exit 0\): "
                                         r"python -m benchmarks.bench_seeds --help"):
    bench_repeat.run_once(["--help"], platform="cpu", timeout=300, bench="seeds")


def test_the_runs_get_the_environment_as_it_was(tmp_path, monkeypatch):
  """The parent turns off jax's GPU preallocation for itself only: its runs (the measured
  processes) see the caller's environment unchanged."""
  import os
  calls, envs = [], []
  monkeypatch.setattr(bench_repeat, "run_once", _fake_run(calls, envs))
  monkeypatch.setattr(common, "OUT_DIRS", (tmp_path / "out", tmp_path / "results"))
  monkeypatch.setenv("HOMAX_BENCH_MARKER", "1")
  bench_repeat.main(["--runs", "2", "--platform", "cpu", "--no-write"])
  assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert len(envs) == 2
  for env in envs:
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in env and env["HOMAX_BENCH_MARKER"] == "1"


def test_a_run_past_its_timeout_is_reported_with_its_command():
  with pytest.raises(RuntimeError, match=r"exceeded --timeout 0.2 s: taskset -c 0 "
                                         r"python -m benchmarks.bench_overhead --configs b5"):
    bench_repeat.run_once(["--configs", "b5"], pin="0", platform="cpu", timeout=0.2)
