"""Fixtures and helpers shared by the test modules."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

# Property tests draw the same examples on every run ("derandomize": seeded by
# each test's source), so the suite's verdict depends only on the code and the
# installed versions, on a developer's machine and in CI alike. To explore new
# examples: python -m pytest tests --hypothesis-profile=explore (add
# --hypothesis-seed=N to replay a run). The test modules' settings objects are
# made at their import, after this and after pytest's --hypothesis-profile, and
# inherit the profile.
hypothesis.settings.register_profile("deterministic", derandomize=True)
hypothesis.settings.register_profile("explore", derandomize=False)
hypothesis.settings.load_profile("deterministic")


@pytest.fixture
def persistent_cache(tmp_path_factory):
  """A session-wide persistent compilation cache, so repeated programs compile once.

  The compiled program is the same either way; the cache only saves compile
  time of later runs (and of CLI subprocesses) on a shared CI machine.
  """
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {n: getattr(jax.config, n) for n in names}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.getbasetemp() / "jax-cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()
  yield
  for n, v in old.items():
    jax.config.update(n, v)
  compilation_cache.reset_cache()


@pytest.fixture
def bench_dirs(tmp_path, monkeypatch):
  """benchmarks/out/ and benchmarks/results/ under tmp_path (the committed ones untouched)."""
  from benchmarks import common
  out, results = tmp_path / "out", tmp_path / "results"
  monkeypatch.setattr(common, "OUT_DIRS", (out, results))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  return out, results


def assert_trees_identical(a, b):
  """Same structure, same dtypes and bit-identical values, leaf by leaf."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.result_type(x) == jnp.result_type(y)
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_array_equal(x, y)  # a readable message where values differ
    # Bits, too: assert_array_equal calls -0.0 equal to 0.0 and NaN equal to NaN.
    assert x.shape == y.shape and x.tobytes() == y.tobytes()


def assert_refused(main, argv, capsys, message):
  """``main(argv)`` exits as argparse refuses an argument (code 2), saying ``message``.

  The message is checked so that a refusal for another reason (a renamed or
  removed option is "unrecognized" too) does not pass for this one.
  """
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
