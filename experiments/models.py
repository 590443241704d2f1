"""Models of the experiments (Flax nnx), with PyTorch's default initialisation.

Training code works on pure parameter dicts (``nnx.to_pure_dict``) so that
optax states, ``jax.vmap`` over seeds and checkpoints see plain pytrees;
:class:`ModelSpec` pairs an ``init(key) -> params`` with an
``apply(params, x) -> logits``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx


def torch_uniform(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's default for weights and biases."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  init = torch_uniform(in_features)
  return nnx.Linear(in_features, out_features, kernel_init=init, bias_init=init, rngs=rngs)


class MLP(nnx.Module):
  """The paper's network: in → hidden → out with ReLU (``Net`` in the seed)."""

  def __init__(self, in_features: int, hidden: int, out_features: int, *, rngs: nnx.Rngs):
    self.fc1 = torch_linear(in_features, hidden, rngs=rngs)
    self.fc2 = torch_linear(hidden, out_features, rngs=rngs)

  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    return self.fc2(jax.nn.relu(self.fc1(x)))


class DeepMLP(nnx.Module):
  """in → h → h → … → out with ReLU (benchmarks' 784→1024→1024→10; seed 002's mlp2)."""

  def __init__(self, in_features: int, hidden: tuple[int, ...], out_features: int, *, rngs: nnx.Rngs):
    sizes = (in_features, *hidden)
    self.layers = nnx.List(
        [torch_linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    ) if hasattr(nnx, "List") else [torch_linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    self.out = torch_linear(sizes[-1], out_features, rngs=rngs)

  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    for layer in self.layers:
      x = jax.nn.relu(layer(x))
    return self.out(x)


class LogisticRegression(nnx.Module):
  """A single linear layer (softmax regression)."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.fc = torch_linear(in_features, out_features, rngs=rngs)

  def __call__(self, x):
    return self.fc(x.reshape((x.shape[0], -1)))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model as two pure functions on a params dict."""

  name: str
  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, jax.Array], jax.Array]


def from_nnx(name: str, build: Callable[[nnx.Rngs], nnx.Module]) -> ModelSpec:
  """Wraps an nnx model constructor as (init, apply) on pure dicts."""
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))

  def init(key):
    return nnx.to_pure_dict(nnx.state(build(nnx.Rngs(key)), nnx.Param))

  def apply(params, x):
    state = jax.tree.map(lambda v: v, abstract)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)(x)

  return ModelSpec(name, init, apply)


def mlp(in_features: int, hidden: int, out_features: int) -> ModelSpec:
  return from_nnx(
      f"mlp{in_features}-{hidden}-{out_features}",
      lambda rngs: MLP(in_features, hidden, out_features, rngs=rngs),
  )


def deep_mlp(in_features: int, hidden: tuple[int, ...], out_features: int) -> ModelSpec:
  return from_nnx(
      "mlp" + "-".join(map(str, (in_features, *hidden, out_features))),
      lambda rngs: DeepMLP(in_features, tuple(hidden), out_features, rngs=rngs),
  )


def logistic_regression(in_features: int, out_features: int) -> ModelSpec:
  return from_nnx(
      f"logreg{in_features}-{out_features}",
      lambda rngs: LogisticRegression(in_features, out_features, rngs=rngs),
  )


def num_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
