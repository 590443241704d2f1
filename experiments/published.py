"""The article's published runs (``published_results.csv``, copied from the seed's logs).

The CSV is the project's shared table of published numbers with one
correction, checked against the log (``seeds/000``, "Sample [A-B-MNIST] 19"):
that run's training times are 78.10 s (homogeneity) and 77.39 s (Adam); the
shared table has 77.39 s and a blank. No result of this project reads the times.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib

import homax

CSV_PATH = pathlib.Path(__file__).with_name("published_results.csv")

# Training-set size of each published protocol: Iris 150 → 90/30/30; MNIST
# 60k → 70 % = 42000 for training.
TRAIN_SIZE = {"iris": 90, "mnist": 42000}


def _float(text: str) -> float | None:
  return float(text) if text.strip() else None


@dataclasses.dataclass(frozen=True)
class Row:
  """One published run."""

  dataset: str
  variant: str
  sample: str
  epochs: int
  learning_rate: float
  homogeneity_learning_rate: float
  batch_size: int
  total_iterations: int
  hidden_size: int
  lambda_type: str | None
  lambda_value: float | None
  beta: float | None
  acc_homogeneity: float
  acc_adam: float
  seconds_homogeneity: float | None
  seconds_adam: float | None

  @property
  def id(self) -> str:
    """A unique, file-name-safe name, e.g. ``A-B-5`` or ``HYBRID-beta0.999``."""
    if self.variant == "HYBRID":
      return f"HYBRID-beta{self.beta:g}"
    return f"{self.variant}-{self.sample}"

  @property
  def label(self) -> str:
    if self.variant == "HYBRID":
      return f"HYBRID β={self.beta:g}"
    extra = ""
    if self.variant == "COMPLETE":
      extra = f" ({self.lambda_type}{'' if self.lambda_value is None else ' ' + format(self.lambda_value, 'g')})"
    return f"{self.variant} #{self.sample}{extra}"

  def optimizer(self, initial_average=None, *, rule=None, direction=None):
    """Adam + the homogeneity step of this row, as :func:`homax.paper_optimizer` builds it."""
    spec = homax.VARIANTS[self.variant]
    return homax.paper_optimizer(
        self.variant,
        learning_rate=self.learning_rate,
        homogeneity_learning_rate=None if spec.computes_learning_rate else self.homogeneity_learning_rate,
        total_steps=self.total_iterations,
        lambda_type=self.lambda_type if self.variant == "COMPLETE" else None,
        lambda_value=self.lambda_value,
        beta=self.beta,
        initial_average=initial_average,
        rule=rule,
        direction=direction,
    )

  def check(self) -> None:
    """Checks T and η_h against the protocol, so that a typo in the CSV cannot pass."""
    n = TRAIN_SIZE[self.dataset]
    total = homax.total_steps(n, self.batch_size, self.epochs)
    if total != self.total_iterations:
      raise ValueError(f"{self.id}: T = {total} from the protocol, {self.total_iterations} in the CSV.")
    if homax.VARIANTS[self.variant].computes_learning_rate:
      eta_h = homax.dynamic_homogeneity_lr(self.learning_rate, total)
      if not math.isclose(eta_h, self.homogeneity_learning_rate, rel_tol=1e-9):
        raise ValueError(f"{self.id}: η_h = {eta_h} from 2η/(ηT+1), {self.homogeneity_learning_rate} in the CSV.")


def load(path: pathlib.Path | str = CSV_PATH) -> list[Row]:
  """All published rows, in the CSV's order."""
  path = pathlib.Path(path)
  rows = []
  with path.open(newline="") as f:
    for i, rec in enumerate(csv.DictReader(f), start=2):
      try:
        rows.append(Row(
            dataset=rec["dataset"],
            variant=rec["variant"],
            sample=rec["sample"],
            epochs=int(rec["epochs"]),
            learning_rate=float(rec["learning_rate"]),
            homogeneity_learning_rate=float(rec["homogeneity_learning_rate"]),
            batch_size=int(rec["batch_size"]),
            total_iterations=int(rec["total_iterations"]),
            hidden_size=int(rec["hidden_size"]),
            lambda_type=rec["lambda_type"] or None,
            lambda_value=_float(rec["lambda_value"]),
            beta=_float(rec["beta"]),
            acc_homogeneity=float(rec["acc_homogeneity"]),
            acc_adam=float(rec["acc_adam"]),
            seconds_homogeneity=_float(rec["seconds_homogeneity"]),
            seconds_adam=_float(rec["seconds_adam"]),
        ))
      except (KeyError, ValueError) as e:
        raise ValueError(f"{path}:{i}: cannot read published row: {e}") from e
  return rows
