"""The memory benchmark's blocked prototype computes homax's Part I update."""

import json
import re

import pytest

from conftest import assert_refused
from benchmarks import bench_memory


@pytest.mark.parametrize("size_in_blocks", [0.5, 3.25])
def test_blocked_prototype_matches_homax(monkeypatch, size_in_blocks):
  """Two blocked passes (full blocks and a tail) give homax's update and state.

  Only the order in which N and D are summed differs, so the values agree to
  float32 rounding, over three steps (count, moments and average evolve).
  """
  monkeypatch.setattr(bench_memory, "BLOCK", 256)
  assert bench_memory.blocked_check(int(256 * size_in_blocks)) < 1e-5


def test_blocked_check_fails_a_prototype_that_returns_nan_or_drops_a_leaf(monkeypatch):
  """The check above can fail: a NaN output is reported as NaN, not dropped,
  and a missing output array is an error, not a shorter comparison."""
  import jax
  import jax.numpy as jnp
  original = bench_memory.part1_blocked
  monkeypatch.setattr(bench_memory, "BLOCK", 256)
  monkeypatch.setattr(bench_memory, "part1_blocked", lambda u, s, p: jax.tree.map(
      lambda x: jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      original(u, s, p)))
  error = bench_memory.blocked_check(512)
  assert error != error  # NaN
  monkeypatch.setattr(bench_memory, "part1_blocked", lambda u, s, p: original(u, s, p)[:1])
  with pytest.raises(ValueError):
    bench_memory.blocked_check(512)


def test_sums_forms_compiles_each_form_and_restores_the_threshold(monkeypatch):
  from homax._src import derivative as derivative_lib
  traced = []
  original = derivative_lib._stacked_sums
  monkeypatch.setattr(derivative_lib, "_stacked_sums",
                      lambda p, a: traced.append(p.size) or original(p, a))
  row = bench_memory.sums_forms(64, reps=1)
  assert traced == [64]  # the stacked form in exactly one of the two programs
  assert derivative_lib.STACKED_SUMS_MAX_SIZE == 1 << 18
  assert row["stacked_ms"] > 0 and row["direct_ms"] > 0


def test_a_timing_of_k_calls_runs_k_steps_on_the_device_and_returns_seconds_per_step(monkeypatch):
  """``chained(..., calls=k)``: one jitted loop of k steps per timing, each step's output
  fed to the next (the carry advances by k), timed once and divided by k."""
  import types

  import jax
  import jax.numpy as jnp

  step = jax.jit(lambda x: (x + 1,))
  timer = bench_memory.chained(step, (jnp.float32(0),), calls=3)
  assert float(timer.box[0][0]) == 6.0  # compile and warm-up: two timings of 3 steps
  clock = iter([10.0, 16.0])  # the timer's two reads of perf_counter
  monkeypatch.setattr(bench_memory, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  assert timer() == pytest.approx(2.0)  # 6 s for 3 steps
  assert float(timer.box[0][0]) == 9.0


def test_calls_must_be_positive_and_not_with_sums_forms(capsys):
  assert_refused(bench_memory.main, ["--calls", "0", "--sizes", "1e3", "--reps", "1",
                                     "--no-write", "--platform", "cpu"], capsys,
                 "argument --calls: must be an int >= 1, got 0")
  assert_refused(bench_memory.main,
                 ["--calls", "2", "--sums-forms", "--no-write", "--platform", "cpu"], capsys,
                 "--calls does not apply to --sums-forms")


def _fake_size(calls_seen):
  def bench_size(P, leaves, reps, calls=1):
    calls_seen.append(calls)
    return [dict(P=P, leaves=leaves, config="part1", bytes=48 * P, ms=1.0, gb_s=1.0,
                 copy_gb_s=1.0, add_gb_s=1.0, reference="copy x+y", pct_of_copy=100.0,
                 array_passes_at_copy_speed=12.0, ideal_arrays=12)]
  return bench_size


@pytest.mark.parametrize("platform, argv, calls, partial", [
    ("cpu", [], 1, False),
    ("cpu", ["--reps", "3"], 1, False),
    ("cpu", ["--calls", "1"], 1, False),   # the CPU's default, named
    ("cpu", ["--calls", "20"], 20, True),
    ("cpu", ["--leaves", "4"], 1, True),
    ("cpu", ["--sizes", "1e7"], 1, True),
    ("cpu", ["--sizes", "1e8", "1e7", "1e6", "1e5"], 1, False),  # the defaults, reordered
    ("gpu", [], 20, False),
    ("gpu", ["--calls", "20"], 20, False),  # the GPU's default, named
    ("gpu", ["--calls", "1"], 1, True),     # dispatch-bound timings: not the full run's
])
def test_a_run_is_partial_unless_it_measures_the_full_runs_sizes_leaves_and_calls(
    bench_dirs, monkeypatch, platform, argv, calls, partial):
  """Through ``main``; ``--calls`` counts against the platform's default (1 CPU, 20 GPU)."""
  from benchmarks import common
  out, results = bench_dirs
  if platform == "gpu":  # what a GPU machine's jax reports; the timings are stubbed
    monkeypatch.setattr(common, "jax_device",
                        lambda: {"platform": "gpu", "device_kind": "stub", "count": "1"})
  seen = []
  monkeypatch.setattr(bench_memory, "bench_size", _fake_size(seen))
  bench_memory.main(argv)
  assert set(seen) == {calls}
  name = f"memory_{platform}.json"
  record = json.loads((out / name).read_text())
  assert record["partial"] is partial and record["settings"]["calls_per_timing"] == calls
  assert (results / name).exists() is not partial


@pytest.mark.parametrize("argv, partial", [([], False), (["--reps", "2"], False),
                                           (["--sizes", "1e5"], True)])
def test_sums_forms_is_partial_with_other_sizes(bench_dirs, monkeypatch, argv, partial):
  out, results = bench_dirs
  monkeypatch.setattr(bench_memory, "sums_forms", lambda P, reps: dict(
      P=P, stacked_ms=1.0, direct_ms=1.0, stacked_over_direct=1.0))
  bench_memory.main(["--sums-forms", "--platform", "cpu", *argv])
  assert json.loads((out / "memory_sums_cpu.json").read_text())["partial"] is partial
  assert (results / "memory_sums_cpu.json").exists() is not partial


def test_leaves_does_not_apply_to_sums_forms(capsys):
  assert_refused(bench_memory.main,
                 ["--leaves", "4", "--sums-forms", "--no-write", "--platform", "cpu"], capsys,
                 "--leaves does not apply to --sums-forms")


def test_the_arrays_counted_are_the_formulas_bytes():
  """Each arm's array count is what its stated formula moves (4 bytes per element)."""
  formula = bench_memory.formula()
  counts = {**bench_memory.ARRAYS, **bench_memory.EXTRA_ARRAYS, **bench_memory.COPY_ARRAYS}
  assert set(formula) == set(counts)
  assert bench_memory.ARRAYS == {"part1": 12, "part2": 10}  # 3 + 5 + 4 and 3 + 4 + 3
  for name, n in counts.items():
    assert re.search(rf"(^|= ){4 * n}\*P bytes", formula[name]), (name, formula[name])
  assert bench_memory.SIZES == (1e5, 1e6, 1e7, 1e8)  # the P
  assert bench_memory.SUMS_FORMS_SIZES == (1e5, 2.5e5, 5e5, 1e6, 2e6)  # as --help says


@pytest.mark.parametrize("name, kwargs", [
    ("part1", {}),  # homax.homogeneity's defaults: Table 1, a separate Adam, no history
    ("part2", dict(rule="paper-full", history=True, step="sgd", direction="ascend")),
])
def test_the_timed_updates_are_part_i_and_part_ii(name, kwargs):
  """The arms time homax's Part I and Part II updates with η_h = 1e-3, as their array
  counts assume (Part II's history is one of its 10 arrays)."""
  import homax
  import jax
  import jax.numpy as jnp
  import numpy as np
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {"w": jax.random.normal(k1, (64,))}
  updates = {"w": 1e-3 * jax.random.normal(k2, (64,))}
  average = {"w": jax.random.normal(k3, (64,))}
  got_tx, want_tx = bench_memory.make_tx(name), homax.homogeneity(1e-3, **kwargs)
  got, want = got_tx.init(params), want_tx.init(params)
  got, want = got._replace(running_average=average), want._replace(running_average=average)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  assert (got.history == ()) is (name == "part1")
  for _ in range(2):
    u, got = got_tx.update(updates, got, params)
    v, want = want_tx.update(updates, want, params)
    np.testing.assert_array_equal(u["w"], v["w"])


def test_a_sizes_rows_are_bytes_over_median_times_against_the_faster_copy(monkeypatch):
  """``bench_size`` with stub timers: GB/s = 4·P·arrays / median time; the reference is the
  faster of the two copies; '% of copy', the passes at copy speed, and pass 1's bound for a
  whole Part I step (pass 2's 9 arrays at copy speed after the measured pass 1)."""
  P = 1000
  runs = {  # seconds per call, three repetitions each (medians: the first value)
      "copy x*1.0001": [4e-6, 5e-6, 3e-6],   # 8,000 B: 2 GB/s
      "copy x+y": [4e-6, 3e-6, 6e-6],        # 12,000 B: 3 GB/s, the reference
      "part1": [24e-6, 30e-6, 20e-6],        # 48,000 B: 2 GB/s
      "part2": [20e-6, 10e-6, 40e-6],        # 40,000 B: 2 GB/s
      "pass1": [6e-6, 7e-6, 5e-6],           # 12,000 B
      "part1-blocked": [30e-6, 31e-6, 29e-6],
  }

  def timer(values):
    it = iter(values)
    return lambda: next(it)

  monkeypatch.setattr(bench_memory, "arms_for", lambda P, leaves, calls: {
      k: timer(v) for k, v in runs.items()})
  monkeypatch.setattr(bench_memory, "blocked_check", lambda P: 1.5e-7)
  rows = {r["config"]: r for r in bench_memory.bench_size(P, 1, reps=3)}
  assert list(rows) == ["part1", "part2", "pass1", "part1-blocked"]
  approx = lambda x: pytest.approx(x, rel=1e-9)  # noqa: E731
  for r in rows.values():
    assert r["P"] == P and r["leaves"] == 1 and r["reference"] == "copy x+y"
    assert r["copy_gb_s"] == approx(2.0) and r["add_gb_s"] == approx(3.0)
    assert r["times_s"] == runs[r["config"]]
  p1 = rows["part1"]
  assert p1["bytes"] == 48_000 and p1["ms"] == approx(0.024) and p1["gb_s"] == approx(2.0)
  assert p1["pct_of_copy"] == approx(100 * 2 / 3) and p1["ideal_arrays"] == 12
  assert p1["array_passes_at_copy_speed"] == approx(24e-6 * 3e9 / 4000)  # 18
  assert rows["part2"]["bytes"] == 40_000 and rows["part2"]["gb_s"] == approx(2.0)
  # pass 1 (6 µs) + pass 2's 36,000 B at 3 GB/s (12 µs): 48,000 B in 18 µs
  assert rows["pass1"]["best_part1_pct_of_copy"] == approx(100 * 48_000 / 18e-6 / 1e9 / 3)
  assert rows["part1-blocked"]["max_rel_diff_vs_homax"] == 1.5e-7
  assert "best_part1_pct_of_copy" not in p1 and "max_rel_diff_vs_homax" not in p1


def test_the_real_arms_step_homaxs_updates_and_copies(monkeypatch):
  """``arms_for`` at a small P: every arm runs (copies, Part I and II through homax's own
  update, pass 1 and the blocked prototype on one leaf; only the two updates on several)."""
  timers = bench_memory.arms_for(2048, 1)
  assert set(timers) == {"copy x*1.0001", "copy x+y", "part1", "part2", "pass1", "part1-blocked"}
  for name, go in timers.items():
    assert 0 < go() < 10, name
  x = timers["copy x*1.0001"].box[0][0]
  assert x.shape == (2048,)
  updates, state = timers["part1"].box[0]
  assert int(state.count) == 3  # from 0: two warm-up calls and the one above
  assert set(bench_memory.arms_for(2048, 3)) == {"copy x*1.0001", "copy x+y", "part1", "part2"}


@pytest.mark.parametrize("argv, sizes, reps", [
    ([], [10**5, 10**6, 10**7, 10**8], [9, 9, 9, 5]),
    (["--quick"], [10**5, 10**6], [3, 3]),
    (["--sizes", "1e8", "2000", "--reps", "4"], [10**8, 2000], [4, 4]),
    (["--sizes", "1"], [1], [9]),  # the smallest P
])
def test_sizes_and_repetitions(monkeypatch, argv, sizes, reps):
  calls = []
  monkeypatch.setattr(bench_memory, "bench_size", lambda P, leaves, r, c: calls.append(
      (P, leaves, r, c)) or [])
  bench_memory.main(["--platform", "cpu", "--no-write", *argv])
  assert calls == [(P, 1, r, 1) for P, r in zip(sizes, reps)]


@pytest.mark.parametrize("size", ["0.5", "1e5.5", "1500.5", "0", "-3", "x"])
def test_sizes_must_be_whole_numbers_of_parameters(capsys, size):
  assert_refused(bench_memory.main, ["--sizes", size, "--no-write"], capsys, "--sizes")


@pytest.mark.parametrize("argv, reps", [([], 15), (["--quick"], 3), (["--reps", "2"], 2)])
def test_sums_forms_repetitions(monkeypatch, argv, reps):
  calls = []
  monkeypatch.setattr(bench_memory, "sums_forms", lambda P, r: calls.append((P, r)) or dict(P=P))
  bench_memory.main(["--platform", "cpu", "--no-write", "--sums-forms", *argv])
  assert calls == [(int(P), reps) for P in bench_memory.SUMS_FORMS_SIZES]


def test_sums_forms_row_is_median_ms_and_the_paired_ratio(monkeypatch):
  """``sums_forms``' row from given call times: ms = 1e3 · median; stacked ÷ direct = the
  median of the per-call ratios."""
  from benchmarks import common
  times = {"stacked": [0.002, 0.003, 0.001], "direct": [0.004, 0.004, 0.004]}
  def interleaved(timers, reps):
    assert sorted(timers) == ["direct", "stacked"] and reps == 3
    return times

  monkeypatch.setattr(common, "interleaved", interleaved)
  row = bench_memory.sums_forms(64, reps=3)
  assert row["P"] == 64 and row["times_s"] == times
  assert row["stacked_ms"] == pytest.approx(2.0) and row["direct_ms"] == pytest.approx(4.0)
  assert row["stacked_over_direct"] == pytest.approx(0.5)  # median of 0.5, 0.75, 0.25
