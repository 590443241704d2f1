"""λ schedules and η_h against their formulas, with the seed's t = k + 2."""

import math

import jax
import jax.numpy as jnp
import hypothesis
import hypothesis.strategies as st
import numpy as np
import optax
import pytest

import homax
from homax import lambda_schedules

STEPS = np.arange(0, 50)


def _t(k):
  return np.asarray(k, np.float64) + 2.0


def assert_schedule(schedule, expected):
  got = schedule(jnp.asarray(STEPS, jnp.int32))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7)
  # One count at a time, as optax calls it, and under jit.
  for k in (0, 1, 7):
    np.testing.assert_allclose(float(schedule(k)), expected[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        float(jax.jit(schedule)(jnp.int32(k))), expected[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", [0.0, 0.3, 0.9, 1.0])
def test_fixed(value):
  assert_schedule(lambda_schedules.fixed(value), np.full(STEPS.shape, value))
  assert lambda_schedules.fixed(value)(jnp.zeros((2, 3), jnp.int32)).shape == (2, 3)


@pytest.mark.parametrize("total", [1, 2, 10, 50, 80])
def test_linear(total):
  expected = np.minimum((_t(STEPS) - 1.0) / total, 1.0)
  assert_schedule(lambda_schedules.linear(total), expected)
  # λ reaches 1 at the last step k = T - 1, exactly, and stays there.
  assert float(lambda_schedules.linear(total)(total - 1)) == 1.0
  assert float(lambda_schedules.linear(total)(total + 100)) == 1.0


# No deadline: an example that compiles a jax op can take longer than
# hypothesis's 200 ms on a busy machine (a flaky "Unreliable test timings").
@hypothesis.settings(deadline=None)
@hypothesis.given(total=st.integers(1, 10**6), k=st.integers(0, 10**6))
def test_linear_is_the_unbounded_formula_up_to_the_last_step(total, k):
  """Within the run (k < T) the bound changes no bit; past it λ is 1, never more."""
  got = float(lambda_schedules.linear(total)(jnp.int32(k)))
  formula = float((jnp.float32(k) + 2.0 - 1.0) / jnp.float32(total))
  assert got == (formula if k < total else 1.0)


def test_a_part_ii_run_past_total_steps_stays_bounded():
  """COMPLETE with the linear λ, run four times as long as its T: the history stays finite
  and of the size it has at T (unbounded, λ = (k + 1)/T would grow it geometrically)."""
  total = 5
  tx = homax.paper_optimizer("COMPLETE", learning_rate=1e-2, homogeneity_learning_rate=0.05,
                             total_steps=total, lambda_type="linear",
                             initial_average={"w": jnp.linspace(-1.0, 1.0, 6)})
  params = {"w": jnp.linspace(-0.5, 0.7, 6)}
  state = tx.init(params)
  sizes = []
  for k in range(4 * total):
    updates, state = tx.update({"w": jnp.sin(params["w"] + k)}, state, params)
    params = optax.apply_updates(params, updates)
    sizes.append(float(jnp.max(jnp.abs(homax.find_state(state).history["w"]))))
  assert float(homax.metrics(state)["lambda"]) == 1.0
  assert np.isfinite(sizes).all()
  assert max(sizes[total:]) <= 2.0 * max(sizes[:total])


def test_linear_with_one_step_gives_lambda_one_at_step_zero():
  assert float(lambda_schedules.linear(1)(0)) == 1.0


def test_dynamic():
  t = _t(STEPS)
  assert_schedule(lambda_schedules.dynamic(), (t - 1.0) / t)
  assert float(lambda_schedules.dynamic()(0)) == 0.5


@pytest.mark.parametrize("beta", [0.5, 0.75, 1.0, 1.01])
@pytest.mark.parametrize("total", [2, 10, 100])
def test_hybrid(beta, total):
  t = _t(STEPS)
  alpha = (total - t * (1.0 - beta) - beta) / (total - 1.0)
  assert_schedule(lambda_schedules.hybrid(beta, total), alpha * (t - 1.0) / t)


def test_hybrid_with_beta_one_is_dynamic():
  np.testing.assert_allclose(
      np.asarray(lambda_schedules.hybrid(1.0, 20)(STEPS)),
      np.asarray(lambda_schedules.dynamic()(STEPS)), rtol=1e-6)


def test_hybrid_alpha_at_the_end():
  # α_t = β at t = T.
  total, beta = 10, 0.5
  k = total - 2
  t = total
  assert float(lambda_schedules.hybrid(beta, total)(k)) == pytest.approx(
      beta * (t - 1) / t, rel=1e-6)


@pytest.mark.parametrize("lr,total", [(1e-3, 1), (1e-3, 100), (0.1, 1000), (2.0, 7)])
def test_dynamic_homogeneity_lr(lr, total):
  got = homax.dynamic_homogeneity_lr(lr, total)
  assert isinstance(got, float)
  assert got == pytest.approx(2 * lr / (lr * total + 1), rel=1e-12)


def test_lambda_types():
  assert set(lambda_schedules.LAMBDA_TYPES) == {"fixed", "linear", "dynamic", "hybrid"}


@pytest.mark.parametrize("value", [None, 1.5, -0.1, math.nan, math.inf, "0.5", True,
                                   np.array([0.5, 0.6])])
def test_fixed_rejects(value):
  with pytest.raises(ValueError):
    lambda_schedules.fixed(value)


@pytest.mark.parametrize("total", [0, -1, 2.5, None, True, "10"])
def test_linear_rejects_total_steps(total):
  with pytest.raises(ValueError):
    lambda_schedules.linear(total)


@pytest.mark.parametrize(
    "beta,total",
    [(None, 10), (0.0, 10), (-0.5, 10), (math.nan, 10), (math.inf, 10),
     (0.5, 1), (0.5, 0), (0.5, -1), (0.5, 2.5), ("0.9", 10), (True, 10)],
)
def test_hybrid_rejects(beta, total):
  with pytest.raises(ValueError):
    lambda_schedules.hybrid(beta, total)


@pytest.mark.parametrize(
    "lr,total",
    [(-1e-3, 10), (0.0, 10), (math.nan, 10), (math.inf, 10),
     (1e-3, 0), (1e-3, -1), (1e-3, 2.5), ("0.01", 10), (True, 10),
     (optax.constant_schedule(1e-3), 10)],
)
def test_dynamic_homogeneity_lr_rejects(lr, total):
  with pytest.raises(ValueError, match="learning_rate|total_steps"):
    homax.dynamic_homogeneity_lr(lr, total)


def test_traced_arguments_are_refused_with_the_inject_hyperparams_hint():
  with pytest.raises(ValueError, match="total_steps.*static_args"):
    jax.jit(lambda t: lambda_schedules.linear(t)(0))(10)
  with pytest.raises(ValueError, match="beta.*static_args"):
    jax.jit(lambda b: lambda_schedules.hybrid(b, 10)(0))(0.9)


@pytest.mark.parametrize("make", [
    lambda: homax.lambda_schedules.fixed(0.5), lambda: homax.lambda_schedules.linear(10),
    lambda: homax.lambda_schedules.dynamic(), lambda: homax.lambda_schedules.hybrid(0.9, 10),
])
def test_lambda_is_float32_also_under_x64(make):
  """As the module docstring says: the seed's float32 λ, whatever jax's default."""
  with jax.enable_x64(True):
    assert jnp.ones(1).dtype == jnp.float64  # x64 is on
    assert make()(jnp.asarray(3)).dtype == jnp.float32
