"""Bad input: every wrong argument, leaf, value or data file fails clearly.

Argument errors are ``ValueError``s whose message names the argument and
lists (or states) the allowed values; wrong leaf dtypes are ``TypeError``s at
``init``; non-finite values propagate (NaN) and ``optax.apply_if_finite``
skips such a step without touching the homogeneity state; extreme but legal
values (zeros, ±0.0, float16 sums beyond 65504) give finite results.
"""

import contextlib
import re
import struct

import jax
import jax.numpy as jnp
import chex
import numpy as np
import optax
import pytest

import homax
from experiments import datasets

NAN = float("nan")
INF = float("inf")


def params_tree(dtype=jnp.float32):
  return {
      "w": jnp.array([[0.5, -0.25, 0.1, 0.0], [1.0, -2.0, 0.3, -0.7], [0.2, 0.4, -0.6, 0.8]], dtype),
      "b": jnp.array([0.1, -0.1, 0.0, 0.05], dtype),
  }


def grads_tree(dtype=jnp.float32):
  return jax.tree.map(lambda p: (0.3 * jnp.ones_like(p) - 0.1 * p).astype(dtype), params_tree(dtype))


def paper(variant="A-B", **kwargs):
  kwargs.setdefault("learning_rate", 1e-2)
  kwargs.setdefault("total_steps", 10)
  if not homax.VARIANTS[variant].computes_learning_rate:
    kwargs.setdefault("homogeneity_learning_rate", 1e-2)
  if variant == "COMPLETE":
    kwargs.setdefault("lambda_type", "dynamic")
  if variant == "HYBRID":
    kwargs.setdefault("beta", 0.99)
  return homax.paper_optimizer(variant, **kwargs)


@contextlib.contextmanager
def raises_naming(exc, argument, allowed=()):
  """pytest.raises that also checks the message names ``argument`` and each allowed value."""
  with pytest.raises(exc, match=re.escape(argument)) as info:
    yield info
  for value in allowed:
    assert str(value) in str(info.value), f"{value!r} not in {str(info.value)!r}"


# ---------------------------------------------------------------------------
# Learning rates.


@pytest.mark.parametrize("lr", [-1e-3, 0.0, NAN, INF])
def test_homogeneity_rejects_bad_learning_rate(lr):
  with raises_naming(ValueError, "learning_rate", ["> 0"]):
    homax.homogeneity(lr)


@pytest.mark.parametrize("lr", [-1e-3, 0.0, NAN, INF])
@pytest.mark.parametrize("argument", ["learning_rate", "homogeneity_learning_rate"])
def test_paper_optimizer_rejects_bad_learning_rates(argument, lr):
  with raises_naming(ValueError, argument, ["> 0"]):
    paper("A-B", **{argument: lr})


@pytest.mark.parametrize("lr", [-1e-3, 0.0, NAN])
def test_b_variants_reject_bad_learning_rate(lr):
  # B-A and B-B compute η_h from η: a bad η must fail before that formula.
  with raises_naming(ValueError, "learning_rate", ["> 0"]):
    paper("B-A", learning_rate=lr)


def test_learning_rate_none_is_required():
  with raises_naming(ValueError, "learning_rate"):
    homax.homogeneity(None)


@pytest.mark.parametrize("lr", [
    np.float32(-1e-3), np.float64(0.0), np.array(-1e-3), jnp.array(-1e-3), jnp.array(NAN),
    True, "0.01", np.ones(2), [1e-3],
])
def test_learning_rate_of_another_type_is_checked_too(lr):
  # NumPy and JAX scalars are read like floats; a string, a boolean or an
  # array of several values is not a learning rate.
  with raises_naming(ValueError, "learning_rate", ["> 0"]):
    homax.homogeneity(lr)
  for argument in ("learning_rate", "homogeneity_learning_rate"):
    with raises_naming(ValueError, argument, ["> 0"]):
      paper("A-B", **{argument: lr})


def test_learning_rate_injected_as_zero_is_accepted():
  # optax.inject_hyperparams passes its learning rate as a JAX array, 0 at
  # the start of a warm-up: that must construct, and its first step is θ'.
  tx = optax.inject_hyperparams(homax.homogeneity, static_args=("lambda_schedule", "initial_average"))(
      learning_rate=optax.linear_schedule(0.0, 1e-2, 10))
  params, grads = params_tree(), grads_tree()
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  chex.assert_trees_all_close(updates, grads)


def test_callables_inside_inject_hyperparams_say_what_to_do():
  factory = optax.inject_hyperparams(homax.homogeneity)
  with raises_naming(ValueError, "lambda_schedule", ["static_args"]):
    factory(learning_rate=1e-2, lambda_schedule=homax.lambda_schedules.dynamic()).init(params_tree())
  factory = optax.inject_hyperparams(homax.homogeneity, static_args=("lambda_schedule",))
  with raises_naming(ValueError, "initial_average", ["static_args"]):
    factory(learning_rate=1e-2, initial_average=lambda p: p).init(params_tree())


@pytest.mark.parametrize("eps", [None, -1e-8, NAN, INF, "1e-8", np.ones(2)])
def test_bad_eps(eps):
  with raises_naming(ValueError, "eps", [">= 0"]):
    homax.homogeneity(1e-2, eps=eps)
  params = params_tree()
  with raises_naming(ValueError, "eps", [">= 0"]):
    homax.sums(params, params, eps=eps)
  with raises_naming(ValueError, "eps", [">= 0"]):
    homax.similarity(params, params, eps=eps)
  with raises_naming(ValueError, "eps", [">= 0"]):
    homax.homogeneity_derivative(params, params, 0.5, eps=eps)


def test_python_float_params():
  # init accepts Python scalars as leaves; update must too.
  tx = homax.homogeneity(1e-2)
  updates, _ = tx.update({"w": jnp.asarray(0.5)}, tx.init({"w": 1.0}), {"w": 1.0})
  assert updates["w"].shape == () and np.isfinite(float(updates["w"]))


@pytest.mark.parametrize("variant", ["A-B", "COMPLETE"])
def test_python_float_params_with_an_initial_average_and_history(variant):
  """Python scalars as leaves also with an initial average and (Part II) a history,
  and they give the same update as the same values as float32 arrays."""
  tx = paper(variant, initial_average={"w": 0.25, "b": np.float32(-0.5)})
  params = {"w": 1.0, "b": np.float32(0.75)}
  grads = {"w": jnp.asarray(0.5), "b": jnp.asarray(-0.2)}
  updates, state = tx.update(grads, tx.init(params), params)
  arrays = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  tx_arrays = paper(variant, initial_average={"w": jnp.float32(0.25), "b": jnp.float32(-0.5)})
  expected, _ = tx_arrays.update(grads, tx_arrays.init(arrays), arrays)
  chex.assert_trees_all_equal(updates, expected)
  assert homax.find_state(state).running_average["w"].dtype == jnp.float32


def test_history_flag_may_be_a_numpy_bool():
  assert homax.homogeneity(1e-2, history=np.bool_(True)).init({"w": jnp.ones(2)}).history != ()
  with raises_naming(ValueError, "history", ["True or False"]):
    homax.homogeneity(1e-2, history=1)


@pytest.mark.parametrize("lam", [jnp.array([0.0, 1.0]), np.ones((1,)), "0.5", None, True])
def test_lam_of_the_derivative_must_be_a_scalar(lam):
  params = params_tree()
  with raises_naming(ValueError, "lam", ["scalar"]):
    homax.homogeneity_derivative(params, jax.tree.map(jnp.zeros_like, params), lam)


def test_a_traced_lam_must_be_a_scalar_too():
  params = params_tree()
  average = jax.tree.map(jnp.zeros_like, params)
  derivative = jax.jit(lambda lam: homax.homogeneity_derivative(params, average, lam))
  with raises_naming(ValueError, "lam", ["scalar"]):
    derivative(jnp.array([0.0, 1.0]))
  chex.assert_trees_all_close(derivative(jnp.float32(0.25)),
                              homax.homogeneity_derivative(params, average, 0.25))


def test_a_lambda_schedule_must_return_a_scalar():
  """A (1,)-shaped λ would change the state's shapes after the first update."""
  tx = homax.homogeneity(1e-2, lambda count: jnp.full((1,), 0.5))
  params = params_tree()
  with raises_naming(ValueError, "lambda_schedule", ["scalar"]):
    tx.update(grads_tree(), tx.init(params), params)


@pytest.mark.parametrize("factory", ["fixed", "linear", "dynamic", "hybrid"])
def test_a_lambda_schedule_factory_passed_uncalled(factory):
  """``linear`` for ``linear(T)`` is refused at construction, naming both."""
  with raises_naming(ValueError, "lambda_schedule", [f"lambda_schedules.{factory}", "call it"]):
    homax.homogeneity(1e-2, getattr(homax.lambda_schedules, factory))


@pytest.mark.parametrize("returned", ["0.5", True, jnp.array(True), 0.5 + 0.5j, None])
@pytest.mark.parametrize("jit", [False, True])
def test_a_lambda_schedule_must_return_a_real_number(returned, jit):
  """A string, bool, complex or None λ is refused (a string once ran with λ = 0.5)."""
  tx = homax.homogeneity(1e-2, lambda count: returned)
  params = params_tree()
  update = jax.jit(tx.update) if jit and not isinstance(returned, str) and returned is not None else tx.update
  with raises_naming(ValueError, "lambda_schedule", ["real number"]):
    update(grads_tree(), tx.init(params), params)


def test_an_int_lambda_is_a_real_number():
  tx = homax.homogeneity(1e-2, lambda count: 1)
  params = params_tree()
  updates, _ = tx.update(grads_tree(), tx.init(params), params)
  chex.assert_trees_all_equal(updates, grads_tree())  # λ = 1: no homogeneity step


def test_python_float_updates():
  """Python scalars as updates, as optax's own transformations accept them."""
  tx = homax.homogeneity(1e-2)
  params = {"s": 1.5, "t": np.float32(-0.5)}
  updates, _ = tx.update({"s": 0.1, "t": -0.2}, tx.init(params), params)
  expected, _ = tx.update({"s": jnp.float32(0.1), "t": jnp.float32(-0.2)}, tx.init(params), params)
  chex.assert_trees_all_equal(updates, expected)
  assert updates["s"].dtype == jnp.float32


def test_numpy_float64_params_and_initial_average():
  """Without x64 both become float32, so equal NumPy dtypes are accepted (they
  were refused as "float64, expected float32"); the result is the float32 one's."""
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=5)}
  average = {"w": rng.normal(size=5)}
  grads = {"w": rng.normal(size=5).astype(np.float32)}
  as32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
  tx = paper("A-B", initial_average=average)
  updates, state = tx.update(grads, tx.init(params), params)
  tx32 = paper("A-B", initial_average=as32(average))
  expected, _ = tx32.update(grads, tx32.init(as32(params)), as32(params))
  chex.assert_trees_all_equal(updates, expected)
  assert homax.find_state(state).running_average["w"].dtype == jnp.float32
  with raises_naming(ValueError, "initial_average['w']", ["shape"]):
    paper("A-B", initial_average={"w": rng.normal(size=4)}).init(params)


@pytest.mark.parametrize("lambda_type, kwargs, argument", [
    ("linear", dict(lambda_value=0.5), "lambda_value"),
    ("dynamic", dict(lambda_value=0.5), "lambda_value"),
    ("hybrid", dict(lambda_value=0.5, beta=0.9), "lambda_value"),
    ("linear", dict(beta=0.9), "beta"),
    ("fixed", dict(lambda_value=0.5, beta=0.9), "beta"),
    ("dynamic", dict(beta=0.9), "beta"),
])
def test_lambda_schedule_for_rejects_arguments_it_would_ignore(lambda_type, kwargs, argument):
  with raises_naming(ValueError, argument, [lambda_type]):
    homax.lambda_schedule_for(lambda_type, total_steps=10, **kwargs)


@pytest.mark.parametrize("lambda_type, kwargs", [
    ("fixed", dict(lambda_value=0.5)), ("linear", {}), ("dynamic", {}), ("hybrid", dict(beta=0.9)),
])
@pytest.mark.parametrize("total_steps", [-3, 0, 2.5, "10", None])
def test_lambda_schedule_for_checks_total_steps_for_every_type(lambda_type, kwargs, total_steps):
  with raises_naming(ValueError, "total_steps"):
    homax.lambda_schedule_for(lambda_type, total_steps=total_steps, **kwargs)


@pytest.mark.parametrize("variant", list(homax.VARIANTS))
@pytest.mark.parametrize("argument, bad", [
    ("learning_rate", -1.0), ("learning_rate", 0.0), ("learning_rate", NAN),
    ("total_steps", 0), ("total_steps", -3), ("total_steps", 2.5),
])
def test_paper_homogeneity_learning_rate_checks_its_arguments(variant, argument, bad):
  kwargs = dict(learning_rate=1e-2, total_steps=10)
  if not homax.VARIANTS[variant].computes_learning_rate:
    kwargs["homogeneity_learning_rate"] = 1e-2
  kwargs[argument] = bad
  with raises_naming(ValueError, argument):
    homax.paper_homogeneity_learning_rate(variant, **kwargs)


@pytest.mark.parametrize("bad", [["A-A"], {"A-A": 1}, 3, None])
def test_a_variant_that_is_not_a_string(bad):
  """Unhashable or non-string variants get the same ValueError as unknown names."""
  with raises_naming(ValueError, "variant", homax.VARIANTS):
    homax.paper_optimizer(bad, learning_rate=1e-2, homogeneity_learning_rate=1e-2, total_steps=10)
  with raises_naming(ValueError, "variant", homax.VARIANTS):
    homax.paper_homogeneity_learning_rate(bad, learning_rate=1e-2, total_steps=10)


@pytest.mark.parametrize("variant, argument, bad", [
    ("COMPLETE", "lambda_value", "0.5"),
    ("COMPLETE", "lambda_value", "abc"),
    ("COMPLETE", "lambda_value", np.array([0.5, 0.6])),
    ("COMPLETE", "lambda_value", True),
    ("HYBRID", "beta", "0.9"),
    ("HYBRID", "beta", True),
    ("B-A", "learning_rate", optax.constant_schedule(1e-2)),
    ("B-B", "learning_rate", "0.01"),
])
def test_paper_optimizer_scalars_of_the_wrong_type(variant, argument, bad):
  kwargs = {argument: bad}
  if variant == "COMPLETE":
    kwargs["lambda_type"] = "fixed"
  with raises_naming(ValueError, argument):
    paper(variant, **kwargs)


def test_paper_optimizer_inside_inject_hyperparams_says_what_to_do():
  """total_steps sets the λ schedule: traced by inject_hyperparams, it cannot; the error says
  to make it static."""
  factory = optax.inject_hyperparams(homax.paper_optimizer, static_args=("variant",))
  tx = factory("A-A", learning_rate=1e-2, homogeneity_learning_rate=1e-2, total_steps=10)
  params = params_tree()
  with raises_naming(ValueError, "total_steps", ["static_args"]):
    jax.jit(tx.update)(grads_tree(), tx.init(params), params)
  factory = optax.inject_hyperparams(homax.paper_optimizer, static_args=("variant", "total_steps"))
  tx = factory("A-A", learning_rate=1e-2, homogeneity_learning_rate=1e-2, total_steps=10)
  updates, _ = jax.jit(tx.update)(grads_tree(), tx.init(params), params)
  expected, _ = paper("A-A").update(grads_tree(), paper("A-A").init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)


# ---------------------------------------------------------------------------
# λ, β and T.


@pytest.mark.parametrize("value", [-0.1, 1.5, NAN])
def test_fixed_lambda_outside_unit_interval(value):
  with raises_naming(ValueError, "lambda_value", ["[0, 1]"]):
    paper("COMPLETE", lambda_type="fixed", lambda_value=value)
  with raises_naming(ValueError, "value", ["[0, 1]"]):
    homax.lambda_schedules.fixed(value)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_fixed_lambda_at_the_ends_of_the_interval(value):
  # [0, 1] is closed: H = S (λ = 0) and H = H_prev (λ = 1) are both allowed.
  for schedule in (homax.lambda_schedules.fixed(value),
                   homax.lambda_schedule_for("fixed", total_steps=10, lambda_value=value)):
    assert float(schedule(jnp.asarray(3))) == value
  params = {"w": jnp.ones(2)}
  opt = paper("COMPLETE", lambda_type="fixed", lambda_value=value)
  _, state = opt.update(params, opt.init(params), params)
  assert float(homax.metrics(state)["lambda"]) == value


def test_fixed_lambda_without_value():
  with raises_naming(ValueError, "lambda_value", ["[0, 1]"]):
    paper("COMPLETE", lambda_type="fixed")
  with raises_naming(ValueError, "lambda_value", ["[0, 1]"]):
    homax.lambda_schedule_for("fixed", total_steps=10)


@pytest.mark.parametrize("variant", sorted(homax.VARIANTS))
def test_homogeneity_learning_rate_given_exactly_where_the_variant_needs_it(variant):
  # B-A and B-B compute η_h = 2η/(ηT + 1): giving one is an error; every
  # other variant needs it.
  computes = homax.VARIANTS[variant].computes_learning_rate
  kwargs = dict(learning_rate=1e-2, total_steps=10)
  if not computes:
    kwargs["lambda_type"] = "dynamic" if variant == "COMPLETE" else None
    kwargs["beta"] = 0.5 if variant == "HYBRID" else None
  wrong = {} if not computes else {"homogeneity_learning_rate": 1e-2}
  message = ["must not be given", "2η/(η·T + 1)"] if computes else ["is required", "> 0"]
  with raises_naming(ValueError, "homogeneity_learning_rate", message):
    homax.paper_optimizer(variant, **kwargs, **wrong)
  with raises_naming(ValueError, "homogeneity_learning_rate", message):
    homax.paper_homogeneity_learning_rate(variant, learning_rate=1e-2, total_steps=10, **wrong)


def test_hybrid_without_beta():
  with raises_naming(ValueError, "beta", ["> 0"]):
    homax.paper_optimizer("HYBRID", learning_rate=1e-2, homogeneity_learning_rate=1e-2, total_steps=10)


@pytest.mark.parametrize("total", [0, -3, 2.5, True, "10", np.float64(10.0)])
def test_total_steps_below_one(total):
  with raises_naming(ValueError, "total_steps", [">= 1"]):
    paper("A-A", total_steps=total)
  with raises_naming(ValueError, "total_steps", [">= 1"]):
    homax.lambda_schedules.linear(total)


def test_total_steps_accepts_numpy_integers():
  # A step count computed with NumPy (e.g. from an array's length) is an int.
  t = np.int64(10)
  assert homax.lambda_schedules.linear(t)(0) == homax.lambda_schedules.linear(10)(0)
  paper("A-A", total_steps=t)
  assert homax.total_steps(np.int64(90), np.int32(32), 10) == homax.total_steps(90, 32, 10) == 30


@pytest.mark.parametrize("argument", ["train_samples", "batch_size", "epochs"])
@pytest.mark.parametrize("bad", [0, -32, 2.5, "32", True])
def test_total_steps_helper_names_its_bad_argument(argument, bad):
  kwargs = dict(train_samples=90, batch_size=32, epochs=10) | {argument: bad}
  with raises_naming(ValueError, argument, [">= 1"]):
    homax.total_steps(**kwargs)


@pytest.mark.parametrize("variant", ["A-A", "A-B", "B-A", "B-B", "HYBRID", "COMPLETE"])
def test_variants_reject_arguments_they_would_ignore(variant):
  # beta is HYBRID's; lambda_value is COMPLETE's with lambda_type='fixed'.
  if variant != "HYBRID":
    with raises_naming(ValueError, "beta", ["HYBRID"]):
      paper(variant, beta=0.5)
  with raises_naming(ValueError, "lambda_value", ["'fixed'"]):
    paper(variant, lambda_value=0.3)
  if variant == "COMPLETE":
    for lambda_type in ("linear", "dynamic"):
      with raises_naming(ValueError, "lambda_value", ["'fixed'"]):
        paper(variant, lambda_type=lambda_type, lambda_value=0.3)


# ---------------------------------------------------------------------------
# Unknown names.


def test_unknown_variant():
  with raises_naming(ValueError, "variant", homax.VARIANTS):
    homax.paper_optimizer("C-C", learning_rate=1e-2, homogeneity_learning_rate=1e-2, total_steps=10)


@pytest.mark.parametrize("variant", ["A-B", "COMPLETE"])
@pytest.mark.parametrize("argument, allowed", [("rule", homax.RULES), ("direction", ("descend", "ascend"))])
def test_empty_ablation_name_is_not_the_default(variant, argument, allowed):
  # None keeps the paper's rule and direction; "" is an unknown name.
  with raises_naming(ValueError, argument, allowed):
    paper(variant, **{argument: ""})


def test_empty_names_are_unknown_names():
  with raises_naming(ValueError, "variant", homax.VARIANTS):
    homax.paper_optimizer("", learning_rate=1e-2, homogeneity_learning_rate=1e-2, total_steps=10)
  with raises_naming(ValueError, "lambda_type", ("fixed", "linear", "dynamic")):
    paper("COMPLETE", lambda_type="")
  with raises_naming(ValueError, "lambda_type"):
    paper("A-B", lambda_type="")
  for argument, allowed in (("rule", homax.RULES), ("direction", ("descend", "ascend")),
                            ("step", ("adam", "sgd"))):
    with raises_naming(ValueError, argument, allowed):
      homax.homogeneity(1e-2, **{argument: ""})


def test_unknown_rule():
  with raises_naming(ValueError, "rule", homax.RULES):
    homax.homogeneity(1e-2, rule="approximate")
  with raises_naming(ValueError, "rule", homax.RULES):
    paper("A-B", rule="approximate")
  with raises_naming(ValueError, "rule", homax.RULES):
    homax.homogeneity_derivative(params_tree(), params_tree(), 0.5, rule="approximate")


def test_unknown_lambda_type():
  with raises_naming(ValueError, "lambda_type", ("fixed", "linear", "dynamic")):
    paper("COMPLETE", lambda_type="cosine")
  with raises_naming(ValueError, "lambda_type", homax.lambda_schedules.LAMBDA_TYPES):
    homax.lambda_schedule_for("cosine", total_steps=10)


def test_unknown_direction():
  with raises_naming(ValueError, "direction", ("descend", "ascend")):
    homax.homogeneity(1e-2, direction="sideways")
  with raises_naming(ValueError, "direction", ("descend", "ascend")):
    paper("A-B", direction="sideways")


def test_unknown_step():
  with raises_naming(ValueError, "step", ("adam", "sgd", "GradientTransformation")):
    homax.homogeneity(1e-2, step="lion")
  with raises_naming(ValueError, "step", ("adam", "sgd", "GradientTransformation")):
    homax.homogeneity(1e-2, step=42)


# ---------------------------------------------------------------------------
# init and update arguments.


def test_update_without_params():
  tx = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))
  state = tx.init(params_tree())
  # optax's own message (optax._src.base.NO_PARAMS_MSG), as its transformations raise.
  with pytest.raises(ValueError, match="not passing `params` when calling `update`"):
    tx.update(grads_tree(), state)


@pytest.mark.parametrize("change, what", [
    (lambda p: {"w": p["w"]}, "structure"),
    (lambda p: {**p, "w": p["w"][:2]}, "shape"),
    (lambda p: {**p, "w": p["w"].T}, "shape"),
    (lambda p: {**p, "b": p["b"].astype(jnp.float16)}, "dtype"),
    (lambda p: [p["w"], p["b"]], "structure"),
])
def test_initial_average_unlike_params(change, what):
  params = params_tree()
  for given in (change(params), lambda p: change(p)):
    tx = homax.homogeneity(1e-2, initial_average=given)
    with pytest.raises(ValueError, match=f"initial_average.*{what}"):
      tx.init(params)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_])
def test_integer_or_boolean_leaves(dtype):
  params = {**params_tree(), "steps": jnp.zeros((3,), dtype)}
  tx = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))
  with pytest.raises(TypeError, match=re.escape("params['steps']") + ".*" + jnp.dtype(dtype).name):
    tx.init(params)
  # The documented way out works: mask the non-float leaves. The masked leaf's
  # update passes through unchanged, and the float leaves get the update of a
  # model without it (N and D over the unmasked leaves only), step after step.
  mask = {"w": True, "b": True, "steps": False}
  masked = optax.masked(optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2)), mask)
  plain = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))
  masked_update, plain_update = jax.jit(masked.update), jax.jit(plain.update)
  masked_state, plain_state = masked.init(params), plain.init(params_tree())
  floats = params_tree()
  grads = {**grads_tree(), "steps": jnp.ones((3,), dtype)}
  for _ in range(3):
    updates, masked_state = masked_update(grads, masked_state, params)
    expected, plain_state = plain_update(grads_tree(), plain_state, floats)
    assert updates["steps"].dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(updates["steps"], grads["steps"])
    chex.assert_trees_all_close({"w": updates["w"], "b": updates["b"]}, expected, rtol=1e-6)
    floats = optax.apply_updates(floats, expected)
    params = {**floats, "steps": params["steps"]}
  assert int(homax.metrics(masked_state)["count"]) == 3


# ---------------------------------------------------------------------------
# Non-finite values.


@pytest.mark.parametrize("where, bad", [("params", NAN), ("grads", NAN), ("params", INF), ("grads", -INF)])
def test_nonfinite_values_propagate_as_nan(where, bad):
  # Documented: N and D are global sums, so one bad element makes the update
  # of every element NaN (no silent clipping or zeroing); here no element has
  # θ' = ā (see the next test for those).
  tx = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))
  params, grads = params_tree(), grads_tree()
  state = tx.init(params)
  if where == "params":
    params = {**params, "b": params["b"].at[1].set(bad)}
  else:
    grads = {**grads, "b": grads["b"].at[1].set(bad)}
  updates, new_state = tx.update(grads, state, params)
  for leaf in jax.tree.leaves(updates):
    assert np.isnan(np.asarray(leaf)).all()
  assert np.isnan(float(homax.metrics(new_state)["similarity"]))


@pytest.mark.parametrize("rule", homax.RULES)
def test_nonfinite_values_spare_only_the_elements_where_theta_equals_the_average(rule):
  """With N and D NaN, the paper rules' case c5 (θ' = ā) still gives an exact 0; the exact
  rule's value there, −N·sign(θ')/D², is NaN like every other element's. "paper-full" also
  gives 0 outside cases c1-c5, where the NaN element itself falls (its comparisons are false)."""
  params = params_tree()
  params = {**params, "b": params["b"].at[1].set(NAN)}
  # SGD at learning rate 0 leaves θ' = θ; the average equals θ except at w[0, 0], where
  # θ' = 0.5 > ā = 0.25 > 0 (case c1).
  average = {**params, "w": params["w"].at[0, 0].set(0.25)}
  tx = optax.chain(optax.sgd(0.0), homax.homogeneity(1e-2, rule=rule, initial_average=average))
  updates, _ = tx.update(grads_tree(), tx.init(params), params)
  # Leaves in tree order ("b", then "w"), flattened.
  c1 = np.concatenate([np.zeros(4, bool), np.arange(12) == 0])
  nan_element = np.concatenate([np.arange(4) == 1, np.zeros(12, bool)])
  flat = np.concatenate([np.ravel(np.asarray(u)) for u in jax.tree.leaves(updates)])
  if rule == "exact":
    assert np.isnan(flat).all()
  elif rule == "paper":
    assert np.isnan(flat[c1 | nan_element]).all()
    np.testing.assert_array_equal(flat[~(c1 | nan_element)], 0.0)
  else:
    assert np.isnan(flat[c1]).all()
    np.testing.assert_array_equal(flat[~c1], 0.0)


def _homogeneity_leaves(opt_state):
  st = homax.find_state(opt_state)
  return dict(count=st.count, average=st.running_average, history=st.history,
              homogeneity=st.homogeneity, similarity=st.similarity, step_state=st.step_state)


def test_apply_if_finite_skips_the_step_and_keeps_the_state():
  inner = optax.chain(
      optax.adam(1e-2),
      homax.homogeneity(1e-2, rule="paper-full", history=True, step="sgd", direction="ascend",
                        initial_average=lambda p: jax.tree.map(lambda x: 0.5 * x + 0.01, p)),
  )
  tx = optax.apply_if_finite(inner, max_consecutive_errors=5)
  loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum(p["b"] ** 2)

  @jax.jit
  def step(params, state, poison):
    grads = jax.grad(loss)(params)
    grads = {**grads, "w": grads["w"].at[0, 0].multiply(poison)}
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  clean_p, clean_s = params_tree(), tx.init(params_tree())
  for _ in range(6):
    clean_p, clean_s = step(clean_p, clean_s, 1.0)

  p, s = params_tree(), tx.init(params_tree())
  for _ in range(3):
    p, s = step(p, s, 1.0)
  before_p, before = p, _homogeneity_leaves(s.inner_state)
  for bad in (NAN, INF):
    p, s = step(p, s, bad)
    # Skipped: params, running average, history, count, H, S and the step
    # optimizer's state are exactly as before the bad step.
    jax.tree.map(np.testing.assert_array_equal, p, before_p)
    jax.tree.map(np.testing.assert_array_equal, _homogeneity_leaves(s.inner_state), before)
  assert int(s.notfinite_count) == 2 and int(s.total_notfinite) == 2
  assert int(homax.metrics(s)["count"]) == 3
  for _ in range(3):
    p, s = step(p, s, 1.0)
  # The skipped steps left no trace: the run equals one that never saw them.
  jax.tree.map(np.testing.assert_array_equal, p, clean_p)
  jax.tree.map(np.testing.assert_array_equal, _homogeneity_leaves(s.inner_state),
               _homogeneity_leaves(clean_s.inner_state))


# ---------------------------------------------------------------------------
# Zeros and signed zeros.


@pytest.mark.parametrize("rule, history, step, direction", [
    ("paper", False, "adam", "descend"),
    ("paper-full", True, "sgd", "ascend"),
    ("exact", True, "adam", "descend"),
])
def test_zero_params_and_average_give_finite_updates(rule, history, step, direction):
  tx = optax.chain(optax.adam(1e-2), homax.homogeneity(
      1e-2, rule=rule, history=history, step=step, direction=direction))
  zeros = jax.tree.map(jnp.zeros_like, params_tree())
  state = tx.init(zeros)  # default average: zeros, so D = ε only.
  for grads in (zeros, grads_tree()):
    updates, new_state = tx.update(grads, state, zeros)
    for leaf in jax.tree.leaves((updates, new_state)):
      assert np.isfinite(np.asarray(leaf, np.float64)).all()
  d = homax.homogeneity_derivative(zeros, zeros, 0.5, rule=rule)
  for leaf in jax.tree.leaves(d):
    assert np.isfinite(np.asarray(leaf)).all()


@pytest.mark.parametrize("rule", homax.RULES)
def test_zero_params_and_average_with_eps_zero(rule):
  """eps=0 is allowed: with all-zero params and average D = 0, yet the derivative
  is 0 for every rule (the exact rule's 0/0 used to be NaN) and the update finite;
  only the metrics are NaN: S = 1 - 0/0, and H, which carries it on."""
  zeros = jax.tree.map(jnp.zeros_like, params_tree())
  d = homax.homogeneity_derivative(zeros, zeros, 0.5, rule=rule, eps=0.0)
  for leaf in jax.tree.leaves(d):
    assert np.all(np.asarray(leaf) == 0.0)
  tx = optax.chain(optax.sgd(1e-2), homax.homogeneity(1e-2, rule=rule, eps=0.0))
  updates, state = tx.update(zeros, tx.init(zeros), zeros)
  for leaf in jax.tree.leaves(updates):
    assert np.all(np.asarray(leaf) == 0.0)
  assert np.isnan(float(homax.find_state(state).similarity))
  assert np.isnan(float(homax.find_state(state).homogeneity))


def test_exact_rule_with_eps_zero_is_the_formula_where_d_is_positive():
  """The zero-numerator guard changes nothing where D > 0 (signed zeros included)."""
  p = {"w": jnp.array([0.0, -0.0, 1.0, -2.0, 0.5, 0.0])}
  a = {"w": jnp.array([0.0, 0.0, 1.0, 3.0, -0.5, 2.0])}
  n, d = homax.sums(p, a, eps=0.0)
  expected = (d * jnp.sign(p["w"] - a["w"]) - n * jnp.sign(p["w"])) / (d * d)
  got = homax.homogeneity_derivative(p, a, 0.0, rule="exact", eps=0.0)["w"]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  assert np.array_equal(np.signbit(np.asarray(got)), np.signbit(np.asarray(expected)))


def test_exact_rule_is_differentiable_as_the_formula_at_theta_equal_average():
  """At θ' = ā (N = 0, a zero numerator) the derivative of the exact rule is the
  quotient's, not the numerator's (a select on the numerator had made it D² times
  too large)."""
  a = jnp.array([1.0, -2.0, 0.5])

  def formula(p):
    n, d = homax.sums({"w": p}, {"w": a})
    return 0.7 * (d * jnp.sign(p - a) - n * jnp.sign(p)) / (d * d)

  got = jax.jacfwd(lambda p: homax.homogeneity_derivative({"w": p}, {"w": a}, 0.3,
                                                          rule="exact")["w"])(a)
  np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jacfwd(formula)(a)), rtol=1e-6)
  assert np.abs(np.asarray(got)).max() < 0.1  # ±0.7 with the select, ±0.014 here


@pytest.mark.parametrize("function", ["sums", "similarity"])
def test_complex_leaves_are_refused_by_the_sums(function):
  p = {"w": jnp.array([1.0 + 1.0j, 2.0])}
  with raises_naming(TypeError, "params['w']", ["complex64"]):
    getattr(homax, function)(p, {"w": jnp.zeros(2)})
  with raises_naming(TypeError, "average['w']", ["bool"]):
    getattr(homax, function)({"w": jnp.ones(2)}, {"w": jnp.zeros(2, bool)})
  # An integer average (a Python 0, say) is a real number: accepted, as before.
  getattr(homax, function)({"w": 1.0}, {"w": 0})


@pytest.mark.parametrize("rule", homax.RULES)
def test_signed_zeros_give_finite_updates(rule):
  signed = {"w": jnp.array([0.0, -0.0, 0.0, -0.0, 1.0]), "b": jnp.array([-0.0])}
  average = {"w": jnp.array([-0.0, 0.0, 0.0, -0.0, -1.0]), "b": jnp.array([0.0])}
  tx = optax.chain(optax.sgd(1e-2), homax.homogeneity(
      1e-2, rule=rule, history=rule == "paper-full", initial_average=average))
  state = tx.init(signed)
  for grads in (jax.tree.map(jnp.zeros_like, signed), jax.tree.map(jnp.ones_like, signed)):
    updates, new_state = tx.update(grads, state, signed)
    for leaf in jax.tree.leaves((updates, new_state)):
      assert np.isfinite(np.asarray(leaf, np.float64)).all()
  # +0.0 and -0.0 are the same number to the rule: c5 (θ' = ā) gives 0.
  d = homax.homogeneity_derivative(signed, average, 0.0, rule=rule)
  assert np.all(np.asarray(d["w"][:4]) == 0.0) and np.all(np.asarray(d["b"]) == 0.0)


# ---------------------------------------------------------------------------
# Low-precision params.


@pytest.mark.parametrize("dtype, variant", [
    (jnp.float16, "A-B"), (jnp.bfloat16, "A-B"), (jnp.float16, "COMPLETE"), (jnp.bfloat16, "COMPLETE"),
])
def test_low_precision_params(dtype, variant):
  # Part I (Adam step, no history) and Part II (history, SGD ascent). The
  # homogeneity Adam runs in float32: in float16 its ε and the square of
  # η_h·d would round to 0, and 0/0 would make the first update NaN.
  params, grads = params_tree(dtype), grads_tree(dtype)
  tx = paper(variant)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), updates, state

  state = tx.init(params)
  for _ in range(3):
    params, updates, state = step(params, state)
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert u.dtype == dtype and p.dtype == dtype
  st = homax.find_state(state)
  for a in jax.tree.leaves(st.running_average):
    assert a.dtype == dtype
  for h in jax.tree.leaves(st.history):
    assert h.dtype == jnp.float32  # the history accumulates in float32
  n, d = homax.sums(params, st.running_average)
  assert n.dtype == d.dtype == jnp.float32
  assert st.similarity.dtype == jnp.float32 and np.isfinite(float(st.similarity))
  assert st.homogeneity.dtype == jnp.float32 and st.lam.dtype == jnp.float32
  for leaf in jax.tree.leaves(st.step_state):  # the step optimizer's state
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  for leaf in jax.tree.leaves((params, updates)):
    assert np.isfinite(np.asarray(leaf, np.float32)).all()


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_running_average_does_not_drift(dtype):
  # θ' equal to the average at every step: the average must stay where it is.
  # Computed in the params' dtype, k = 257, 258, ... rounds in bfloat16 and
  # the average drifted (0.7 → 0.06 after 4,000 steps).
  params = {"w": jnp.full((3,), 0.7, dtype)}
  tx = homax.homogeneity(1e-2, initial_average=lambda p: p)
  zeros = jax.tree.map(jnp.zeros_like, params)

  def body(state, _):
    _, state = tx.update(zeros, state, params)
    return state, None

  state, _ = jax.lax.scan(body, tx.init(params), None, length=4000)
  assert state.running_average["w"].dtype == dtype
  np.testing.assert_array_equal(state.running_average["w"], params["w"])
  assert float(state.similarity) == 1.0


def test_float16_running_average_past_65504_steps():
  # k + 1 = 65520 is inf in float16: the average must still be finite.
  params = {"w": jnp.array([0.7, -0.2, 0.1], jnp.float16)}
  tx = homax.homogeneity(1e-2, initial_average=lambda p: p)
  state = tx.init(params)._replace(count=jnp.int32(65520))
  updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  np.testing.assert_array_equal(state.running_average["w"], params["w"])
  assert np.isfinite(np.asarray(updates["w"], np.float32)).all()


@pytest.mark.parametrize("function", ["sums", "similarity", "homogeneity_derivative"])
@pytest.mark.parametrize("average, what", [
    ({"w": jnp.ones(1)}, "shape"),                 # would broadcast
    ({"w": jnp.ones((3, 1))}, "shape"),            # would broadcast to (3, 3)
    ({"v": jnp.ones(3)}, "tree structure"),        # same leaf count, other key
    ({"w": jnp.ones(3), "b": jnp.ones(1)}, "tree structure"),
])
def test_math_functions_reject_an_average_unlike_params(function, average, what):
  params = {"w": jnp.array([1.0, 2.0, 3.0])}
  args = (params, average, 0.5) if function == "homogeneity_derivative" else (params, average)
  with raises_naming(ValueError, "average", [what]):
    getattr(homax, function)(*args)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_sums_do_not_overflow(dtype):
  # P = 1e7 elements of 100 and 50: Σ|θ| = 1e9, far beyond float16's 65504.
  size = 10_000_000
  params = {"w": jnp.full((size,), 100.0, dtype)}
  average = {"w": jnp.full((size,), 50.0, dtype)}
  n, d = homax.sums(params, average)
  assert n.dtype == d.dtype == jnp.float32
  np.testing.assert_allclose(float(n), 50.0 * size, rtol=1e-5)
  np.testing.assert_allclose(float(d), 150.0 * size, rtol=1e-5)
  tx = homax.homogeneity(1e-2, initial_average=average)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state, params)
  assert updates["w"].dtype == dtype
  assert np.isfinite(np.asarray(updates["w"], np.float32)).all()
  np.testing.assert_allclose(float(homax.metrics(state)["similarity"]), 1.0 - 50.0 / 150.0, rtol=1e-5)


# ---------------------------------------------------------------------------
# Data files. tests/test_datasets.py covers the IDX format in depth; here is
# one check per failure the issue names, each through the public loader.


def _write_idx(path, array):
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  path.write_bytes(header + array.tobytes())
  return path


def _image_dir(directory, image_shape=(28, 28)):
  rng = np.random.default_rng(0)
  paths = {}
  for stem, n in (("train", 20), ("t10k", 5)):
    paths[stem + "-images"] = _write_idx(
        directory / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, *image_shape)))
    paths[stem + "-labels"] = _write_idx(
        directory / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n))
  return paths


@pytest.mark.parametrize("damage", ["truncated payload", "truncated header", "bad magic", "empty"])
def test_damaged_idx_file_names_the_file(tmp_path, damage):
  paths = _image_dir(tmp_path)
  path = paths["train-labels"]
  raw = path.read_bytes()
  path.write_bytes({
      "truncated payload": raw[:-3],
      "truncated header": raw[:6],
      "bad magic": b"\x01\x02" + raw[2:],
      "empty": b"",
  }[damage])
  with pytest.raises(ValueError, match=re.escape(str(path))):
    datasets.read_idx(path)
  datasets.clear_cache()
  with pytest.raises(ValueError, match=re.escape(str(path))):
    datasets.load("kmnist", data_dir=tmp_path, source="idx")


def test_missing_dataset_names_the_missing_file(tmp_path):
  paths = _image_dir(tmp_path)
  paths["t10k-labels"].unlink()
  with pytest.raises(datasets.DatasetUnavailable, match="t10k-labels-idx1-ubyte") as info:
    datasets.load("mnist", data_dir=tmp_path, source="idx")
  assert str(tmp_path) in str(info.value)
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    datasets.read_idx(paths["t10k-labels"])


def test_wrong_array_shape_names_the_file(tmp_path):
  paths = _image_dir(tmp_path, image_shape=(28, 27))
  datasets.clear_cache()
  with pytest.raises(ValueError, match=re.escape(str(paths["train-images"])) + ".*28, 28"):
    datasets.load("mnist", data_dir=tmp_path, source="idx")
  datasets.clear_cache()
