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
  """in → h → h → … → out with ReLU (the benchmarks' 784→1024→1024→10)."""

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


# --------------------------------------------------------------------------
# Seed 002 (Fashion-MNIST MLPs and CNNs) and seed 003 (the NumPy two-conv CNN).

_ACTIVATIONS = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def _activation(name: str):
  if name not in _ACTIVATIONS:
    raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {name!r}.")
  return _ACTIVATIONS[name]


def torch_conv(in_channels: int, out_channels: int, kernel_size: int, *, rngs: nnx.Rngs,
               init=None) -> nnx.Conv:
  """A 'valid', stride-1 ``nnx.Conv`` with torch.nn.Conv2d's default init.

  torch's default for Conv2d weights and biases is U(±1/√fan_in) with
  ``fan_in = in_channels · k · k``; ``init`` replaces it (seed 003 draws every
  parameter from U(±bound)).
  """
  init = init or torch_uniform(in_channels * kernel_size * kernel_size)
  return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), padding="VALID",
                  kernel_init=init, bias_init=init, rngs=rngs)


def _as_image(x):
  """(n, 784) or (n, 28, 28) or (n, 28, 28, 1) → NHWC (n, 28, 28, 1)."""
  return x.reshape((x.shape[0], 28, 28, 1))


def _flatten_nchw(x):
  # torch flattens NCHW tensors (`.view(n, -1)`); flattening in the same
  # order keeps the linear layer's weights interchangeable with torch's.
  return jnp.transpose(x, (0, 3, 1, 2)).reshape((x.shape[0], -1))


def _max_pool(x):
  # torch.nn.MaxPool2d(2, 2): floor mode, i.e. a trailing odd row is dropped.
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


class Seed002MLP(nnx.Module):
  """Seed 002's ``model_mlp1`` / ``model_mlp2`` (and their sigmoid variants).

  ``mlp1``: 784 → 64 → act → 10. ``mlp2``: 784 → 16 → act → 64 → 10; the seed
  puts **no** activation after its second layer (``hidden2`` goes straight to
  ``fc10``), and that is kept.
  """

  def __init__(self, hidden: tuple[int, ...], activation: str = "relu", *, rngs: nnx.Rngs):
    sizes = (784, *hidden)
    layers = [torch_linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    self.layers = nnx.List(layers) if hasattr(nnx, "List") else layers
    self.out = torch_linear(sizes[-1], 10, rngs=rngs)
    self.activation = activation

  def __call__(self, x):
    act = _activation(self.activation)
    x = x.reshape((x.shape[0], -1))
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i == 0:  # the seed activates the first hidden layer only
        x = act(x)
    return self.out(x)


# name -> ((in, out, kernel, activate) per conv, index of the convs followed by a 2×2 max-pool).
# Shapes on 28×28 inputs: cnn3 26→20→pool 10→6→pool 3; cnn4 26→22→20→pool 10→6→pool 3;
# cnn5 26→24→22→20→pool 10→8→6→pool 3; all end with 16 channels × 3 × 3 = 144 features.
_SEED002_CNNS = {
    # The seed's cnn3 applies no activation after its last convolution (fc3 → mp2 directly).
    "cnn3": (((1, 16, 3, True), (16, 8, 7, True), (8, 16, 5, False)), (1, 2)),
    "cnn4": (((1, 16, 3, True), (16, 8, 5, True), (8, 8, 3, True), (8, 16, 5, True)), (2, 3)),
    "cnn5": (((1, 16, 3, True), (16, 8, 3, True), (8, 8, 3, True), (8, 8, 3, True),
              (8, 16, 3, True), (16, 16, 3, True)), (3, 5)),
}


class Seed002CNN(nnx.Module):
  """Seed 002's ``model_cnn3`` / ``cnn4`` / ``cnn5``: valid 3×3…7×7 convs, two pools, 144 → 10."""

  def __init__(self, name: str, activation: str = "relu", *, rngs: nnx.Rngs):
    convs, pools = _SEED002_CNNS[name]
    layers = [torch_conv(i, o, k, rngs=rngs) for i, o, k, _ in convs]
    self.convs = nnx.List(layers) if hasattr(nnx, "List") else layers
    self.activate = tuple(a for *_, a in convs)
    self.pools = pools
    self.fc10 = torch_linear(144, 10, rngs=rngs)
    self.activation = activation

  def __call__(self, x):
    act = _activation(self.activation)
    x = _as_image(x)
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if self.activate[i]:
        x = act(x)
      if i in self.pools:
        x = _max_pool(x)
    return self.fc10(_flatten_nchw(x))


class Seed003CNN(nnx.Module):
  """Seed 003's NumPy CNN: conv 5×5 (1→8), ReLU, pool, conv 5×5 (8→8), ReLU, pool, 128 → 10.

  28 → 24 → pool 12 → 8 → pool 4; 8 × 4 × 4 = 128 features, flattened in
  NCHW order as the seed's ``g.reshape((N, -1))``.
  """

  def __init__(self, bound: float | None = None, *, rngs: nnx.Rngs):
    init = None if bound is None else _uniform_bound(bound)
    self.c1 = torch_conv(1, 8, 5, rngs=rngs, init=init)
    self.c2 = torch_conv(8, 8, 5, rngs=rngs, init=init)
    self.f = nnx.Linear(128, 10, kernel_init=init or torch_uniform(128),
                        bias_init=init or torch_uniform(128), rngs=rngs)

  def __call__(self, x):
    x = _max_pool(jax.nn.relu(self.c1(_as_image(x))))
    x = _max_pool(jax.nn.relu(self.c2(x)))
    return self.f(_flatten_nchw(x))


def _uniform_bound(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


SEED002_MODELS = ("mlp1", "mlp2", "cnn3", "cnn4", "cnn5")


def seed002(name: str, activation: str = "relu") -> ModelSpec:
  """Seed 002's Fashion-MNIST model ``name`` (one of :data:`SEED002_MODELS`).

  Inputs ``(n, 784)`` or ``(n, 28, 28, 1)``; torch's default init; ``activation``
  ``"relu"`` or ``"sigmoid"`` (the seed's ``*_sigmoid`` twins).
  """
  _activation(activation)
  if name == "mlp1":
    build = lambda rngs: Seed002MLP((64,), activation, rngs=rngs)
  elif name == "mlp2":
    build = lambda rngs: Seed002MLP((16, 64), activation, rngs=rngs)
  elif name in _SEED002_CNNS:
    build = lambda rngs: Seed002CNN(name, activation, rngs=rngs)
  else:
    raise ValueError(f"seed 002 has models {SEED002_MODELS}, not {name!r}.")
  suffix = "" if activation == "relu" else f"-{activation}"
  return from_nnx(f"seed002-{name}{suffix}", build)


def seed003_cnn(bound: float | None = None) -> ModelSpec:
  """Seed 003's two-conv CNN on ``(n, 28, 28, 1)`` or ``(n, 784)`` inputs.

  ``bound=None`` uses torch's default init; a float draws every parameter
  from U(-bound, bound) as the seed's ``initialize_theta(bound)`` does (its
  search started from ``bound=0.01``).
  """
  return from_nnx("seed003-cnn" if bound is None else f"seed003-cnn-u{bound:g}",
                  lambda rngs: Seed003CNN(bound, rngs=rngs))
