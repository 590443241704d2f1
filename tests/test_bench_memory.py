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
