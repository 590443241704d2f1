"""The article's published variants, defined once.

Used by :func:`paper_optimizer`, the experiments and the docs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

from homax._src import schedules
from homax._src import transform


class Variant(NamedTuple):
  """One published variant.

  Attributes:
    name: the article's label.
    part: 1 (restricted, Adam step, no history) or 2 (complete, history).
    lambda_type: ``"linear"``, ``"dynamic"``, ``"hybrid"`` or ``None`` when
      the caller chooses (COMPLETE).
    computes_learning_rate: True when η_h = 2η/(ηT + 1) (B-A, B-B).
  """

  name: str
  part: int
  lambda_type: str | None
  computes_learning_rate: bool


VARIANTS: dict[str, Variant] = {
    "A-A": Variant("A-A", 1, "linear", False),
    "A-B": Variant("A-B", 1, "dynamic", False),
    "B-A": Variant("B-A", 1, "linear", True),
    "B-B": Variant("B-B", 1, "dynamic", True),
    "HYBRID": Variant("HYBRID", 1, "hybrid", False),
    "COMPLETE": Variant("COMPLETE", 2, None, False),
}

COMPLETE_LAMBDA_TYPES = ("fixed", "linear", "dynamic")


def lambda_schedule_for(lambda_type: str, *, total_steps: int, lambda_value=None, beta=None):
  """The λ schedule named ``lambda_type`` ("fixed", "linear", "dynamic", "hybrid").

  Args:
    lambda_type: the schedule's name.
    total_steps: :math:`T` (used by "linear" and "hybrid"; an int >= 1 for
      every type).
    lambda_value: λ for "fixed", in [0, 1] (required there, an error elsewhere).
    beta: :math:`\beta > 0` for "hybrid" (required there, an error elsewhere).
  """
  if lambda_type not in schedules.LAMBDA_TYPES:
    raise ValueError(
        f"lambda_type must be one of {schedules.LAMBDA_TYPES}, got {lambda_type!r}."
    )
  schedules._check_total_steps(total_steps)
  if lambda_value is not None and lambda_type != "fixed":
    raise ValueError(
        f"lambda_value applies to lambda_type='fixed' only, not to lambda_type={lambda_type!r}."
    )
  if beta is not None and lambda_type != "hybrid":
    raise ValueError(
        f"beta applies to lambda_type='hybrid' only, not to lambda_type={lambda_type!r}."
    )
  if lambda_type == "fixed":
    # Checked here too so that the message names the caller's argument,
    # not schedules.fixed's `value`.
    value = schedules._check_float(
        lambda_value, "lambda_value", "a float in [0, 1] when lambda_type='fixed'")
    if not 0.0 <= value <= 1.0:
      raise ValueError(
          f"lambda_value must be a float in [0, 1] for lambda_type='fixed', got {lambda_value!r}."
      )
    return schedules.fixed(lambda_value)
  if lambda_type == "linear":
    return schedules.linear(total_steps)
  if lambda_type == "dynamic":
    return schedules.dynamic()
  if beta is None:
    raise ValueError("beta is required for the HYBRID variant (a float > 0).")
  return schedules.hybrid(beta, total_steps)


def paper_homogeneity_learning_rate(
    variant: str, *, learning_rate: float, total_steps: int,
    homogeneity_learning_rate: float | None = None,
) -> float:
  """η_h as the seed sets it for ``variant`` (given, or 2η/(ηT + 1) for B-*).

  Args:
    variant: one of ``homax.VARIANTS``.
    learning_rate: η, Adam's learning rate (> 0).
    total_steps: T.
    homogeneity_learning_rate: η_h (> 0); required except for B-A and B-B,
      where giving it is an error.
  """
  spec = _variant(variant)
  transform._check_learning_rate(learning_rate)
  schedules._check_total_steps(total_steps)
  if spec.computes_learning_rate:
    if homogeneity_learning_rate is not None:
      raise ValueError(
          f"homogeneity_learning_rate must not be given for variant {variant!r}:"
          " B-A and B-B compute it as 2η/(η·T + 1)."
      )
    return schedules.dynamic_homogeneity_lr(learning_rate, total_steps)
  if homogeneity_learning_rate is None:
    raise ValueError(
        f"homogeneity_learning_rate is required for variant {variant!r} (a float > 0)."
    )
  transform._check_learning_rate(homogeneity_learning_rate, "homogeneity_learning_rate")
  return homogeneity_learning_rate


def _variant(variant: str) -> Variant:
  if not isinstance(variant, str) or variant not in VARIANTS:
    raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}.")
  return VARIANTS[variant]


def paper_optimizer(
    variant: str,
    *,
    learning_rate: float,
    homogeneity_learning_rate: float | None = None,
    total_steps: int,
    lambda_type: str | None = None,
    lambda_value: float | None = None,
    beta: float | None = None,
    initial_average: Any = None,
    rule: str | None = None,
    direction: str | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam followed by the homogeneity step of a published variant.

  ============  ======  ============================  =========================
  variant       part    :math:`\lambda_k`             :math:`\eta_h`
  ============  ======  ============================  =========================
  A-A           I       :math:`(t-1)/T`               given
  A-B           I       :math:`(t-1)/t`               given
  B-A           I       :math:`(t-1)/T`               :math:`2\eta/(\eta T+1)`
  B-B           I       :math:`(t-1)/t`               :math:`2\eta/(\eta T+1)`
  HYBRID        I       :math:`\alpha_t (t-1)/t`      given
  COMPLETE      II      fixed / linear / dynamic      given
  ============  ======  ============================  =========================

  with :math:`t = k + 2`. Part I: ``rule="paper"``, no history, a separate
  Adam(:math:`\eta_h`) fed :math:`\eta_h d_k`, descending. Part II:
  ``rule="paper-full"``, history, :math:`\theta' + \eta_h^2 g_k` (ascending).
  The base optimizer is ``optax.adam(learning_rate)`` with torch's defaults.
  Given the same initial weights, initial average and batches, the result
  follows the seed's PyTorch code step for step (see ``tests/test_seed_equivalence.py``).

  Args:
    variant: one of ``"A-A"``, ``"A-B"``, ``"B-A"``, ``"B-B"``, ``"HYBRID"``,
      ``"COMPLETE"``.
    learning_rate: :math:`\eta`, Adam's learning rate (> 0).
    homogeneity_learning_rate: :math:`\eta_h` (> 0); required except for B-A and
      B-B, where passing it is an error.
    total_steps: :math:`T = \lceil n_\text{train}/\text{batch}\rceil \cdot \text{epochs}`.
    lambda_type: COMPLETE: ``"fixed"``, ``"linear"`` or ``"dynamic"`` (required).
      A Part I variant's type is fixed by the variant: ``None`` (default), or
      that type itself.
    lambda_value: λ for ``lambda_type="fixed"``, in [0, 1]; ``None`` (default)
      otherwise.
    beta: HYBRID's :math:`\beta` (> 0; required there); ``None`` (default) otherwise.
    initial_average: :math:`\bar a` before the first step (see :func:`homogeneity`;
      default ``None``: zeros);
      the seed uses a second, independently initialised model.
    rule: ablation only: replaces the variant's rule (``"paper"`` in Part I,
      ``"paper-full"`` in Part II), e.g. by ``"exact"``. ``None`` keeps the paper's.
    direction: ablation only: replaces the variant's direction (``"descend"``
      in Part I, ``"ascend"`` in Part II). ``None`` keeps the paper's.
  """
  spec = _variant(variant)
  transform._check_learning_rate(learning_rate)
  schedules._check_total_steps(total_steps)
  eta_h = paper_homogeneity_learning_rate(
      variant, learning_rate=learning_rate, total_steps=total_steps,
      homogeneity_learning_rate=homogeneity_learning_rate,
  )
  if spec.part == 2:
    if lambda_type not in COMPLETE_LAMBDA_TYPES:
      raise ValueError(
          f"lambda_type must be one of {COMPLETE_LAMBDA_TYPES} for COMPLETE, got {lambda_type!r}."
      )
    if beta is not None:
      raise ValueError("beta applies to HYBRID only, not to 'COMPLETE'.")
    if lambda_value is not None and lambda_type != "fixed":
      raise ValueError(
          "lambda_value applies to lambda_type='fixed' only, not to"
          f" lambda_type={lambda_type!r}."
      )
    lam = lambda_schedule_for(lambda_type, total_steps=total_steps, lambda_value=lambda_value)
    homog = transform.homogeneity(
        eta_h, lam, rule="paper-full" if rule is None else rule, history=True,
        step="sgd", direction="ascend" if direction is None else direction,
        initial_average=initial_average,
    )
  else:
    if lambda_type is not None and lambda_type != spec.lambda_type:
      raise ValueError(
          f"lambda_type is fixed by variant {variant!r} ({spec.lambda_type!r}); got {lambda_type!r}."
      )
    if variant != "HYBRID" and beta is not None:
      raise ValueError(f"beta applies to HYBRID only, not to {variant!r}.")
    lam = lambda_schedule_for(spec.lambda_type, total_steps=total_steps, beta=beta)
    homog = transform.homogeneity(
        eta_h, lam, rule="paper" if rule is None else rule, history=False,
        step="adam", direction="descend" if direction is None else direction,
        initial_average=initial_average,
    )
  if spec.part == 1 and lambda_value is not None:
    raise ValueError(f"lambda_value applies to COMPLETE with lambda_type='fixed', not to {variant!r}.")
  base = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
  return optax.chain(base, homog)


def total_steps(train_samples: int, batch_size: int, epochs: int) -> int:
  """:math:`T = \\lceil n/b \\rceil \\cdot` epochs, as the seed computes it.

  Args:
    train_samples: n, the training set's size.
    batch_size: b.
    epochs: the number of epochs.

  Each must be an int >= 1 (NumPy integers too); a ``ValueError`` names the one
  that is not.
  """
  n = schedules._check_int(train_samples, "train_samples")
  b = schedules._check_int(batch_size, "batch_size")
  e = schedules._check_int(epochs, "epochs")
  return -(-n // b) * e
