"""``paper_optimizer`` wires every variant as its table says (no torch needed).

Each published variant must equal Adam(η) chained with ``homax.homogeneity``
given the variant's λ schedule, η_h, rule, history, step and direction. The
torch reference (``tests/test_seed_equivalence.py``) checks the same against
the seed's code; this test keeps the wiring checked where torch is absent.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import homax
from homax import lambda_schedules
import test_transformation as transformation_tests

ETA, ETA_H, T, BETA = 0.01, 0.1, 10, 0.9

PARAMS = {"w": jnp.array([[0.8, -0.3, 0.05], [-1.2, 0.4, 0.0]]), "b": jnp.array([0.1, -0.6, 0.25])}
AVERAGE = {"w": jnp.array([[0.5, 0.2, 0.3], [-1.5, -0.1, 0.7]]), "b": jnp.array([0.1, 0.4, -0.2])}
GRADS = {"w": jnp.array([[0.3, -0.2, 0.1], [0.05, -0.4, 0.2]]), "b": jnp.array([0.0, 0.15, -0.3])}

B_ETA_H = 2 * ETA / (ETA * T + 1)  # the B-variants' η_h

PART_I = dict(rule="paper", history=False, step="adam", direction="descend")
PART_II = dict(rule="paper-full", history=True, step="sgd", direction="ascend")

# variant, paper_optimizer's extra arguments, homogeneity's learning rate, schedule, part
CASES = {
    "A-A": ({}, ETA_H, lambda_schedules.linear(T), PART_I),
    "A-B": ({}, ETA_H, lambda_schedules.dynamic(), PART_I),
    "B-A": ({}, B_ETA_H, lambda_schedules.linear(T), PART_I),
    "B-B": ({}, B_ETA_H, lambda_schedules.dynamic(), PART_I),
    "HYBRID": ({"beta": BETA}, ETA_H, lambda_schedules.hybrid(BETA, T), PART_I),
    "COMPLETE-fixed": ({"lambda_type": "fixed", "lambda_value": 0.3}, ETA_H,
                       lambda_schedules.fixed(0.3), PART_II),
    "COMPLETE-linear": ({"lambda_type": "linear"}, ETA_H, lambda_schedules.linear(T), PART_II),
    "COMPLETE-dynamic": ({"lambda_type": "dynamic"}, ETA_H, lambda_schedules.dynamic(), PART_II),
}


def three_steps(opt):
  return transformation_tests.three_steps(opt, PARAMS, GRADS)


def flat(trees):
  return np.concatenate([np.ravel(leaf) for tree in trees for leaf in jax.tree.leaves(tree)])


@pytest.mark.parametrize("case", CASES)
def test_variant_is_adam_then_its_homogeneity_step(case):
  extra, eta_h, schedule, part = CASES[case]
  variant = case.split("-")[0] if case.startswith("COMPLETE") else case
  kwargs = dict(learning_rate=ETA, total_steps=T, initial_average=AVERAGE, **extra)
  if not homax.VARIANTS[variant].computes_learning_rate:
    kwargs["homogeneity_learning_rate"] = ETA_H
  got, state = three_steps(homax.paper_optimizer(variant, **kwargs))
  expected, _ = three_steps(optax.chain(
      optax.adam(ETA, b1=0.9, b2=0.999, eps=1e-8),
      homax.homogeneity(eta_h, schedule, initial_average=AVERAGE, **part)))
  np.testing.assert_allclose(flat(got), flat(expected), rtol=1e-6, atol=1e-9)

  st = homax.find_state(state)
  assert float(st.lam) == pytest.approx(float(schedule(2)), rel=1e-6)  # λ of the third step
  assert (st.history != ()) == part["history"]
  # The homogeneity step is visible in the updates: Adam alone goes elsewhere.
  adam, _ = three_steps(optax.adam(ETA, b1=0.9, b2=0.999, eps=1e-8))
  assert np.max(np.abs(flat(got) - flat(adam))) > 1e-4


def test_the_variants_differ_from_each_other():
  # So that the test above, which compares each with its own recipe, could
  # tell a variant wired with another's recipe.
  runs = {}
  for case, (extra, _, _, _) in CASES.items():
    variant = case.split("-")[0] if case.startswith("COMPLETE") else case
    kwargs = dict(learning_rate=ETA, total_steps=T, initial_average=AVERAGE, **extra)
    if not homax.VARIANTS[variant].computes_learning_rate:
      kwargs["homogeneity_learning_rate"] = ETA_H
    runs[case] = flat(three_steps(homax.paper_optimizer(variant, **kwargs))[0])
  names = list(runs)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert np.max(np.abs(runs[a] - runs[b])) > 1e-6, (a, b)


def test_complete_ascends_by_eta_h_squared():
  # Part II's first step by hand: θ' + η_h²·g, g = (1 − λ)·c on cases c1–c5
  # and 0 on the "other" elements (history is 0 before the first step).
  opt = homax.paper_optimizer("COMPLETE", learning_rate=ETA, homogeneity_learning_rate=ETA_H,
                              total_steps=T, lambda_type="fixed", lambda_value=0.3,
                              initial_average=AVERAGE)
  updates, _ = opt.update(GRADS, opt.init(PARAMS), PARAMS)
  adam = optax.adam(ETA, b1=0.9, b2=0.999, eps=1e-8)
  base, _ = adam.update(GRADS, adam.init(PARAMS))
  theta = jax.tree.map(jnp.add, PARAMS, base)
  d = homax.homogeneity_derivative(theta, AVERAGE, 0.3, rule="paper-full")
  assert np.any(flat([d]) == 0.0) and np.any(flat([d]) != 0.0)  # both kinds of element
  expected = jax.tree.map(lambda b_, g: b_ + ETA_H**2 * g, base, d)
  np.testing.assert_allclose(flat([updates]), flat([expected]), rtol=1e-6, atol=1e-10)
