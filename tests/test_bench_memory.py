"""The memory benchmark's blocked prototype computes homax's Part I update."""

import json

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
