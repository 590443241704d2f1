r"""λ schedules and the B-variants' homogeneity learning rate.

Every schedule is a callable from the step count :math:`k = 0, 1, \dots` to
:math:`\lambda_k`, like an optax schedule. The seed's ``iteration_counter`` is
:math:`t = k + 2` at step :math:`k` (it starts at 1 and is incremented before
use); :math:`T` is ``total_steps``.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import jax.numpy as jnp
import numpy as np

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def _check_int(value, name: str, minimum: int = 1) -> int:
  """``value`` as a Python int (NumPy integers too), or a ValueError naming it."""
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


def _t(count) -> jnp.ndarray:
  return jnp.asarray(count, jnp.float32) + 2.0


def fixed(value: float) -> Schedule:
  r""":math:`\lambda_k = \lambda` for every step (Part II ``fixed``).

  Args:
    value: :math:`\lambda \in [0, 1]`.
  """
  if value is None:
    raise ValueError("fixed(value): value is required (a float in [0, 1]).")
  value = float(value)
  if not 0.0 <= value <= 1.0 or math.isnan(value):
    raise ValueError(f"fixed(value): value must be in [0, 1], got {value}.")

  def schedule(count):
    return jnp.full(jnp.shape(count), value, jnp.float32)

  return schedule


def linear(total_steps: int) -> Schedule:
  r""":math:`\lambda_k = (t - 1)/T = (k + 1)/T` (variants A-A, B-A; Part II ``linear``).

  Reaches 1 at the last step :math:`k = T - 1`.

  Args:
    total_steps: :math:`T \ge 1`, an int (NumPy integers too).
  """
  total = _check_total_steps(total_steps)

  def schedule(count):
    return (_t(count) - 1.0) / total

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
  :math:`\beta > 0` is accepted.

  Args:
    beta: :math:`\beta > 0`.
    total_steps: :math:`T \ge 2` (:math:`\alpha` divides by :math:`T - 1`).
  """
  if beta is None:
    raise ValueError("hybrid(beta, total_steps): beta is required (a float > 0).")
  beta = float(beta)
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
  lr = float(learning_rate)
  if not lr > 0.0 or math.isinf(lr):
    raise ValueError(f"learning_rate must be a finite float > 0, got {learning_rate!r}.")
  total = _check_total_steps(total_steps)
  return (2.0 * lr) / (lr * total + 1.0)


LAMBDA_TYPES = ("fixed", "linear", "dynamic", "hybrid")
