"""A Flax nnx example as a test: an MLP on Iris with Adam + homogeneity."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import homax

nnx = pytest.importorskip("flax.nnx")
datasets = pytest.importorskip("sklearn.datasets")


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.hidden = nnx.Linear(4, 16, rngs=rngs)
    self.out = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def iris():
  x, y = datasets.load_iris(return_X_y=True)
  x = (x - x.mean(axis=0)) / x.std(axis=0)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def test_nnx_mlp_on_iris():
  x, y = iris()
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
      model, optax.chain(optax.adam(1e-2), homax.homogeneity(1e-3)), wrt=nnx.Param)

  def loss_fn(model):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  initial = float(loss_fn(model))
  for _ in range(100):
    train_step(model, optimizer)
  final = float(loss_fn(model))
  assert final < 0.3 * initial, (initial, final)
  accuracy = float(jnp.mean(jnp.argmax(model(x), axis=-1) == y))
  assert accuracy > 0.9

  with warnings.catch_warnings():
    # nnx wraps state leaves in Variables; reading them must not use the
    # deprecated `.value`.
    warnings.simplefilter("error", DeprecationWarning)
    metrics = homax.metrics(optimizer.opt_state)
  assert sorted(metrics) == ["count", "homogeneity", "lambda", "similarity"]
  for key, value in metrics.items():
    assert isinstance(value, jax.Array), key
    assert np.isfinite(float(value)), key
  assert int(metrics["count"]) == 100
  assert float(metrics["lambda"]) == pytest.approx(100 / 101)
  assert 0.0 <= float(metrics["similarity"]) <= 1.0

  # The homogeneity step took part: the same model trained by Adam alone
  # ends elsewhere.
  plain = MLP(nnx.Rngs(0))
  plain_optimizer = nnx.Optimizer(plain, optax.adam(1e-2), wrt=nnx.Param)
  for _ in range(100):
    train_step(plain, plain_optimizer)
  apart = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(plain, nnx.Param))))
  assert apart > 1e-3, apart

  # The running average holds one leaf per model parameter, in its dtype.
  average = homax.find_state(optimizer.opt_state).running_average
  params = nnx.state(model, nnx.Param)
  assert len(jax.tree.leaves(average)) == len(jax.tree.leaves(params))
  for a, p in zip(jax.tree.leaves(average), jax.tree.leaves(params), strict=True):
    assert a.shape == p.shape and a.dtype == p.dtype
