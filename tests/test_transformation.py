"""The optax battery for ``homax.homogeneity``, plus one-step checks by hand."""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import homax
from conftest import assert_trees_identical

ETA_H = 1e-3
BASES = {
    "adam": lambda: optax.adam(1e-1),
    "sgd": lambda: optax.sgd(1e-3, momentum=0.9),
}


def chain(base="adam", **kwargs):
  kwargs.setdefault("learning_rate", ETA_H)
  return optax.chain(BASES[base](), homax.homogeneity(**kwargs))


def assert_trees_close(a, b, **kwargs):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(
        np.asarray(x, np.float64), np.asarray(y, np.float64), **kwargs)


def three_steps(opt, params, grads):
  """Three jitted updates with fixed grads: (the updates of each step, the last state)."""
  state = jax.jit(opt.init)(params)
  p, out = params, []
  for _ in range(3):
    updates, state = jax.jit(opt.update)(grads, state, p)
    p = optax.apply_updates(p, updates)
    out.append(updates)
  return out, state


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert jnp.result_type(x) == jnp.result_type(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------
# Targets, as in optax's alias tests.


def parabola():
  initial = jnp.array([-1.0, 10.0, 1.0])
  final = jnp.array([1.0, -1.0, 1.0])
  return initial, final, lambda p: jnp.sum((p - final) ** 2)


def rosenbrock():
  initial = jnp.array([0.0, 0.0])
  final = jnp.array([1.0, 1.0])
  return initial, final, lambda p: (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def matrix_parabola():
  a = jnp.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.3, 0.0, 1.0], [1.0, 1.0, 1.0]])
  final = jnp.array([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.25]])
  b = a @ final
  return jnp.zeros((3, 2)), final, lambda w: jnp.sum((a @ w - b) ** 2)


def mixed_pytree():
  final = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([-1.0, 0.25, 2.0])}
  initial = jax.tree.map(jnp.zeros_like, final)

  def objective(p):
    return sum(jnp.sum((p[k] - final[k]) ** 2) for k in final)

  return initial, final, objective


TARGETS = {
    "parabola": parabola,
    "rosenbrock": rosenbrock,
    "matrix_parabola": matrix_parabola,
    "mixed_pytree": mixed_pytree,
}
CONVERGENCE_CASES = (
    [(base, target, "paper") for base in BASES for target in TARGETS]
    + [(base, target, "exact") for base in BASES for target in ("parabola", "rosenbrock")]
)


@pytest.mark.parametrize("base,target,rule", CONVERGENCE_CASES)
def test_converges_inside_scan(base, target, rule):
  initial, final, objective = TARGETS[target]()
  opt = chain(base, rule=rule)
  steps = 2000

  def trajectory(opt, state):
    def body(carry, _):
      params, state = carry
      updates, state = opt.update(jax.grad(objective)(params), state, params)
      params = optax.apply_updates(params, updates)
      return (params, state), params

    return jax.jit(lambda c: jax.lax.scan(body, c, None, length=steps))((initial, state))

  state = opt.init(initial)
  state = optax.tree.map_params(opt, lambda v: v, state)
  (params, state), path = trajectory(opt, state)
  assert_trees_close(params, final, rtol=3e-2, atol=3e-2)
  assert int(homax.metrics(state)["count"]) == steps
  # The homogeneity step took part: the base optimizer alone goes elsewhere
  # within the first 50 steps (3.9e-3 to 6.4e-2 apart; 1e-6 at most when the
  # step is dropped). Later, Adam on Rosenbrock amplifies rounding alone to
  # 4e-2, so the whole path would not tell.
  base_opt = BASES[base]()
  _, base_path = trajectory(base_opt, base_opt.init(initial))
  apart = max(float(jnp.max(jnp.abs(a[:50] - b[:50])))
              for a, b in zip(jax.tree.leaves(path), jax.tree.leaves(base_path)))
  assert apart > 5e-4, apart


# ---------------------------------------------------------------------------
# Composition with optax.


def _rosenbrock_grads(params):
  return jax.grad(rosenbrock()[2])(params)


@pytest.mark.parametrize("base", BASES)
def test_accepts_unexpected_extra_args(base):
  opt = chain(base)
  params = jnp.array([0.3, -0.2])

  @jax.jit
  def step(params, state):
    updates, state = opt.update(
        _rosenbrock_grads(params), state, params, some_arg=1)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  for _ in range(2):
    params, state = step(params, state)
  assert int(homax.metrics(state)["count"]) == 2
  # On its own, outside a chain, too: it adds its step (~η_h: Adam's first
  # step; the average must not be the default zeros, where d ≈ 0 at step 0)
  # to the updates it is given.
  alone = homax.homogeneity(ETA_H, initial_average=jnp.array([0.5, 0.1]))
  updates, _ = alone.update(params, alone.init(params), params, some_arg=1)
  assert np.all(np.isfinite(np.asarray(updates)))
  assert float(jnp.max(jnp.abs(updates - params))) > 0.5 * ETA_H


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("base", BASES)
def test_no_recompilation_on_second_call(base, history):
  opt = chain(base, history=history)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(None)
    updates, state = opt.update(_rosenbrock_grads(params), state, params)
    return optax.apply_updates(params, updates), state

  params = jnp.array([0.3, -0.2])
  state = opt.init(params)
  params, state = step(params, state)
  params, state = step(params, state)
  params, state = step(params, state)
  assert len(traces) == 1


@pytest.mark.parametrize("history", [False, True])
def test_inside_multi_steps(history):
  """optax.MultiSteps(every_k_schedule=2): the homogeneity step runs once per macro-step, on
  the mean of its micro-steps' gradients, as the chain alone would on that mean."""
  params = {"w": jnp.array([[0.3, -0.2], [0.1, 0.6]]), "b": jnp.array([0.05, -0.4])}
  micro = [jax.tree.map(lambda p, s=s: jnp.sin(p * s + s), params) for s in (1.0, 2.0, 3.0, 4.0)]
  multi = optax.MultiSteps(chain(history=history), every_k_schedule=2)
  plain = chain(history=history)
  m_state, p_state = multi.init(params), plain.init(params)
  m_params, p_params = params, params
  for i, grads in enumerate(micro):
    updates, m_state = jax.jit(multi.update)(grads, m_state, m_params)
    m_params = optax.apply_updates(m_params, updates)
    if i % 2 == 1:
      mean = jax.tree.map(lambda a, b: (a + b) / 2, micro[i - 1], grads)
      updates, p_state = plain.update(mean, p_state, p_params)
      p_params = optax.apply_updates(p_params, updates)
  assert int(homax.find_state(m_state).count) == 2
  assert_trees_close(m_params, p_params, rtol=1e-6, atol=1e-7)
  assert_trees_close(homax.find_state(m_state).running_average,
                     homax.find_state(p_state).running_average, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("history", [False, True])
def test_vmap_over_seeds_matches_one_at_a_time(history):
  """jax.vmap of init and update over a leading seed axis (what experiments.train does) gives
  each seed what the unbatched transformation gives it."""
  seeds = 4
  params = {"w": jax.random.normal(jax.random.key(0), (seeds, 3, 2)),
            "b": jax.random.normal(jax.random.key(1), (seeds, 2))}
  average = jax.tree.map(lambda p: 0.5 * p[::-1], params)
  grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), params)
  make = lambda avg: chain(history=history, initial_average=avg)  # noqa: E731

  def run(p, avg, g):
    opt = make(avg)
    state = opt.init(p)
    for _ in range(3):
      updates, state = opt.update(g, state, p)
      p = optax.apply_updates(p, updates)
    return p, homax.metrics(state)["similarity"]

  batched = jax.jit(jax.vmap(run))(params, average, grads)
  for i in range(seeds):
    one = jax.jit(run)(*jax.tree.map(lambda x, i=i: x[i], (params, average, grads)))
    assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), one, rtol=2e-6, atol=1e-7)


def test_map_params():
  opt = chain("adam", history=True)
  params = {"w": jnp.ones((2, 3)), "b": jnp.array([0.5, -1.0])}
  grads = jax.tree.map(lambda p: 0.1 * p, params)
  state = opt.init(params)
  _, state = opt.update(grads, state, params)

  with_identity = optax.tree.map_params(opt, lambda v: v, state)
  assert_trees_equal(with_identity, state)

  plus_one = optax.tree.map_params(opt, lambda v: v + 1, state)
  before, after = homax.find_state(state), homax.find_state(plus_one)
  assert_trees_close(after.running_average,
                     jax.tree.map(lambda v: v + 1, before.running_average))
  assert_trees_close(after.history, jax.tree.map(lambda v: v + 1, before.history))
  assert int(after.count) == int(before.count)
  assert float(after.similarity) == float(before.similarity)

  # Params of another type (e.g. sharding specs): every params-shaped field
  # takes the spec, every other field is replaced.
  specs = {"w": "model", "b": "replicated"}
  spec_state = optax.tree.map_params(
      opt, lambda _, spec: spec, state, specs,
      transform_non_params=lambda _: None)
  found = homax.find_state(spec_state)
  assert found.running_average == specs
  assert found.history == specs
  assert found.count is None and found.lam is None


@pytest.mark.parametrize("history", [False, True])
def test_inject_hyperparams_matches_plain(history):
  params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
  grads = [jnp.ones((2, 3)), -jnp.full((2, 5, 2), 0.5)]
  plain = optax.chain(optax.adam(1e-1), homax.homogeneity(ETA_H, history=history))
  injected = optax.chain(
      optax.adam(1e-1),
      optax.inject_hyperparams(homax.homogeneity)(learning_rate=ETA_H, history=history))

  ups, state = three_steps(plain, params, grads)
  ups_injected, state_injected = three_steps(injected, params, grads)
  assert_trees_close(ups_injected, ups, rtol=1e-6, atol=1e-9)
  assert_trees_close(state_injected[1].inner_state, state[1], rtol=1e-6, atol=1e-9)
  assert float(state_injected[1].hyperparams["learning_rate"]) == pytest.approx(ETA_H)


@pytest.mark.parametrize("history", [False, True])
def test_inside_optax_flatten_matches_the_pytree(history):
  """``optax.flatten`` (every leaf concatenated into one vector) changes only the
  order in which N and D are summed: updates and state agree to float rounding."""
  keys = jax.random.split(jax.random.key(3), 4)
  params = {"w": jax.random.normal(keys[0], (6, 4)), "b": jax.random.normal(keys[1], (4,))}
  grads = {"w": jax.random.normal(keys[2], (6, 4)), "b": jax.random.normal(keys[3], (4,))}

  def make():
    return optax.chain(optax.adam(1e-1), homax.homogeneity(
        ETA_H, history=history, initial_average=lambda p: jax.tree.map(lambda x: 0.5 * x + 0.1, p)))

  ups, state = three_steps(make(), params, grads)
  ups_flat, state_flat = three_steps(optax.flatten(make()), params, grads)
  assert_trees_close(ups_flat, ups, rtol=1e-5, atol=1e-9)
  _, unravel = ravel_pytree(params)
  flat_h, tree_h = homax.find_state(state_flat), homax.find_state(state)
  assert_trees_close(unravel(flat_h.running_average), tree_h.running_average, rtol=1e-6)
  assert int(flat_h.count) == int(tree_h.count) == 3
  assert float(flat_h.similarity) == pytest.approx(float(tree_h.similarity), rel=1e-6)


def test_inject_hyperparams_with_schedules():
  # A scheduled η_h, and a λ schedule kept static (inject_hyperparams treats
  # every callable argument as a schedule of its own count otherwise).
  eta = optax.linear_schedule(1e-2, 1e-3, 5)
  lam = homax.lambda_schedules.linear(10)
  plain = homax.homogeneity(eta, lam)
  injected = optax.inject_hyperparams(
      homax.homogeneity, static_args=("lambda_schedule",))(
          learning_rate=eta, lambda_schedule=lam)
  params = jnp.array([1.0, -2.0, 0.5])
  s_plain, s_inj = plain.init(params), injected.init(params)
  p1 = p2 = params
  for k in range(4):
    g = jnp.array([0.1, -0.2, 0.3]) * (k + 1)
    u1, s_plain = plain.update(g, s_plain, p1)
    u2, s_inj = injected.update(g, s_inj, p2)
    assert_trees_close(u2, u1, rtol=1e-6, atol=1e-9)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  assert float(homax.metrics(s_inj)["lambda"]) == pytest.approx(4 / 10)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("base", BASES)
def test_updates_in_params_dtype(base, history, dtype):
  opt = chain(base, history=history)
  params = {"w": jnp.array([[1.0, -2.0]], dtype), "b": jnp.array([0.5], dtype)}
  grads = jax.tree.map(lambda p: 2 * p, params)
  state = jax.jit(opt.init)(params)
  update = jax.jit(opt.update)
  for _ in range(2):
    updates, state = update(grads, state, params)
    for u in jax.tree.leaves(updates):
      assert u.dtype == dtype
    params = optax.apply_updates(params, updates)
  homog = homax.find_state(state)
  assert all(a.dtype == dtype for a in jax.tree.leaves(homog.running_average))
  if history:
    assert all(h.dtype == jnp.float32 for h in jax.tree.leaves(homog.history))
  assert all(np.all(np.isfinite(np.asarray(p, np.float32))) for p in jax.tree.leaves(params))


def test_updates_in_params_dtype_for_mixed_dtypes():
  opt = chain("adam")
  params = {"lo": jnp.array([1.0, -2.0], jnp.bfloat16), "hi": jnp.array([0.5, 3.0])}
  updates, _ = jax.jit(opt.update)(params, opt.init(params), params)
  assert updates["lo"].dtype == jnp.bfloat16 and updates["hi"].dtype == jnp.float32


@pytest.mark.parametrize("history", [False, True])
def test_init_on_shape_dtype_struct(history):
  opt = chain("adam", history=history)
  real = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((2,), jnp.bfloat16)}
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), real)
  state = opt.init(abstract)
  expected = opt.init(real)
  shapes = lambda t: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), t)
  assert shapes(state) == shapes(expected)
  assert shapes(jax.eval_shape(opt.init, abstract)) == shapes(expected)


def test_init_on_shape_dtype_struct_with_an_initial_average():
  # Abstract params (e.g. orbax's restore targets) with a concrete average:
  # the state holds the average's values in the params' dtypes, as with real
  # params.
  real = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((2,), jnp.bfloat16)}
  average = {"w": jnp.arange(6.0).reshape(3, 2) / 7, "b": jnp.array([0.1, -2.5], jnp.bfloat16)}
  opt = chain("adam", initial_average=average)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), real)
  assert_trees_identical(opt.init(abstract), opt.init(real))
  assert homax.find_state(opt.init(abstract)).running_average["b"].dtype == jnp.bfloat16


def test_state_is_a_documented_homogeneity_state():
  opt = chain("adam", history=True)
  params = {"w": jnp.ones(3)}
  state = opt.init(params)
  homog = state[1]
  assert isinstance(homog, homax.HomogeneityState)
  assert homax.find_state(state) is homog
  fields = ("count", "running_average", "history", "homogeneity", "similarity",
            "lam", "step_state")
  assert homax.HomogeneityState._fields == fields
  for field in fields:
    assert f"{field}:" in homax.HomogeneityState.__doc__
  assert homog.count.dtype == jnp.int32 and int(homog.count) == 0
  assert float(homog.homogeneity) == 1.0 and float(homog.similarity) == 1.0
  assert float(homog.lam) == 0.0
  assert_trees_equal(homog.running_average, {"w": jnp.zeros(3)})
  assert homax.homogeneity(ETA_H).init(params).history == ()
  with pytest.raises(ValueError):
    homax.find_state(optax.adam(1e-3).init(params))


@pytest.mark.parametrize("schedule, lam", [
    (None, 1 / 2),  # the default: dynamic λ at k = 0, (t - 1)/t with t = 2
    (homax.lambda_schedules.fixed(0.25), 0.25),  # λ ≠ 1/2: H's two weights differ
])
def test_metrics_after_one_step(schedule, lam):
  params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.0]]), "b": jnp.array([0.25, -0.75])}
  average = {"w": jnp.array([[0.4, 1.0], [-1.0, 0.0]]), "b": jnp.array([0.25, 0.5])}
  grads = {"w": jnp.array([[1.0, -1.0], [0.5, 0.2]]), "b": jnp.array([-0.3, 0.0])}
  opt = optax.chain(optax.adam(1e-1), homax.homogeneity(ETA_H, schedule, initial_average=average))
  _, state = opt.update(grads, opt.init(params), params)

  adam = optax.adam(1e-1)
  base_updates, _ = adam.update(grads, adam.init(params), params)
  theta = np.concatenate([np.ravel(params[k] + base_updates[k]) for k in ("b", "w")])
  avg = np.concatenate([np.ravel(average[k]) for k in ("b", "w")])
  n = np.sum(np.abs(theta - avg))
  d = 1e-8 + np.sum(np.abs(theta) + np.abs(avg))
  similarity = 1 - n / d
  metrics = homax.metrics(state)
  assert sorted(metrics) == ["count", "homogeneity", "lambda", "similarity"]
  assert int(metrics["count"]) == 1
  assert float(metrics["lambda"]) == pytest.approx(lam)
  assert float(metrics["similarity"]) == pytest.approx(similarity, rel=1e-6)
  assert float(metrics["homogeneity"]) == pytest.approx(
      (1 - lam) * similarity + lam * 1.0, rel=1e-6)
  # Jit-able, and the running average is now θ'.
  assert float(jax.jit(homax.metrics)(state)["similarity"]) == float(metrics["similarity"])
  assert_trees_close(homax.find_state(state).running_average,
                     jax.tree.map(jnp.add, params, base_updates), rtol=1e-7)


@pytest.mark.parametrize("variant, extra", [
    (None, {}), ("A-B", {}), ("COMPLETE", {"lambda_type": "dynamic"})])
def test_params_without_leaves(variant, extra):
  # A model with no parameters: the updates are the same empty tree, S = 1
  # (N = 0 over D = ε) and the step count still advances, under jit.
  params = {"encoder": {}, "head": []}
  if variant is None:
    opt = optax.chain(optax.adam(1e-1), homax.homogeneity(ETA_H))
  else:
    opt = homax.paper_optimizer(variant, learning_rate=1e-1, homogeneity_learning_rate=ETA_H,
                                total_steps=4, **extra)
  state = opt.init(params)
  for _ in range(2):
    updates, state = jax.jit(opt.update)(params, state, params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  metrics = homax.metrics(state)
  assert int(metrics["count"]) == 2
  assert float(metrics["similarity"]) == 1.0


@pytest.mark.parametrize("name,make", [
    ("adagrad", lambda: optax.adagrad(1e-1)),
    ("adamw", lambda: optax.adamw(1e-2)),
    ("lion", lambda: optax.lion(1e-3)),
])
def test_after_other_optimizers(name, make):
  del name
  params = {"w": jnp.array([[1.0, -2.0], [0.0, 0.5]]), "b": jnp.zeros(2)}
  # Not the default zeros, where the derivative is ≈ 0 at step 0.
  average = jax.tree.map(lambda p: 0.5 * p + 0.2, params)
  opt = optax.chain(make(), homax.homogeneity(ETA_H, initial_average=average))
  grads = jax.tree.map(lambda p: p - 0.3, params)
  updates, state = jax.jit(opt.update)(grads, opt.init(params), params)
  for u in jax.tree.leaves(updates):
    assert np.all(np.isfinite(np.asarray(u)))
  assert int(homax.metrics(state)["count"]) == 1
  # The homogeneity step (Adam(η_h): ~η_h per element at step 1) is added
  # to the optimizer's own updates.
  base = make()
  base_updates, _ = base.update(grads, base.init(params), params)
  apart = max(float(jnp.max(jnp.abs(u - b)))
              for u, b in zip(jax.tree.leaves(updates), jax.tree.leaves(base_updates)))
  assert apart > 0.5 * ETA_H, apart


# ---------------------------------------------------------------------------
# One and two steps by hand.

PARAMS = jnp.array([2.0, -1.5, 0.75, -0.25, 1.0])
AVERAGE = jnp.array([1.0, -1.0, -0.5, 0.5, 3.0])
GRADS = jnp.array([0.5, -1.0, 0.25, 2.0, -0.5])


# The "by hand" tests below rebuild the transformation's update from its parts:
# the base optimizer, homax.homogeneity_derivative, the step optimizer, λ and
# the history. They check the wiring (η_h and η_h², signs, order, state); the
# derivative itself is checked against an independent NumPy model of Table 1
# and of calculus in test_derivative.py.
@pytest.mark.parametrize("rule", homax.RULES)
@pytest.mark.parametrize("direction,sign", [("descend", 1.0), ("ascend", -1.0)])
def test_one_sgd_step_by_hand(rule, direction, sign):
  lr = 0.1
  opt = optax.chain(optax.sgd(lr), homax.homogeneity(
      ETA_H, rule=rule, step="sgd", direction=direction, initial_average=AVERAGE))
  updates, _ = opt.update(GRADS, opt.init(PARAMS), PARAMS)

  base = -lr * GRADS
  theta = PARAMS + base
  d = homax.homogeneity_derivative(theta, AVERAGE, 0.5, rule=rule)
  assert np.any(np.abs(np.asarray(d)) > 1e-3)
  # sgd(η_h) fed ±η_h·d moves by ∓η_h²·d.
  step, _ = optax.sgd(ETA_H).update(sign * ETA_H * d, optax.sgd(ETA_H).init(PARAMS))
  np.testing.assert_allclose(np.asarray(updates), np.asarray(base + step), rtol=1e-6)
  np.testing.assert_allclose(
      np.asarray(updates), np.asarray(base - sign * ETA_H**2 * d), rtol=1e-6)


def test_one_adam_step_by_hand():
  # Part I: θ' - Adam_{η_h}(η_h·d), a second Adam with torch's defaults.
  lr = 0.1
  opt = optax.chain(optax.adam(lr), homax.homogeneity(ETA_H, initial_average=AVERAGE))
  updates, state = opt.update(GRADS, opt.init(PARAMS), PARAMS)
  adam = optax.adam(lr)
  base, _ = adam.update(GRADS, adam.init(PARAMS))
  d = homax.homogeneity_derivative(PARAMS + base, AVERAGE, 0.5)
  adam_h = optax.adam(ETA_H, b1=0.9, b2=0.999, eps=1e-8)
  step, _ = adam_h.update(ETA_H * d, adam_h.init(PARAMS))
  np.testing.assert_allclose(np.asarray(updates), np.asarray(base + step), rtol=1e-6)
  assert int(homax.find_state(state).step_state[0].count) == 1


@pytest.mark.parametrize("name, transformation", [
    ("adam", lambda: optax.adam(0.1, b1=0.9, b2=0.999, eps=1e-8)),
    ("sgd", lambda: optax.sgd(0.1)),
])
def test_step_accepts_any_optax_transformation(name, transformation):
  # The named steps are these optax transformations: passed as objects they
  # give the same updates (to the last bits, which the materialized step
  # input of a non-"sgd" step may move), and another one gives others.
  def run(step):
    opt = optax.chain(optax.adam(0.1), homax.homogeneity(0.1, step=step, initial_average=AVERAGE))
    return np.asarray(three_steps(opt, PARAMS, GRADS)[0])

  named = run(name)
  np.testing.assert_allclose(run(transformation()), named, rtol=1e-6, atol=0)
  other = run(optax.sgd(0.1, momentum=0.9) if name == "sgd" else optax.adam(0.1, b1=0.5))
  assert np.max(np.abs(other - named)) > 1e-3 * np.max(np.abs(named - run(optax.identity())))


def test_step_receives_extra_args():
  """``update``'s extra keyword arguments reach the step optimizer, as optax.chain
  passes them on (reduce_on_plateau needs ``value=``; it used to raise)."""
  plateau = optax.contrib.reduce_on_plateau(patience=1, factor=0.5)
  step = optax.chain(optax.sgd(0.1), plateau)
  opt = optax.chain(optax.adam(0.1), homax.homogeneity(0.1, step=step, initial_average=AVERAGE))
  state = opt.init(PARAMS)
  for value in (1.0, 2.0, 3.0):  # worse and worse: the plateau lowers the scale
    _, state = opt.update(GRADS, state, PARAMS, value=jnp.float32(value))
  step_state = homax.find_state(state).step_state
  assert float(optax.tree_utils.tree_get(step_state, "best_value")) == 1.0
  assert float(optax.tree_utils.tree_get(step_state, "scale")) < 1.0


def test_a_step_state_with_prng_keys():
  """A custom step whose state holds typed PRNG keys (the in-place ordering of
  the running average reads floating-point buffers only; it used to fail)."""
  def init(params):
    return {"keys": jax.random.split(jax.random.key(0), 2), "m": jax.tree.map(jnp.zeros_like, params)}

  def update(updates, state, params=None):
    del params
    keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(state["keys"])
    return updates, {"keys": keys, "m": jax.tree.map(lambda m, u: 0.5 * m + u, state["m"], updates)}

  opt = optax.chain(optax.adam(0.1), homax.homogeneity(
      0.1, step=optax.GradientTransformation(init, update), initial_average=AVERAGE))
  plain = optax.chain(optax.adam(0.1), homax.homogeneity(0.1, step=optax.identity(),
                                                         initial_average=AVERAGE))
  got, state = three_steps(opt, PARAMS, GRADS)  # jitted
  np.testing.assert_array_equal(np.asarray(got), np.asarray(three_steps(plain, PARAMS, GRADS)[0]))
  assert homax.find_state(state).step_state["keys"].shape == (2,)


def test_initial_average_is_copied_so_the_state_can_be_donated():
  """The state owns its running average: donating params and state in a jitted
  step leaves the caller's initial_average alive, also when it is the params
  themselves (which donated one buffer twice)."""
  grads = {"w": GRADS}

  def train(opt, params):
    def step(p, s):
      u, s = opt.update(grads, s, p)
      return optax.apply_updates(p, u), s
    state = opt.init(params)
    return jax.jit(step, donate_argnums=(0, 1))(params, state)

  average = {"w": AVERAGE + 0.0}
  opt = optax.chain(optax.adam(0.1), homax.homogeneity(0.1, initial_average=average))
  state = opt.init({"w": PARAMS + 0.0})
  assert homax.find_state(state).running_average["w"] is not average["w"]
  jax.block_until_ready(train(opt, {"w": PARAMS + 0.0}))
  np.testing.assert_array_equal(np.asarray(average["w"]), np.asarray(AVERAGE))  # not deleted
  for initial in ("params", lambda q: q):
    params = {"w": PARAMS + 0.0}
    opt = optax.chain(optax.adam(0.1), homax.homogeneity(
        0.1, initial_average=params if initial == "params" else initial))
    jax.block_until_ready(train(opt, params))  # not "donate the same buffer twice"


def test_differentiating_through_update_as_documented():
  """``homogeneity``'s docstring: the gradient through a Part I update is NaN where
  the step Adam's input is 0 (step 0 with the zero average), as for optax.adam;
  ``eps_root`` or ``step="sgd"`` make it finite."""
  def loss(eta_h, step):
    opt = optax.chain(optax.adam(0.1), homax.homogeneity(eta_h, step=step))
    params, state = PARAMS, opt.init(PARAMS)
    for _ in range(2):
      updates, state = opt.update(GRADS, state, params)
      params = optax.apply_updates(params, updates)
    return jnp.sum(params ** 2)

  assert np.isnan(float(jax.grad(loss)(0.01, "adam")))
  assert np.isfinite(float(jax.grad(loss)(0.01, optax.adam(0.01, eps_root=1e-16))))
  assert np.isfinite(float(jax.grad(loss)(0.01, "sgd")))


def _cases(theta, avg):
  out = []
  for x, y in zip(np.asarray(theta).tolist(), np.asarray(avg).tolist()):
    if (x > y > 0) or (x < y < 0):
      out.append("c1")
    elif (x > 0 > y) or (x < 0 < y):
      out.append("c2")
    elif x == 0 and y > 0:
      out.append("c3")
    elif x == 0 and y < 0:
      out.append("c4")
    elif x == y:
      out.append("c5")
    else:
      out.append("other")
  return out


@pytest.mark.parametrize("rule", ["paper", "paper-full", "exact"])
def test_history_recursion_by_hand(rule):
  eta_h = 0.05
  tx = homax.homogeneity(eta_h, rule=rule, history=True, step="sgd",
                         direction="ascend", initial_average=AVERAGE[:4])
  theta0 = jnp.array([1.5, -1.5, 0.5, 0.5])
  u0 = jnp.array([0.5, -0.5, 0.5, -0.25])
  state = tx.init(theta0)

  # Step 0: θ'_0 = θ_0 + u_0, λ_0 = 1/2, g_0 = d_0.
  thetap0 = theta0 + u0
  assert _cases(thetap0, AVERAGE[:4]) == ["c1", "c1", "c2", "other"]
  d0 = homax.homogeneity_derivative(thetap0, AVERAGE[:4], 0.5, rule=rule)
  g0 = d0
  up0, state = tx.update(u0, state, theta0)
  np.testing.assert_allclose(np.asarray(state.history), np.asarray(g0), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(up0), np.asarray(u0 + eta_h**2 * g0), rtol=1e-6)
  theta1 = theta0 + up0

  # Step 1: ā = θ'_0, λ_1 = 2/3. Pick θ'_1 so that element 0 leaves c1-c5
  # (0 < θ' < ā), element 1 stays in c1, element 2 hits c5 and element 3 c3.
  target = jnp.array([1.5, -3.0, 1.0, 0.0])
  u1 = target - theta1
  thetap1 = theta1 + u1
  np.testing.assert_array_equal(np.asarray(thetap1), np.asarray(target))
  assert _cases(thetap1, thetap0) == ["other", "c1", "c5", "c3"]
  lam1 = 2.0 / 3.0
  d1 = homax.homogeneity_derivative(thetap1, thetap0, lam1, rule=rule)
  g1 = d1 + np.float32(lam1) * g0
  if rule == "paper-full":
    g1 = g1.at[0].set(0.0)  # outside c1-c5: derivative and history dropped
  up1, state = tx.update(u1, state, theta1)
  np.testing.assert_allclose(np.asarray(state.history), np.asarray(g1), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(np.asarray(up1), np.asarray(u1 + eta_h**2 * g1), rtol=1e-5, atol=1e-9)
  assert float(g0[0]) != 0.0
  if rule == "paper-full":
    assert float(state.history[0]) == 0.0
  else:
    assert float(state.history[0]) != 0.0
  # c5 keeps its history under every rule: g = d + λ·g_prev with d = 0 (paper).
  if rule != "exact":
    assert float(state.history[2]) == pytest.approx(lam1 * float(g0[2]), rel=1e-6)
  # Running average of θ'_0 and θ'_1.
  np.testing.assert_allclose(
      np.asarray(state.running_average), np.asarray((thetap0 + thetap1) / 2), rtol=1e-6)


# ---------------------------------------------------------------------------
# Errors and wrappers.


def test_update_without_params_raises():
  params = jnp.ones(3)
  tx = homax.homogeneity(ETA_H)
  with pytest.raises(ValueError):
    tx.update(params, tx.init(params))
  opt = chain("adam")
  with pytest.raises(ValueError):
    opt.update(params, opt.init(params))


def test_apply_if_finite_skips_a_nan_step():
  opt = optax.apply_if_finite(chain("adam", history=True), max_consecutive_errors=3)
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.25])}
  grads = jax.tree.map(lambda p: 0.5 * p, params)
  update = jax.jit(opt.update)
  state = opt.init(params)
  updates, state = update(grads, state, params)
  params = optax.apply_updates(params, updates)
  before = homax.find_state(state)
  assert int(before.count) == 1

  nan_grads = {"w": jnp.array([1.0, math.nan, 0.0]), "b": jnp.array([0.1])}
  updates, state = update(nan_grads, state, params)
  assert int(state.notfinite_count) == 1
  for u in jax.tree.leaves(updates):
    np.testing.assert_array_equal(np.asarray(u), 0.0)
  assert_trees_equal(homax.find_state(state), before)

  # A finite step afterwards proceeds from the kept state.
  updates, state = update(grads, state, params)
  assert int(homax.find_state(state).count) == 2
  assert int(state.notfinite_count) == 0
  assert all(np.all(np.isfinite(np.asarray(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("kwargs", [
    {"learning_rate": None}, {"learning_rate": 0.0}, {"learning_rate": -1e-3},
    {"learning_rate": math.nan}, {"learning_rate": ETA_H, "rule": "torch"},
    {"learning_rate": ETA_H, "direction": "sideways"},
    {"learning_rate": ETA_H, "step": "rmsprop"},
    {"learning_rate": ETA_H, "history": 1},
    {"learning_rate": ETA_H, "lambda_schedule": 0.5},
])
def test_bad_arguments_raise(kwargs):
  with pytest.raises(ValueError):
    homax.homogeneity(**kwargs)


def test_bad_initial_average_raises():
  params = {"w": jnp.ones((2, 2))}
  for average in ({"v": jnp.ones((2, 2))}, {"w": jnp.ones(4)},
                  {"w": jnp.ones((2, 2), jnp.bfloat16)}):
    tx = homax.homogeneity(ETA_H, initial_average=average)
    with pytest.raises(ValueError):
      tx.init(params)
  with pytest.raises(TypeError):
    homax.homogeneity(ETA_H).init({"i": jnp.ones(2, jnp.int32)})


# The two performance helpers of the update must not change values: _after
# returns the step count's bits whatever the buffer holds, _materialized returns
# the buffer's bits (NaN, ±inf, -0.0 and subnormals included).
_special_floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=32)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    values=st.lists(_special_floats, min_size=1, max_size=24),
    count=st.integers(0, 2**24),
    jit=st.booleans(),
)
def test_performance_helpers_keep_bits(values, count, jit):
  from homax._src import transform
  buf = jnp.asarray(np.asarray(values, np.float32).reshape(-1, 1) if len(values) % 2 else
                    np.asarray(values, np.float32).reshape(2, -1))
  k = jnp.float32(count)  # _after adds its zero to the step count k, as a float
  after = jax.jit(transform._after) if jit else transform._after
  materialized = jax.jit(transform._materialized) if jit else transform._materialized
  assert np.asarray(after(k, buf)).view(np.uint32) == np.asarray(k).view(np.uint32)
  np.testing.assert_array_equal(
      np.asarray(materialized(buf)).view(np.uint32), np.asarray(buf).view(np.uint32))
  everywhere = functools.partial(transform._materialized, everywhere=True)
  np.testing.assert_array_equal(
      np.asarray(everywhere(buf)).view(np.uint32), np.asarray(buf).view(np.uint32))


@pytest.mark.parametrize("platform, writes_back", [("cpu", True), ("cuda", False), ("rocm", False)])
def test_the_step_input_is_written_back_on_the_cpu_only(platform, writes_back):
  """``_materialized`` writes one element back (a dynamic_update_slice) on the CPU,
  where it was measured to pay; for a GPU the program holds no such write."""
  from homax._src import transform
  x = jnp.ones((4, 3))
  text = jax.jit(transform._materialized).trace(x).lower(lowering_platforms=(platform,)).as_text()
  assert ("dynamic_update_slice" in text) is writes_back
  text = jax.jit(functools.partial(transform._materialized, everywhere=True)).trace(x).lower(
      lowering_platforms=(platform,)).as_text()
  assert "dynamic_update_slice" in text
