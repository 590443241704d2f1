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
