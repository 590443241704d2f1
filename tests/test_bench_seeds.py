"""The seeds benchmark's traffic count and its group sizes."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import bench_seeds


def test_loop_body_bytes_counts_what_a_scan_step_reads_and_writes():
  """x ← 2x + y over 1,000 float32s: one kernel reads x and y and writes x (12,000 bytes).

  Besides it the loop body holds only the step counter's scalar add, so the count
  is 12,000 bytes plus a few scalars; the kernel before the loop (z·3 over 5,000
  float32s) is not counted.
  """
  def f(x, y, z):
    z = z * 3.0
    x, _ = jax.lax.scan(lambda c, _: (c * 2.0 + y, None), x, None, length=10)
    return x, z

  args = (jnp.ones(1000), jnp.ones(1000), jnp.ones(5000))
  nbytes, kernels = bench_seeds.loop_body_bytes(jax.jit(f).lower(*args).compile().as_text())
  assert 12_000 <= nbytes <= 12_000 + 64
  assert 1 <= kernels <= 3


def test_loop_body_bytes_needs_a_loop():
  text = jax.jit(lambda x: x * 2.0).lower(jnp.ones(3)).compile().as_text()
  with pytest.raises(ValueError, match="no while loop"):
    bench_seeds.loop_body_bytes(text)


def test_shape_bytes_reads_dtypes_and_tuples():
  assert bench_seeds._shape_bytes("f32[32,4,10]{2,1,0}") == 4 * 1280
  assert bench_seeds._shape_bytes("(f32[3]{0}, s32[], pred[8]{0}, bf16[2,2]{1,0})") == 12 + 4 + 8 + 8


def test_groups_must_divide_the_seeds():
  with pytest.raises(SystemExit):
    bench_seeds.main(["--quick", "--no-write", "--problems", "iris", "--groups", "3"])
