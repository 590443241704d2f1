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


def test_a_timing_spreads_over_back_to_back_calls():
  """``chained(..., calls=k)`` runs k calls per timing, feeds each output to the next,
  and returns seconds per call."""
  import jax.numpy as jnp
  seen = []

  def fn(x):
    seen.append(float(x))
    return (x + 1,)

  timer = bench_memory.chained(fn, (jnp.float32(0),), calls=3)
  assert seen == [0, 1, 2, 3, 4, 5]  # compile and warm-up: two timings' worth
  t = timer()
  assert seen[6:] == [6, 7, 8] and t > 0


def test_calls_must_be_positive():
  with pytest.raises(SystemExit):
    bench_memory.main(["--calls", "0", "--no-write", "--platform", "cpu"])
