"""homax.forward_gradient: unbiased, forward-mode only, pytree/jit/vmap-safe, optax-ready.

The statistical tests use fixed keys, so they are deterministic; their
tolerances are stated in standard errors so that a biased estimator (a wrong
sign, a wrong scale, a missing factor) fails them, not only a crash.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import homax

# Reverse-mode leaves these in a jaxpr: `transpose` (the transpose of a
# matmul's linearisation) and `scatter-add` (the transpose of a gather).
# Forward mode (jvp) of the same loss needs neither.
REVERSE_MODE_PRIMITIVES = {"transpose", "scatter-add"}


def _data():
  x = jax.random.normal(jax.random.key(1), (16, 3))
  y = jax.random.randint(jax.random.key(2), (16,), 0, 2)
  return x, y


def logistic_loss(params, x, y):
  """Softmax regression; the matmul and the label gather give reverse mode its transpose ops."""
  z = x @ params["w"] + params["b"]
  return jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, y[:, None], -1)[:, 0])


def _params():
  return {"w": jax.random.normal(jax.random.key(3), (3, 2)) * 0.5,
          "b": jnp.array([0.3, -0.2])}


def _flat(tree):
  return jnp.concatenate([jnp.ravel(l) for l in jax.tree.leaves(tree)])


def _primitives(jaxpr, acc=None):
  """Every primitive name in a jaxpr, sub-jaxprs (scan, jit, cond, ...) included."""
  acc = set() if acc is None else acc
  for eqn in jaxpr.eqns:
    acc.add(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          _primitives(inner, acc)
  return acc


def test_mean_of_single_direction_estimates_approaches_the_gradient():
  # 2000 single-tangent estimates; each coordinate's mean must lie within 5
  # standard errors of jax.grad. The per-coordinate variance of (∇L·v)v is
  # ‖∇L‖² + (∂ᵢL)² for standard-normal v, so the test also checks the spread:
  # an estimator off by a scale factor or with a different tangent law fails.
  x, y = _data()
  params = _params()
  grad = _flat(jax.grad(logistic_loss)(params, x, y))
  n = 2000
  keys = jax.random.split(jax.random.key(0), n)
  one = lambda k: _flat(homax.forward_gradient(logistic_loss, params, k, x, y)[1])
  samples = jax.jit(jax.vmap(one))(keys)
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / np.sqrt(n)
  z = np.abs(np.asarray(mean - grad)) / np.asarray(se)
  assert np.all(z < 5.0), f"z-scores {z}"
  expected_var = jnp.sum(grad ** 2) + grad ** 2
  ratio = np.asarray(samples.var(0, ddof=1) / expected_var)
  assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
  # The criterion has power: a halved gradient would be rejected by it.
  assert np.max(np.abs(np.asarray(mean - 0.5 * grad)) / np.asarray(se)) > 5.0


def test_each_single_direction_estimate_is_a_descent_direction():
  # g = (∇L·v) v, so ∇L·g = (∇L·v)² ≥ 0 for every tangent: a sign error fails here for sure.
  x, y = _data()
  params = _params()
  grad = _flat(jax.grad(logistic_loss)(params, x, y))
  keys = jax.random.split(jax.random.key(5), 200)
  gs = jax.vmap(lambda k: _flat(homax.forward_gradient(logistic_loss, params, k, x, y)[1]))(keys)
  dots = np.asarray(gs @ grad)
  assert np.all(dots >= -1e-6)
  assert np.mean(dots) > 0


def test_more_directions_reduce_the_variance_about_k_fold():
  x, y = _data()
  params = _params()
  keys = jax.random.split(jax.random.key(7), 400)

  def spread(k_dirs):
    one = lambda k: _flat(homax.forward_gradient(logistic_loss, params, k, x, y,
                                                 num_directions=k_dirs)[1])
    return float(jnp.sum(jax.vmap(one)(keys).var(0)))

  ratio = spread(1) / spread(8)
  assert 5.0 < ratio < 12.0, ratio


def test_loss_is_the_loss_at_params():
  x, y = _data()
  params = _params()
  loss, _ = homax.forward_gradient(logistic_loss, params, jax.random.key(0), x, y, num_directions=3)
  np.testing.assert_allclose(loss, logistic_loss(params, x, y), rtol=1e-6)


def test_jaxpr_has_no_reverse_mode_work_but_grad_does():
  x, y = _data()
  params = _params()
  fwd = jax.make_jaxpr(
      lambda p: homax.forward_gradient(logistic_loss, p, jax.random.key(0), x, y, num_directions=2))(params)
  rev = jax.make_jaxpr(jax.grad(logistic_loss))(params, x, y)
  fwd_prims = _primitives(fwd.jaxpr)
  rev_prims = _primitives(rev.jaxpr)
  # The check is meaningful: backprop of the same loss does contain them.
  assert REVERSE_MODE_PRIMITIVES <= rev_prims, rev_prims
  assert not (REVERSE_MODE_PRIMITIVES & fwd_prims), fwd_prims & REVERSE_MODE_PRIMITIVES
  assert "dot_general" in fwd_prims  # the model itself is there, in forward mode
  assert "transpose" not in str(fwd)


def test_nested_pytrees_jit_and_vmap():
  params = {"enc": {"w": jnp.ones((3, 2)), "b": (jnp.zeros(2), jnp.float32(0.5))},
            "head": [jnp.full((2,), 0.1)]}

  def loss(p, x, scale=1.0):
    h = jnp.tanh(x @ p["enc"]["w"] + p["enc"]["b"][0]) * p["enc"]["b"][1]
    return scale * jnp.sum((h * p["head"][0]) ** 2)

  x = jnp.arange(6.0).reshape(2, 3) / 6
  key = jax.random.key(11)
  loss_e, g_e = homax.forward_gradient(loss, params, key, x, scale=2.0, num_directions=2)
  assert jax.tree.structure(g_e) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(g_e), jax.tree.leaves(params)):
    assert a.shape == jnp.shape(b) and a.dtype == jnp.result_type(b)
  loss_j, g_j = jax.jit(lambda p, k: homax.forward_gradient(loss, p, k, x, scale=2.0,
                                                            num_directions=2))(params, key)
  np.testing.assert_allclose(loss_j, loss_e, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_j), jax.tree.leaves(g_e)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  keys = jax.random.split(key, 3)
  _, g_v = jax.vmap(lambda k: homax.forward_gradient(loss, params, k, x, scale=2.0))(keys)
  for i in range(3):
    _, g_i = homax.forward_gradient(loss, params, keys[i], x, scale=2.0)
    for a, b in zip(jax.tree.leaves(g_v), jax.tree.leaves(g_i)):
      np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-7)
  # vmap over params too (e.g. many seeds' models at once).
  stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
  _, g_p = jax.vmap(lambda p: homax.forward_gradient(loss, p, key, x))(stacked)
  assert jax.tree.structure(g_p) == jax.tree.structure(params)
  for i in range(2):
    _, g_i = homax.forward_gradient(loss, jax.tree.map(lambda a: a[i], stacked), key, x)
    for a, b in zip(jax.tree.leaves(g_p), jax.tree.leaves(g_i), strict=True):
      np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_num_directions_must_be_a_positive_int(bad):
  with pytest.raises(ValueError, match="num_directions"):
    homax.forward_gradient(lambda p: jnp.sum(p ** 2), jnp.ones(2), jax.random.key(0),
                           num_directions=bad)


def test_num_directions_accepts_numpy_ints():
  _, g = homax.forward_gradient(lambda p: jnp.sum(p ** 2), jnp.ones(2), jax.random.key(0),
                                num_directions=np.int64(3))
  assert g.shape == (2,)


@pytest.mark.parametrize("loss_fn", [lambda p: p ** 2, lambda p: jnp.sum(p ** 2)[None],
                                     lambda p: jnp.sum(p > 0)])
def test_loss_must_be_a_floating_point_scalar(loss_fn):
  """A vector loss would broadcast (J v) * v into a wrong "gradient" without this check."""
  with pytest.raises(TypeError, match="floating-point scalar"):
    homax.forward_gradient(loss_fn, jnp.ones(3), jax.random.key(0))


def test_integer_leaves_are_rejected_clearly():
  with pytest.raises(TypeError, match=r"\['n'\]"):
    homax.forward_gradient(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(2), "n": jnp.int32(3)},
                           jax.random.key(0))


@pytest.mark.parametrize("make_tx", [lambda: optax.sgd(0.05), lambda: optax.adam(0.05)])
def test_optax_training_with_forward_gradients_reduces_the_loss(make_tx):
  x, y = _data()
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  tx = make_tx()

  @jax.jit
  def train(params, key):
    def step(carry, k):
      p, s = carry
      loss, g = homax.forward_gradient(logistic_loss, p, k, x, y)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    (p, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, 150))
    return p, losses

  final, _ = train(params, jax.random.key(0))
  before = float(logistic_loss(params, x, y))
  after = float(logistic_loss(final, x, y))
  best = float(logistic_loss(_fit_by_backprop(x, y), x, y))
  # At least half of the reachable decrease, with one tangent per step.
  assert after < before - 0.5 * (before - best), (before, after, best)


def _fit_by_backprop(x, y):
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  tx = optax.adam(0.05)
  s = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(logistic_loss)(p, x, y), s, p))
  for _ in range(300):
    u, s = step(params, s)
    params = optax.apply_updates(params, u)
  return params
