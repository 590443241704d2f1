"""homax follows the seed's PyTorch loop step for step, for every published variant.

The reference is ``tests/torch_reference.py`` (the seed's loop rewritten in
torch). Both sides start from the same weights (a ``Net(4, 10, 3)`` with a
fixed torch seed), the same initial average (a second, independently
initialised ``Net``, as the seed's ``average_model``), and see the same batches
(the seed's Iris split, ``DataLoader(batch_size=32, shuffle=True)`` over 10
epochs: T = ceil(90/32)·10 = 30 steps).

Metric: after every step k, ``err_k = max|θ_homax - θ_torch| / max|θ_torch|``
over the flat vector (torch's order fc1.weight, fc1.bias, fc2.weight,
fc2.bias); the test asserts ``max_k err_k <= 1e-4`` (float32 runs agree to
about 1e-6). S, H and λ of every step (``homax.metrics``) must agree to 1e-5
absolute. So that the test can fail, each homogeneity configuration must also
end clearly away from a plain ``optax.adam`` run (by more than 100× the
tolerance), except the one where the seed's Part II step is too small to
matter by construction (COMPLETE with η_h = 0.01: η_h² g ≈ 1e-6 per step).
"""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

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

# (id, variant, kwargs for both sides, homogeneity must visibly matter)
CONFIGS = []
for _eta, _eta_h, _eta_h_complete, _tag in (
    (0.01, 0.01, 0.01, "small"),
    (0.01, 0.1, 0.5, "strong"),
):
  for _variant in ("A-A", "A-B", "HYBRID"):
    _kw = dict(learning_rate=_eta, homogeneity_learning_rate=_eta_h)
    if _variant == "HYBRID":
      _kw["beta"] = 0.9
    CONFIGS.append((f"{_variant}-{_tag}", _variant, _kw, True))
  # B-* compute η_h = 2η/(ηT + 1); the strong configuration raises η instead.
  for _variant in ("B-A", "B-B"):
    _kw = dict(learning_rate=_eta if _tag == "small" else 0.1)
    CONFIGS.append((f"{_variant}-{_tag}", _variant, _kw, True))
  for _lambda_type in ("fixed", "linear", "dynamic"):
    _kw = dict(
        learning_rate=_eta, homogeneity_learning_rate=_eta_h_complete,
        lambda_type=_lambda_type,
    )
    if _lambda_type == "fixed":
      _kw["lambda_value"] = 0.9
    CONFIGS.append(
        (f"COMPLETE-{_lambda_type}-{_tag}", "COMPLETE", _kw, _tag == "strong")
    )


@functools.lru_cache(maxsize=None)
def _setup():
  """Initial weights, initial average and the batch sequence (cached)."""
  x_train, y_train, *_ = ref.iris_data()
  assert len(x_train) == 90
  assert ref.total_iterations(len(x_train), BATCH_SIZE, EPOCHS) == TOTAL_STEPS
  torch.manual_seed(0)
  model = ref.Net(4, 10, 3)
  average_model = ref.Net(4, 10, 3)
  batches = ref.shuffled_batches(x_train, y_train, BATCH_SIZE, EPOCHS, seed=1)
  assert len(batches) == TOTAL_STEPS
  return model.state_dict(), average_model.state_dict(), batches


def _fresh_model():
  state_dict, _, _ = _setup()
  model = ref.Net(4, 10, 3)
  model.load_state_dict(state_dict)
  return model


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


def _run_jax(tx):
  """All 30 steps in one jitted scan; per-step flat params and metrics."""
  state_dict, _, _ = _setup()
  params = _to_jax(state_dict)

  @jax.jit
  def run(params, xs, ys, ws):
    def step(carry, batch):
      params, state = carry
      grads = jax.grad(_loss)(params, *batch)
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
      try:
        m = homax.metrics(state)
        out = (m["similarity"], m["homogeneity"], m["lambda"])
      except ValueError:  # plain optax.adam: no homogeneity state
        out = ()
      return (params, state), (_flat(params), out)

    _, (flats, metrics) = jax.lax.scan(step, (params, tx.init(params)), (xs, ys, ws))
    return flats, metrics

  flats, metrics = run(params, *_stacked_batches())
  return np.asarray(flats), [np.asarray(m) for m in metrics]


def _max_relative_error(ours, theirs):
  theirs = np.stack(theirs)
  return float(np.max(np.max(np.abs(ours - theirs), axis=1) / np.max(np.abs(theirs), axis=1)))


@functools.lru_cache(maxsize=None)
def _plain_adam_jax(learning_rate):
  flats, _ = _run_jax(optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8))
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


@pytest.mark.parametrize(
    "variant,kwargs,must_differ",
    [pytest.param(v, kw, md, id=name) for name, v, kw, md in CONFIGS],
)
def test_variant_matches_torch(variant, kwargs, must_differ):
  _, average_state, batches = _setup()
  average_torch = torch.cat([average_state[f"{l}.{n}"].flatten()
                             for l in LAYERS for n in ("weight", "bias")])
  trace = ref.run_homogeneity(
      _fresh_model(), batches, variant=variant, total_steps=TOTAL_STEPS,
      average=average_torch, **kwargs,
  )
  tx = homax.paper_optimizer(
      variant, total_steps=TOTAL_STEPS, initial_average=_to_jax(average_state),
      **kwargs,
  )
  flats, (s, h, lam) = _run_jax(tx)

  err = _max_relative_error(flats, trace.params)
  assert err <= TOLERANCE, f"max relative error {err:.3g}"
  np.testing.assert_allclose(lam, trace.lam, rtol=0, atol=METRIC_TOLERANCE)
  np.testing.assert_allclose(s, trace.similarity, rtol=0, atol=METRIC_TOLERANCE)
  np.testing.assert_allclose(h, trace.homogeneity, rtol=0, atol=METRIC_TOLERANCE)

  if must_differ:
    # The homogeneity step changed the trajectory well beyond the tolerance,
    # so a homax that skipped it (or got it wrong) would fail above.
    adam = _plain_adam_jax(kwargs["learning_rate"])
    gap = _max_relative_error(adam, trace.params)
    assert gap > 100 * TOLERANCE, f"homogeneity changed the run by only {gap:.3g}"
