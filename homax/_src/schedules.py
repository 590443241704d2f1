r"""λ schedules and the B-variants' homogeneity learning rate.

Every schedule is a callable from the step count :math:`k = 0, 1, \dots` to
:math:`\lambda_k`, like an optax schedule. The seed's ``iteration_counter`` is
:math:`t = k + 2` at step :math:`k` (it starts at 1 and is incremented before
use); :math:`T` is ``total_steps``.

Every schedule computes λ in float32, as the seed's float32 tensors see it,
also under ``jax_enable_x64`` (float64 params then get a λ rounded to float32).
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from homax._src import derivative

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


_TRACED_HINT = (
    " Inside optax.inject_hyperparams, which turns numeric arguments into traced"
    " arrays, list it in static_args."
)


def _check_int(value, name: str, minimum: int = 1) -> int:
  """``value`` as a Python int (NumPy integers too), or a ValueError naming it."""
  if isinstance(value, jax.core.Tracer):
    raise ValueError(f"{name} must be a concrete int >= {minimum}, got a traced value.{_TRACED_HINT}")
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
  try:
    number = operator.index(value)
  except TypeError:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.") from None
  if number < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {number}.")
  return number


def _check_total_steps(total_steps, minimum: int = 1) -> int:
  return _check_int(total_steps, "total_steps", minimum)


def _check_float(value, name: str, requirement: str) -> float:
  """``value`` as a Python float: a concrete real scalar, else a ValueError naming ``name``.

  Strings, booleans, arrays of more than one element, ``None`` and traced
  values are refused; the range is the caller's to check.
  """
  if value is None:
    raise ValueError(f"{name} is required: {requirement}.")
  number = derivative._concrete_scalar(value, name, requirement)
  if number is None:
    raise ValueError(f"{name} must be a concrete number ({requirement}), got a traced value.{_TRACED_HINT}")
  return number


def _t(count) -> jnp.ndarray:
  return jnp.asarray(count, jnp.float32) + 2.0


def fixed(value: float) -> Schedule:
  r""":math:`\lambda_k = \lambda` for every step (Part II ``fixed``).

  Args:
    value: :math:`\lambda \in [0, 1]`.
  """
  value = _check_float(value, "fixed(value): value", "a float in [0, 1]")
  if not 0.0 <= value <= 1.0 or math.isnan(value):
    raise ValueError(f"fixed(value): value must be in [0, 1], got {value}.")

  def schedule(count):
    return jnp.full(jnp.shape(count), value, jnp.float32)

  return schedule


def linear(total_steps: int) -> Schedule:
  r""":math:`\lambda_k = \min((t - 1)/T, 1) = \min((k + 1)/T, 1)` (variants A-A, B-A; Part II ``linear``).

  Reaches 1 at the last step :math:`k = T - 1` and stays there, as
  ``optax.linear_schedule`` holds its end value. The seed never steps past
  :math:`T`; without the bound, a run longer than ``total_steps`` (a miscounted
  :math:`T`, or ``optax.MultiSteps``, which counts its macro-steps only) would
  get :math:`\lambda > 1`, which flips the derivative's sign and, with Part II's
  history :math:`g_k = d_k + \lambda g_{k-1}`, grows :math:`g` geometrically.
  Up to step :math:`T - 1` the bound changes no bit ((k + 1)/T ≤ 1 there).

  Args:
    total_steps: :math:`T \ge 1`, an int (NumPy integers too).
  """
  total = _check_total_steps(total_steps)

  def schedule(count):
    return jnp.minimum((_t(count) - 1.0) / total, 1.0)

  return schedule


def dynamic() -> Schedule:
  r""":math:`\lambda_k = (t - 1)/t = (k + 1)/(k + 2)` (variants A-B, B-B; Part II ``dynamic``)."""

  def schedule(count):
    t = _t(count)
    return (t - 1.0) / t

  return schedule


def hybrid(beta: float, total_steps: int) -> Schedule:
  r""":math:`\lambda_k = \alpha_t (t - 1)/t` with :math:`\alpha_t = (T - t(1 - \beta) - \beta)/(T - 1)` (HYBRID).

  The article sweeps :math:`\beta \in [0.5, 1.01]`; :math:`\beta > 1` makes
  :math:`\lambda` exceed 1 late in training, as published, so any finite
  :math:`\beta > 0` is accepted, and the formula is not bounded: past
  :math:`k = T - 1`, where the seed stops, it goes on as written (HYBRID is a
  Part I variant, without history, so λ outside [0, 1] changes the size and
  sign of the derivative but does not compound).

  Args:
    beta: :math:`\beta > 0`.
    total_steps: :math:`T \ge 2` (:math:`\alpha` divides by :math:`T - 1`).
  """
  beta = _check_float(beta, "hybrid: beta", "a finite float > 0")
  if not beta > 0.0 or math.isinf(beta):
    raise ValueError(f"hybrid: beta must be a finite float > 0, got {beta}.")
  total = _check_total_steps(total_steps, minimum=2)

  def schedule(count):
    t = _t(count)
    alpha = (total - t * (1.0 - beta) - beta) / (total - 1.0)
    return alpha * ((t - 1.0) / t)

  return schedule


def dynamic_homogeneity_lr(learning_rate: float, total_steps: int) -> float:
  r"""The B-variants' homogeneity learning rate :math:`\eta_h = 2\eta/(\eta T + 1)`.

  Args:
    learning_rate: :math:`\eta > 0`, Adam's learning rate.
    total_steps: :math:`T \ge 1`.
  """
  lr = _check_float(
      learning_rate, "learning_rate",
      "a finite float > 0 (η_h = 2η/(ηT + 1) is computed from it once, so it cannot be a schedule)")
  if not lr > 0.0 or math.isinf(lr):
    raise ValueError(f"learning_rate must be a finite float > 0, got {learning_rate!r}.")
  total = _check_total_steps(total_steps)
  return (2.0 * lr) / (lr * total + 1.0)


LAMBDA_TYPES = ("fixed", "linear", "dynamic", "hybrid")
