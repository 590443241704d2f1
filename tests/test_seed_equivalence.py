"""homax follows the seed's PyTorch loop step for step, for every published variant.

The reference is ``tests/torch_reference.py`` (the seed's loop rewritten in
torch). Both sides start from the same weights (a ``Net(4, 10, 3)`` with a
fixed torch seed), the same initial average (a second, independently
initialised ``Net``, as the seed's ``average_model``), and see the same batches
(the seed's Iris split, ``DataLoader(batch_size=32, shuffle=True)`` over 10
epochs: T = ceil(90/32)·10 = 30 steps).

Metric: after every step k, ``err_k = max|θ_homax - θ_torch| / max|θ_torch|``
over the flat vector (torch's order fc1.weight, fc1.bias, fc2.weight,
fc2.bias); the test asserts ``max_k err_k <= 1e-4`` (the float32 runs agree
to about 1e-5 at worst: only summation order and Adam's arithmetic differ).
S, H and λ of every step (``homax.metrics``) must agree to 1e-5 absolute.

So that the test can fail, each homogeneity configuration must also end
clearly away from a plain Adam run (by more than 100× the tolerance), except
where the seed's Part II step is too small to matter by construction
(COMPLETE with η_h = 0.01: η_h² g is about 1e-6 per step). The two ``edge``
configurations make Table 1's rare cases (θ' = 0, θ' = ā) actually occur,
which random weights never do; see ``_edge``.
"""

import functools

import numpy as np
import pytest

# The project's one check against the published code: a missing reference must fail the
# run, not skip it quietly. Both come with `pip install -e ".[test]"`.
try:
  import torch
  import sklearn  # noqa: F401
except ImportError as missing:
  pytest.fail(f"tests/test_seed_equivalence.py needs torch and scikit-learn ({missing});"
              ' install them with: pip install -e ".[test]"', pytrace=False)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import homax  # noqa: E402
import torch_reference as ref  # noqa: E402  (tests/ is on sys.path under pytest)

BATCH_SIZE = 32
EPOCHS = 10
TOTAL_STEPS = 30
TOLERANCE = 1e-4
METRIC_TOLERANCE = 1e-5
LAYERS = ("fc1", "fc2")

# (id, variant, kwargs for both sides, homogeneity must visibly matter, edge)
CONFIGS = []
for _eta, _eta_h, _eta_h_complete, _tag in (
    (0.01, 0.01, 0.01, "small"),
    (0.01, 0.1, 0.5, "strong"),
):
  for _variant in ("A-A", "A-B", "HYBRID"):
    _kw = dict(learning_rate=_eta, homogeneity_learning_rate=_eta_h)
    if _variant == "HYBRID":
      _kw["beta"] = 0.9
    CONFIGS.append((f"{_variant}-{_tag}", _variant, _kw, True, False))
  # B-* compute η_h = 2η/(ηT + 1); the strong configuration raises η instead.
  for _variant in ("B-A", "B-B"):
    _kw = dict(learning_rate=_eta if _tag == "small" else 0.1)
    CONFIGS.append((f"{_variant}-{_tag}", _variant, _kw, True, False))
  for _lambda_type in ("fixed", "linear", "dynamic"):
    _kw = dict(
        learning_rate=_eta, homogeneity_learning_rate=_eta_h_complete,
        lambda_type=_lambda_type,
    )
    if _lambda_type == "fixed":
      _kw["lambda_value"] = 0.9
    CONFIGS.append(
        (f"COMPLETE-{_lambda_type}-{_tag}", "COMPLETE", _kw, _tag == "strong", False)
    )
# Table 1's rare cases (θ' = 0, θ' = ā), once per part; see `_edge`.
CONFIGS.append(("A-B-edge", "A-B", dict(learning_rate=0.01, homogeneity_learning_rate=0.1), True, True))
CONFIGS.append((
    "COMPLETE-dynamic-edge", "COMPLETE",
    dict(learning_rate=0.01, homogeneity_learning_rate=0.5, lambda_type="dynamic"),
    True, True,
))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
  """The reference's tensors are tiny: torch's thread pool would only burn CPU."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


# Flat indices (torch's order) of the hidden unit that the edge setup kills:
# fc1.weight is (10, 4) at 0..39, fc1.bias at 40..49, fc2.weight (3, 10) at
# 50..79, fc2.bias at 80..82.
DEAD = 9
C3, C4 = 4 * DEAD, 4 * DEAD + 1  # θ = 0 with ā > 0, θ = 0 with ā < 0
STILL = (4 * DEAD + 2, 4 * DEAD + 3, 50 + DEAD, 60 + DEAD)  # θ = ā: c5


def _edge(state_dict, average_state):
  """Makes Table 1's rare cases happen: θ' = 0 (c3, c4) and θ' = ā (c5).

  Hidden unit ``DEAD`` gets bias -5 and small incoming weights, so it is off
  for every (standardised) Iris input: its weights get an exactly zero
  gradient, Adam leaves them where they are, and θ' equals θ exactly. Two of
  them start at 0 with ā of either sign (c3, c4 at step 0); the rest start
  equal to ā (c5, which persists since the derivative there is 0).

  The c5 values are 0, 0.25 and -0.5 on purpose: the running average
  (θ' + k ā)/(k + 1) of a constant power of two is exact in float32 for every
  k here, in torch and in XLA alike. With an arbitrary value it is not: XLA on
  CPU turns the division by the scalar k + 1 into a multiplication by its
  rounded reciprocal, where torch divides with correct rounding, so ā drifts
  from θ' by one ulp on one side only (for some k); the element leaves c5
  there, and Part I's Adam turns that ulp into a full η_h-sized step. That is
  float rounding meeting an exact-equality test, not a difference of rule
  (the seed's own k·ā rounding breaks c5 for some values too).
  """
  p = {k: v.clone() for k, v in state_dict.items()}
  a = {k: v.clone() for k, v in average_state.items()}
  w1, b1, w2 = p["fc1.weight"], p["fc1.bias"], p["fc2.weight"]
  a1, a2 = a["fc1.weight"], a["fc2.weight"]
  b1[DEAD] = -5.0
  w1[DEAD, 0], a1[DEAD, 0] = 0.0, 0.3
  w1[DEAD, 1], a1[DEAD, 1] = 0.0, -0.3
  w1[DEAD, 2], a1[DEAD, 2] = 0.25, 0.25
  w1[DEAD, 3], a1[DEAD, 3] = 0.0, 0.0
  w2[0, DEAD], a2[0, DEAD] = 0.0, 0.0
  w2[1, DEAD], a2[1, DEAD] = -0.5, -0.5
  return p, a


@functools.lru_cache(maxsize=None)
def _setup(edge=False):
  """Initial weights, initial average and the batch sequence (cached)."""
  x_train, y_train, *_ = ref.iris_data()
  assert len(x_train) == 90
  assert ref.total_iterations(len(x_train), BATCH_SIZE, EPOCHS) == TOTAL_STEPS
  torch.manual_seed(0)
  model = ref.Net(4, 10, 3)
  average_model = ref.Net(4, 10, 3)
  batches = ref.shuffled_batches(x_train, y_train, BATCH_SIZE, EPOCHS, seed=1)
  assert len(batches) == TOTAL_STEPS
  state_dict, average_state = model.state_dict(), average_model.state_dict()
  if edge:
    state_dict, average_state = _edge(state_dict, average_state)
  return state_dict, average_state, batches


def _fresh_model(edge=False):
  state_dict, _, _ = _setup(edge)
  model = ref.Net(4, 10, 3)
  model.load_state_dict(state_dict)
  return model


def _flat_torch(state_dict):
  return torch.cat(
      [state_dict[f"{l}.{n}"].flatten() for l in LAYERS for n in ("weight", "bias")]
  )


def _to_jax(state_dict):
  """torch's layout kept: {'fc1': {'weight': (out, in), 'bias': (out,)}, ...}."""
  return {
      layer: {
          "weight": jnp.asarray(state_dict[f"{layer}.weight"].numpy()),
          "bias": jnp.asarray(state_dict[f"{layer}.bias"].numpy()),
      }
      for layer in LAYERS
  }


def _flat(params):
  """The flat vector in torch's parameter order (not jax's sorted-key order)."""
  return jnp.concatenate(
      [jnp.ravel(params[layer][name]) for layer in LAYERS for name in ("weight", "bias")]
  )


def _stacked_batches():
  """Batches padded to 32 rows with a 0/1 weight, stacked for ``lax.scan``."""
  _, _, batches = _setup()
  xs, ys, ws = [], [], []
  for x, y in batches:
    n = x.shape[0]
    pad = BATCH_SIZE - n
    xs.append(np.concatenate([x.numpy(), np.zeros((pad, 4), np.float32)]))
    ys.append(np.concatenate([y.numpy(), np.zeros((pad,), np.int64)]).astype(np.int32))
    ws.append(np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]))
  return jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys)), jnp.asarray(np.stack(ws))


def _loss(params, x, y, w):
  """Mean softmax cross-entropy over the real rows (torch's CrossEntropyLoss)."""
  h = jax.nn.relu(x @ params["fc1"]["weight"].T + params["fc1"]["bias"])
  logits = h @ params["fc2"]["weight"].T + params["fc2"]["bias"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(w * losses) / jnp.sum(w)


# Learning rates that can be traced, so one compilation serves every value;
# B-A and B-B need η as a Python float (they compute η_h from it).
_TRACEABLE = ("learning_rate", "homogeneity_learning_rate")


def _split(variant, kwargs):
  if variant in ("B-A", "B-B"):
    return tuple(sorted(kwargs.items())), {}
  static = {k: v for k, v in kwargs.items() if k not in _TRACEABLE}
  traced = {k: jnp.float32(v) for k, v in kwargs.items() if k in _TRACEABLE}
  return tuple(sorted(static.items())), traced


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scan(variant, static, traced, average, params, xs, ys, ws):
  """All 30 steps in one ``lax.scan``; per-step flat params and metrics.

  ``variant`` None is plain ``optax.adam`` (torch's defaults). Compiled once
  per (variant, static hyperparameters): the edge, small and strong runs of a
  variant share it.
  """
  kwargs = dict(static, **traced)
  if variant is None:
    tx = optax.adam(kwargs["learning_rate"], b1=0.9, b2=0.999, eps=1e-8)
  else:
    tx = homax.paper_optimizer(
        variant, total_steps=TOTAL_STEPS, initial_average=average, **kwargs
    )

  def step(carry, batch):
    params, state = carry
    grads = jax.grad(_loss)(params, *batch)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if variant is None:
      out = ()
    else:
      m = homax.metrics(state)
      out = (m["similarity"], m["homogeneity"], m["lambda"])
    return (params, state), (_flat(params), out)

  _, (flats, metrics) = jax.lax.scan(step, (params, tx.init(params)), (xs, ys, ws))
  return flats, metrics


def _run_jax(variant, kwargs, edge=False):
  """Runs homax (or plain Adam for ``variant=None``) from the shared start."""
  state_dict, average_state, _ = _setup(edge)
  static, traced = _split(variant, kwargs)
  flats, metrics = _scan(
      variant, static, traced, _to_jax(average_state), _to_jax(state_dict),
      *_stacked_batches(),
  )
  return np.asarray(flats), [np.asarray(m) for m in metrics]


def _max_relative_error(ours, theirs):
  theirs = np.stack(theirs)
  return float(np.max(np.max(np.abs(ours - theirs), axis=1) / np.max(np.abs(theirs), axis=1)))


@functools.lru_cache(maxsize=None)
def _plain_adam_jax(learning_rate, edge=False):
  flats, _ = _run_jax(None, {"learning_rate": learning_rate}, edge)
  return flats


@pytest.mark.parametrize("learning_rate", [0.01, 0.1])
def test_plain_adam_matches_torch(learning_rate):
  _, _, batches = _setup()
  trace = ref.run_adam(_fresh_model(), batches, learning_rate)
  flats = _plain_adam_jax(learning_rate)
  err = _max_relative_error(flats, trace.params)
  assert err <= TOLERANCE, err
  # The run actually moved the weights.
  assert np.max(np.abs(trace.params[-1] - trace.params[0])) > 100 * TOLERANCE


def _torch_trace(variant, kwargs, edge, batches, average_torch):
  """The published loop's run of one configuration (``ref.run_homogeneity``)."""
  return ref.run_homogeneity(
      _fresh_model(edge), batches, variant=variant, total_steps=TOTAL_STEPS,
      average=average_torch, **kwargs,
  )


@pytest.mark.parametrize(
    "variant,kwargs,must_differ,edge",
    [pytest.param(v, kw, md, e, id=name) for name, v, kw, md, e in CONFIGS],
)
def test_variant_matches_torch(variant, kwargs, must_differ, edge):
  state_dict, average_state, batches = _setup(edge)
  average_torch = _flat_torch(average_state)
  if edge:
    # θ'_0 is one Adam step from θ_0; check that it hits c3, c4 and c5.
    theta0 = ref.run_adam(_fresh_model(edge), batches[:1], kwargs["learning_rate"]).params[0]
    masks = ref.table_one_conditions(torch.from_numpy(theta0), average_torch)
    assert all(bool(m[i]) for m, i in zip(masks[2:], (C3, C4, STILL[0])))
  trace = _torch_trace(variant, kwargs, edge, batches, average_torch)
  if edge:
    # The dead unit stayed dead: its c5 weights never moved (θ' = ā throughout).
    start = _flat_torch(state_dict).numpy()
    assert all(np.array_equal(p[list(STILL)], start[list(STILL)]) for p in trace.params)
  flats, (s, h, lam) = _run_jax(variant, kwargs, edge)

  err = _max_relative_error(flats, trace.params)
  assert err <= TOLERANCE, f"max relative error {err:.3g}"
  np.testing.assert_allclose(lam, trace.lam, rtol=0, atol=METRIC_TOLERANCE)
  np.testing.assert_allclose(s, trace.similarity, rtol=0, atol=METRIC_TOLERANCE)
  np.testing.assert_allclose(h, trace.homogeneity, rtol=0, atol=METRIC_TOLERANCE)

  if must_differ:
    # The homogeneity step changed the trajectory well beyond the tolerance,
    # so a homax that skipped it (or got it wrong) would fail above.
    adam = _plain_adam_jax(kwargs["learning_rate"], edge)
    gap = _max_relative_error(adam, trace.params)
    assert gap > 100 * TOLERANCE, f"homogeneity changed the run by only {gap:.3g}"


def _report():
  """Prints each configuration's error against torch and its distance from plain Adam.

  The figures the README quotes: ``python tests/test_seed_equivalence.py``.
  """
  _, _, batches = _setup()
  for learning_rate in (0.01, 0.1):
    trace = ref.run_adam(_fresh_model(), batches, learning_rate)
    err = _max_relative_error(_plain_adam_jax(learning_rate), trace.params)
    print(f"plain Adam, η = {learning_rate}: max relative error {err:.3g}")
  for name, variant, kwargs, must_differ, edge in CONFIGS:
    _, average_state, batches = _setup(edge)
    trace = _torch_trace(variant, kwargs, edge, batches, _flat_torch(average_state))
    err = _max_relative_error(_run_jax(variant, kwargs, edge)[0], trace.params)
    gap = _max_relative_error(_plain_adam_jax(kwargs["learning_rate"], edge), trace.params)
    print(f"{name}: max relative error {err:.3g}; from plain Adam {gap / TOLERANCE:.3g}× the"
          f" tolerance{'' if must_differ else ' (not asserted to differ)'}")


if __name__ == "__main__":
  _report()
