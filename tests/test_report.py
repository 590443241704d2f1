"""The paired statistics of the experiments' tables (``experiments.report.paired_stats``)."""

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments import report


def accuracy(correct: int, test_size: int) -> float:
  """A test accuracy in % as the trainers compute it: float32 ``100 · mean(correct)``."""
  return float(100.0 * jnp.mean(jnp.arange(test_size) < correct))


@st.composite
def paired_counts(draw):
  test_size = draw(st.sampled_from([30, 69, 114, 360, 1000, 10000]))
  # scipy's Wilcoxon test enumerates all 2**n sign flips when the counts tie and n <= 13
  # (0.2 s at n = 10, 1.6 s at n = 13, twice per example): drawn n skips 10..13, and the
  # explicit examples below cover n = 10 (the comparison's seeds) and n = 12.
  n = draw(st.integers(2, 9) | st.integers(14, 30))
  base = draw(st.lists(st.integers(0, test_size), min_size=n, max_size=n))
  # Small differences, so that ties among them (and zeros) are common.
  delta = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
  other = [min(max(b + d, 0), test_size) for b, d in zip(base, delta)]
  return test_size, np.asarray(base), np.asarray(other)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(paired_counts())
@hypothesis.example((30, np.array([20, 22]), np.array([19, 20])))  # n = 2: the smallest with a p-value
@hypothesis.example((30, np.array([20, 22, 25, 21, 24, 20, 23, 26, 22, 21]),
                     np.array([19, 22, 24, 22, 23, 20, 22, 25, 24, 21])))  # n = 10, tied
@hypothesis.example((1000, np.arange(900, 912), np.arange(900, 912) - np.array(
    [1, 1, 2, -1, 0, 1, 1, -2, 1, 1, 2, 1])))  # n = 12, tied, a zero
def test_the_statistics_are_those_of_the_whole_sample_counts(case):
  test_size, correct_h, correct_a = case
  acc_h = [accuracy(int(k), test_size) for k in correct_h]
  acc_a = [accuracy(int(k), test_size) for k in correct_a]
  got = report.paired_stats(acc_h, acc_a, test_size=test_size)

  counts = correct_h - correct_a  # whole samples: ties are exact
  diff = np.asarray(acc_h) - np.asarray(acc_a)
  n = counts.size
  assert got["seeds"] == n
  for arm, acc in (("homogeneity", acc_h), ("adam", acc_a)):
    assert got[f"acc_{arm}_mean"] == pytest.approx(np.mean(acc), abs=1e-9)
    assert got[f"acc_{arm}_std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-9)  # sample sd
  assert (got["wins"], got["losses"], got["ties"]) == (
      int(np.sum(counts > 0)), int(np.sum(counts < 0)), int(np.sum(counts == 0)))
  assert got["diff_mean"] == pytest.approx(100.0 * counts.mean() / test_size, abs=1e-4)
  half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
  assert got["diff_ci95_low"] == pytest.approx(diff.mean() - half, abs=1e-9)
  assert got["diff_ci95_high"] == pytest.approx(diff.mean() + half, abs=1e-9)
  if np.any(counts != 0):
    assert got["wilcoxon_p"] == stats.wilcoxon(counts).pvalue
  else:
    assert np.isnan(got["wilcoxon_p"])


def test_float32_noise_does_not_split_tied_differences():
  """One sample of 30 is 3.3333 pp, but float32 accuracies give 3.333336 for one pair and
  3.333328 for another: ranked as floats, true ties get distinct ranks (the p-values of the
  committed tables before session 13)."""
  test_size = 30
  correct_h = np.array([20, 21, 22, 23, 25, 26, 27, 28, 29, 24, 20, 19, 18, 17])
  correct_a = correct_h - np.array([1, 1, 1, 1, 1, 1, 1, 1, -1, -1, 2, 2, -2, 0])
  acc_h = [accuracy(int(k), test_size) for k in correct_h]
  acc_a = [accuracy(int(k), test_size) for k in correct_a]
  diff = np.asarray(acc_h) - np.asarray(acc_a)
  assert len(set(np.abs(diff[:10]).tolist())) > 1  # the float noise is there
  p = report.paired_stats(acc_h, acc_a, test_size=test_size)["wilcoxon_p"]
  assert p == stats.wilcoxon(correct_h - correct_a).pvalue
  assert p != stats.wilcoxon(diff).pvalue  # what ranking the floats gave


def test_accuracies_that_are_not_whole_samples_are_refused():
  with pytest.raises(ValueError, match="test_size=30"):
    report.paired_stats([50.0, 60.0], [40.0, 45.0], test_size=30)


def test_one_seed_has_a_mean_but_no_spread():
  # n = 1: the difference itself, no interval, no p-value, and each arm's sd is 0.
  got = report.paired_stats([accuracy(20, 30)], [accuracy(19, 30)], test_size=30)
  assert got["seeds"] == 1 and (got["wins"], got["losses"], got["ties"]) == (1, 0, 0)
  assert got["diff_mean"] == pytest.approx(100 / 30, abs=1e-4)
  assert np.isnan(got["diff_ci95_low"]) and np.isnan(got["diff_ci95_high"])
  assert np.isnan(got["wilcoxon_p"])
  assert got["acc_homogeneity_std"] == 0.0 and got["acc_adam_std"] == 0.0
