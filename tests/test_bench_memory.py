"""The memory benchmark's blocked prototype computes homax's Part I update."""

import pytest

from benchmarks import bench_memory


@pytest.mark.parametrize("size_in_blocks", [0.5, 3.25])
def test_blocked_prototype_matches_homax(monkeypatch, size_in_blocks):
  """Two blocked passes (full blocks and a tail) give homax's update and state.

  Only the order in which N and D are summed differs, so the values agree to
  float32 rounding, over three steps (count, moments and average evolve).
  """
  monkeypatch.setattr(bench_memory, "BLOCK", 256)
  assert bench_memory.blocked_check(int(256 * size_in_blocks)) < 1e-5


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


def test_calls_must_be_positive_and_not_with_sums_forms():
  with pytest.raises(SystemExit):
    bench_memory.main(["--calls", "0", "--sizes", "1e3", "--reps", "1", "--no-write",
                       "--platform", "cpu"])
  with pytest.raises(SystemExit):
    bench_memory.main(["--calls", "2", "--sums-forms", "--no-write", "--platform", "cpu"])
