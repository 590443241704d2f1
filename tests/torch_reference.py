r"""A PyTorch reference of the article's homogeneity training loop.

Written from ``SPEC.md`` and the seed's PyTorch code (``seeds/000_*``: Part I
``train_homogeneity_driven`` for A-A, A-B, B-A, B-B and HYBRID; Part II
"COMPLETE"; ``train_traditional``), keeping the seed's semantics *and* its
mechanics, because this module also serves the benchmarks as "the published
code":

* the parameters are concatenated (``torch.cat`` of flattened tensors) into one
  vector ``status`` after the backprop step, and the homogeneity quantities are
  computed on that vector;
* the Table-1 derivative is built with boolean masks and indexed assignment
  into a zero tensor, the leftover elements found with ``logical_not``;
* Part I takes its homogeneity step with a *second* ``torch.optim.Adam`` over
  the same parameters, fed ``param.grad = -delta = \eta_h d``;
* Part II adds ``-\eta_h \delta = \eta_h^2 g`` to ``param.data`` directly;
* the seed's per-step monitoring (``total_bp_update``, the before/after
  distance, ``loss.item()``, the running accuracy counts) is kept when
  ``bookkeeping=True``, since it is part of what the published loop costs.

Nothing here prints. Every function takes a flat list of batches
``[(x float32, y long), ...]``: the seed's global step index
``epoch * len(train_loader) + batch_idx`` is then just the position ``k`` in
that list, and its ``iteration_counter`` is ``t = k + 2``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch import optim

EPSILON = 1e-8

PART_ONE = ("A-A", "A-B", "B-A", "B-B", "HYBRID")
VARIANTS = PART_ONE + ("COMPLETE",)
COMPLETE_LAMBDA_TYPES = ("fixed", "linear", "dynamic")


class Net(nn.Module):
  """The seed's MLP: ``fc1`` -> ReLU -> ``fc2``, torch's default init."""

  def __init__(self, input_size: int, hidden_size: int, output_size: int):
    super().__init__()
    self.fc1 = nn.Linear(input_size, hidden_size)
    self.relu = nn.ReLU()
    self.fc2 = nn.Linear(hidden_size, output_size)

  def forward(self, x):
    return self.fc2(self.relu(self.fc1(x)))


class Trace(NamedTuple):
  """What a run records.

  Attributes:
    params: the flat parameter vector (``fc1.weight, fc1.bias, fc2.weight,
      fc2.bias``, torch's order) after every step, as float32 numpy arrays; only
      the final one when ``record=False``.
    similarity: S of every step (empty for plain Adam or ``record=False``).
    homogeneity: H of every step.
    lam: λ of every step.
  """

  params: list
  similarity: list
  homogeneity: list
  lam: list


def flat_parameters(model: nn.Module) -> torch.Tensor:
  """The seed's ``status``: every parameter, flattened and concatenated."""
  return torch.cat([p.data.flatten() for p in model.parameters()]).detach()


def calculate_similarity(status, average, epsilon=EPSILON):
  """ADS: S = 1 - Σ|θ' - ā| / (ε + Σ(|θ'| + |ā|)) over the whole vector."""
  num = torch.sum(torch.abs(status - average))
  den = epsilon + torch.sum(torch.abs(status) + torch.abs(average))
  return 1 - num / den


def table_one_conditions(status, average):
  """The five Table-1 masks (Part I numbering: c3 has ā > 0, c4 has ā < 0)."""
  c1 = torch.logical_or(
      torch.logical_and(status > average, average > 0),
      torch.logical_and(status < average, average < 0),
  )
  c2 = torch.logical_or(
      torch.logical_and(status > 0, average < 0),
      torch.logical_and(status < 0, average > 0),
  )
  c3 = torch.logical_and(status == 0, average > 0)
  c4 = torch.logical_and(status == 0, average < 0)
  c5 = status == average
  return c1, c2, c3, c4, c5


def calculate_partial_derivative(status, average, homogeneity_lambda, epsilon=EPSILON):
  """Part I: d = (1 - λ)·c(θ', ā) with Table 1 and its "other" row."""
  n = torch.sum(torch.abs(status - average))
  d = epsilon + torch.sum(torch.abs(status) + torch.abs(average))
  c1, c2, c3, c4, c5 = table_one_conditions(status, average)
  scale = 1 - homogeneity_lambda
  pd = torch.zeros_like(status)
  # Indexed assignment into a zero tensor, case by case, as the seed does.
  pd[c1] = scale * (1 / d**2) * (d - n)
  pd[c2] = scale * (1 / d**2) * (d + n)
  pd[c3] = -scale / d
  pd[c4] = scale / d
  pd[c5] = 0
  remaining = torch.logical_not(
      torch.logical_or(
          torch.logical_or(torch.logical_or(c1, c2), torch.logical_or(c3, c4)), c5
      )
  )
  pd[remaining] = scale * (1 / d**2) * (
      d * torch.sign(status[remaining] - average[remaining])
      - n * torch.sign(status[remaining])
  )
  return pd


def complete_weights_update(
    status, homogeneity_learning_rate, homogeneity_lambda, average, gradients,
    epsilon=EPSILON,
):
  """Part II: pd = (1-λ)·c + λ·g_prev on c1..c5 only; returns (δ, new history).

  The Part II code numbers the zero cases the other way round (its c3 is
  θ' = 0 & ā < 0 -> +(1-λ)/D, its c4 θ' = 0 & ā > 0 -> -(1-λ)/D): the values
  per element are those of Table 1. Elements outside c1..c5 stay 0, and since
  the history becomes ``pd``, their history is dropped too.
  """
  n = torch.sum(torch.abs(status - average))
  d = epsilon + torch.sum(torch.abs(status) + torch.abs(average))
  lam = homogeneity_lambda
  pd = torch.zeros_like(status)
  c1, c2, zero_above, zero_below, c5 = table_one_conditions(status, average)
  pd[c1] = (1 - lam) / (d**2) * (d - n) + lam * gradients[c1]
  pd[c2] = (1 - lam) / (d**2) * (d + n) + lam * gradients[c2]
  pd[zero_below] = (1 - lam) / d + lam * gradients[zero_below]
  pd[zero_above] = -(1 - lam) / d + lam * gradients[zero_above]
  pd[c5] = lam * gradients[c5]
  new_gradients = pd.clone()
  delta = -homogeneity_learning_rate * pd
  return delta, new_gradients


def homogeneity_learning_rate_for(variant, learning_rate, total_steps, given=None):
  """η_h: given, or the B-variants' 2η/(ηT + 1)."""
  if variant in ("B-A", "B-B"):
    return (2 * learning_rate) / (learning_rate * total_steps + 1)
  if given is None:
    raise ValueError(f"homogeneity_learning_rate is required for {variant!r}.")
  return given


def lambda_for(variant, t, total_steps, *, lambda_type=None, lambda_value=None, beta=None):
  """λ at ``iteration_counter`` t, as the seed computes it (Python floats)."""
  if variant in ("A-A", "B-A"):
    return (t - 1) / total_steps
  if variant in ("A-B", "B-B"):
    return (t - 1) / t
  if variant == "HYBRID":
    alpha = (total_steps - t * (1 - beta) - beta) / (total_steps - 1)
    return alpha * ((t - 1) / t)
  if variant == "COMPLETE":
    if lambda_type == "fixed":
      return lambda_value
    if lambda_type == "linear":
      return (t - 1) / total_steps
    if lambda_type == "dynamic":
      return (t - 1) / t if t > 1 else 0
    raise ValueError(f"lambda_type must be one of {COMPLETE_LAMBDA_TYPES}.")
  raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")


def _device(model):
  return next(model.parameters()).device


def _monitor(model, output, target, loss, counts):
  """The seed's per-step monitoring; results unused, cost kept."""
  total_bp_update = 0
  for param in model.parameters():
    if param.grad is not None:
      total_bp_update += torch.sum(torch.abs(param.grad)).item()
  counts[0] += loss.item()
  _, predicted = torch.max(output.data, 1)
  counts[1] += target.size(0)
  counts[2] += (predicted == target).sum().item()
  return total_bp_update


def run_homogeneity(
    model: nn.Module,
    batches: Sequence,
    *,
    variant: str,
    learning_rate: float,
    homogeneity_learning_rate: float | None = None,
    total_steps: int,
    lambda_type: str | None = None,
    lambda_value: float | None = None,
    beta: float | None = None,
    average: torch.Tensor,
    record: bool = True,
    bookkeeping: bool = True,
) -> Trace:
  """Trains ``model`` in place on ``batches`` with a published variant.

  Args:
    model: the network (its parameters are the initial θ).
    batches: ``[(x, y), ...]`` in the order the seed's loader would yield them
      over all epochs; step k is ``batches[k]``.
    variant: ``"A-A"``, ``"A-B"``, ``"B-A"``, ``"B-B"``, ``"HYBRID"`` or
      ``"COMPLETE"``.
    learning_rate: η of the backprop Adam.
    homogeneity_learning_rate: η_h; ignored (computed) for B-A and B-B.
    total_steps: T, the seed's ``total_iterations``.
    lambda_type, lambda_value: COMPLETE's λ (``fixed`` needs ``lambda_value``).
    beta: HYBRID's β.
    average: the initial ā, a flat vector (the seed: a second ``Net()``).
    record: keep every step's params and S, H, λ (else only the final params).
    bookkeeping: do the seed's per-step monitoring (``.item()`` syncs etc.).

  Returns:
    A :class:`Trace`.
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
  device = _device(model)
  eta_h = homogeneity_learning_rate_for(
      variant, learning_rate, total_steps, homogeneity_learning_rate
  )
  criterion = nn.CrossEntropyLoss()
  optimizer = optim.Adam(model.parameters(), lr=learning_rate)
  # The Part II code builds this optimizer too and never steps it.
  optimizer_homogeneity = optim.Adam(model.parameters(), lr=eta_h)
  average = average.detach().clone().to(device)
  homogeneity = 1.0
  complete = variant == "COMPLETE"
  if complete:
    gradients = torch.cat([torch.zeros_like(p.data.flatten()) for p in model.parameters()])
  trace = Trace([], [], [], [])
  counts = [0.0, 0, 0]
  iteration_counter = 1
  model.train()
  for k, (data, target) in enumerate(batches):
    iteration_counter += 1
    data, target = data.to(device), target.to(device)
    # Backpropagation update.
    optimizer.zero_grad()
    output = model(data)
    loss = criterion(output, target)
    loss.backward()
    optimizer.step()
    if bookkeeping:
      _monitor(model, output, target, loss, counts)
    # Homogeneity-driven update, on the concatenated vector.
    status = flat_parameters(model)
    if bookkeeping and not complete:
      weights_before_update = status.clone()
    lam = lambda_for(
        variant, iteration_counter, total_steps,
        lambda_type=lambda_type, lambda_value=lambda_value, beta=beta,
    )
    similarity = calculate_similarity(status, average)
    homogeneity = (1 - lam) * similarity + lam * homogeneity
    if bookkeeping:
      homogeneity.item()  # the seed appends homogeneity.item() every step
    if complete:
      delta, gradients = complete_weights_update(status, eta_h, lam, average, gradients)
      current_index = 0
      for param in model.parameters():
        size = param.nelement()
        update_value = delta[current_index:current_index + size].view_as(param.data)
        param.data.add_(-eta_h * update_value)
        current_index += size
    else:
      delta = -eta_h * calculate_partial_derivative(status, average, lam)
      current_index = 0
      for param in model.parameters():
        size = param.nelement()
        update_value = delta[current_index:current_index + size].view_as(param.data)
        param.grad = -update_value
        current_index += size
      optimizer_homogeneity.step()
      optimizer_homogeneity.zero_grad()
      if bookkeeping:
        weights_after_update = flat_parameters(model)
        torch.norm(weights_before_update - weights_after_update)
    # ā from θ' (before the homogeneity step); k = epoch*len(loader)+batch_idx.
    average = (status + k * average) / (k + 1)
    optimizer.zero_grad()
    if record:
      trace.params.append(flat_parameters(model).cpu().numpy().copy())
      trace.similarity.append(float(similarity))
      trace.homogeneity.append(float(homogeneity))
      trace.lam.append(float(lam))
  if not record:
    trace.params.append(flat_parameters(model).cpu().numpy().copy())
  return trace


def run_adam(
    model: nn.Module,
    batches: Sequence,
    learning_rate: float,
    *,
    record: bool = True,
    bookkeeping: bool = True,
) -> Trace:
  """The seed's ``train_traditional``: plain Adam(η) with mean cross-entropy."""
  device = _device(model)
  criterion = nn.CrossEntropyLoss()
  optimizer = optim.Adam(model.parameters(), lr=learning_rate)
  trace = Trace([], [], [], [])
  counts = [0.0, 0, 0]
  model.train()
  for data, target in batches:
    data, target = data.to(device), target.to(device)
    optimizer.zero_grad()
    output = model(data)
    loss = criterion(output, target)
    loss.backward()
    optimizer.step()
    if bookkeeping:
      _monitor(model, output, target, loss, counts)
    if record:
      trace.params.append(flat_parameters(model).cpu().numpy().copy())
  if not record:
    trace.params.append(flat_parameters(model).cpu().numpy().copy())
  return trace


def total_iterations(train_samples: int, batch_size: int, epochs: int) -> int:
  """T = ceil(n / batch) · epochs, as the seed computes it."""
  return math.ceil(train_samples / batch_size) * epochs


def iris_data():
  """The seed's Iris split: (X_train, y_train, X_val, y_val, X_test, y_test).

  ``train_test_split(test_size=0.2, random_state=42)``, then ``test_size=0.25``
  on the rest (60/20/20), ``StandardScaler`` fitted on the training part.
  """
  from sklearn.datasets import load_iris
  from sklearn.model_selection import train_test_split
  from sklearn.preprocessing import StandardScaler

  iris = load_iris()
  x_train, x_test, y_train, y_test = train_test_split(
      iris.data, iris.target, test_size=0.2, random_state=42
  )
  x_train, x_val, y_train, y_val = train_test_split(
      x_train, y_train, test_size=0.25, random_state=42
  )
  scaler = StandardScaler()
  x_train = scaler.fit_transform(x_train)
  x_val = scaler.transform(x_val)
  x_test = scaler.transform(x_test)
  return x_train, y_train, x_val, y_val, x_test, y_test


def shuffled_batches(x, y, batch_size: int, epochs: int, seed: int) -> list:
  """The batches a ``DataLoader(shuffle=True)`` yields over ``epochs``, fixed by ``seed``."""
  dataset = torch.utils.data.TensorDataset(
      torch.tensor(np.asarray(x), dtype=torch.float32),
      torch.tensor(np.asarray(y), dtype=torch.long),
  )
  generator = torch.Generator().manual_seed(seed)
  loader = torch.utils.data.DataLoader(
      dataset, batch_size=batch_size, shuffle=True, generator=generator
  )
  return [(bx, by) for _ in range(epochs) for bx, by in loader]
