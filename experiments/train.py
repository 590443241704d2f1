"""Paired training: a homogeneity arm and a plain-Adam arm, many seeds at once.

Both arms of a seed start from the same initial weights and see the same
batches in the same order: one jitted step updates both, so the only
difference between them is the homogeneity step. Seeds run side by side with
``jax.vmap``; an epoch is one ``lax.scan`` over device-resident batch indices
(no host sync per step). The host loops over epochs only, which is where
progress is shown and checkpoints are taken.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import homax
from experiments.models import ModelSpec

PyTree = Any


class Carry(NamedTuple):
  """Everything a paired run carries from one epoch to the next (per seed)."""

  params_h: PyTree
  state_h: PyTree
  params_a: PyTree
  state_a: PyTree


@dataclasses.dataclass
class History:
  """Per-epoch and per-step records, arrays with a leading seed axis."""

  train_loss_h: list = dataclasses.field(default_factory=list)
  train_loss_a: list = dataclasses.field(default_factory=list)
  train_acc_h: list = dataclasses.field(default_factory=list)
  train_acc_a: list = dataclasses.field(default_factory=list)
  val_loss_h: list = dataclasses.field(default_factory=list)
  val_loss_a: list = dataclasses.field(default_factory=list)
  val_acc_h: list = dataclasses.field(default_factory=list)
  val_acc_a: list = dataclasses.field(default_factory=list)
  similarity: list = dataclasses.field(default_factory=list)
  homogeneity: list = dataclasses.field(default_factory=list)
  lam: list = dataclasses.field(default_factory=list)

  def arrays(self) -> dict[str, np.ndarray]:
    """Per-epoch fields as (seeds, epochs); per-step fields as (seeds, steps)."""
    out = {}
    for f in dataclasses.fields(self):
      values = getattr(self, f.name)
      if not values:
        continue
      axis = 1
      if values[0].ndim == 1:
        out[f.name] = np.stack(values, axis=axis)
      else:
        out[f.name] = np.concatenate(values, axis=axis)
    return out


# Up to this many elements, `permutation` ranks by counting instead of sorting.
# For 32 vmapped seeds on the noisy 2-core CPU of benchmarks/RESULTS.md counting
# measured 0.6x (a 5-repetition run) to 2.8x the speed of the sort at n = 120
# (Iris), faster at 300 in the recorded runs (0.66x in one printed-only run),
# and 8-14x slower at 1,000 (n² compares):
# the shuffle table of `python -m benchmarks.bench_seeds`.
COUNTING_PERMUTATION_MAX = 256


def permutation(key: jax.Array, n: int) -> jax.Array:
  """``jax.random.permutation(key, n)``, bit for bit, faster for small ``n``.

  jax shuffles by stable-sorting ``arange(n)`` by fresh random uint32 keys,
  ``ceil(3·log n / log(2³²-1))`` rounds (one for n < 1,600). XLA's CPU sort
  is slow for short rows, and vmapping over seeds makes it one sort per seed
  and epoch. For ``n <= COUNTING_PERMUTATION_MAX`` each round here computes
  the same stable order by counting: element i goes to position
  ``#{j: b_j < b_i} + #{j < i: b_j = b_i}`` (b: the round's keys, drawn
  exactly as jax draws them), an n×n comparison and a scatter. Larger ``n``
  calls ``jax.random.permutation``. ``tests/test_train.py`` checks equality.
  """
  if n > COUNTING_PERMUTATION_MAX:
    return jax.random.permutation(key, n)
  rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
  x = jnp.arange(n)
  for _ in range(rounds):
    key, subkey = jax.random.split(key)
    x = stable_sort_by(jax.random.bits(subkey, (n,), jnp.uint32), x)
  return x


def stable_sort_by(keys: jax.Array, values: jax.Array) -> jax.Array:
  """``lax.sort_key_val(keys, values)[1]`` for 1-D arrays, by counting (n² compares).

  Element i goes to ``#{j: k_j < k_i} + #{j < i: k_j = k_i}``: the order of
  a stable sort, ties kept in place.
  """
  n = keys.shape[0]
  # before[j, i]: element j goes before element i, i.e. k_j < k_i, or k_j = k_i
  # and j < i. The tie-break is a constant mask, and the count runs down the
  # columns (axis 0), which XLA:CPU fuses with the comparison: 7-25 % faster
  # than a row count with the tie-break computed (32 vmapped seeds, n = 90-300;
  # benchmarks/RESULTS.md §5 item 4).
  earlier = np.triu(np.ones((n, n), bool), 1)  # earlier[j, i] = j < i
  before = jnp.where(earlier, keys[:, None] <= keys[None, :], keys[:, None] < keys[None, :])
  rank = jnp.sum(before, axis=0, dtype=jnp.int32)
  return jnp.zeros_like(values).at[rank].set(values, unique_indices=True)


def cross_entropy(logits, labels, mask):
  """Mean softmax cross-entropy over the real (mask = 1) samples of a batch."""
  per = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@dataclasses.dataclass(frozen=True)
class PairedTrainer:
  """Builds and runs a paired homogeneity-vs-Adam experiment.

  Attributes:
    model: the network as pure (init, apply) functions.
    make_homogeneity_tx: ``initial_average -> optax transformation`` (Adam +
      homogeneity); called with ``None`` for the update and with each seed's
      average for ``init``.
    adam_tx: the plain arm's optimizer.
    batch_size: samples per step; the last batch of an epoch may be smaller,
      as with ``DataLoader(drop_last=False)``.
  """

  model: ModelSpec
  make_homogeneity_tx: Callable[[Any], optax.GradientTransformation]
  adam_tx: optax.GradientTransformation
  batch_size: int

  def steps_per_epoch(self, n_train: int) -> int:
    return math.ceil(n_train / self.batch_size)

  def init(self, seeds: np.ndarray) -> tuple[Carry, jax.Array]:
    """Initial carry and per-seed shuffle keys for integer ``seeds``.

    For seed ``s``: weights from ``fold_in(key(s), 0)``; the initial running
    average from an independent second initialisation, ``fold_in(key(s), 1)``
    (the seed's ``average_model = Net()``); the batch order from
    ``fold_in(key(s), 2)``. Both arms share the weights and the batch order.
    """
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))

    def one(key):
      params = self.model.init(jax.random.fold_in(key, 0))
      average = self.model.init(jax.random.fold_in(key, 1))
      state_h = self.make_homogeneity_tx(average).init(params)
      state_a = self.adam_tx.init(params)
      return Carry(params, state_h, params, state_a), jax.random.fold_in(key, 2)

    return jax.jit(jax.vmap(one))(keys)

  def epoch_fn(self, n_train: int):
    """``(carry, shuffle_key, epoch, data) -> (carry, records)`` for one seed."""
    tx_h = self.make_homogeneity_tx(None)
    tx_a = self.adam_tx
    apply = self.model.apply
    b = self.batch_size
    steps = self.steps_per_epoch(n_train)
    pad = steps * b - n_train

    def loss_fn(params, x, y, m):
      logits = apply(params, x)
      return cross_entropy(logits, y, m), logits

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def evaluate(params, x, y):
      logits = apply(params, x)
      loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
      acc = 100.0 * jnp.mean(jnp.argmax(logits, -1) == y)
      return loss, acc

    def run(carry: Carry, shuffle_key, epoch, xtr, ytr, xval, yval):
      perm = permutation(jax.random.fold_in(shuffle_key, epoch), n_train)
      idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(steps, b)
      mask = jnp.concatenate([jnp.ones((n_train,)), jnp.zeros((pad,))]).reshape(steps, b)

      def step(c: Carry, batch):
        i, m = batch
        x, y = xtr[i], ytr[i]
        (loss_h, logits_h), g_h = grad_fn(c.params_h, x, y, m)
        u_h, s_h = tx_h.update(g_h, c.state_h, c.params_h)
        (loss_a, logits_a), g_a = grad_fn(c.params_a, x, y, m)
        u_a, s_a = tx_a.update(g_a, c.state_a, c.params_a)
        new = Carry(
            optax.apply_updates(c.params_h, u_h), s_h,
            optax.apply_updates(c.params_a, u_a), s_a,
        )
        met = homax.metrics(s_h)
        rec = dict(
            loss_h=loss_h, loss_a=loss_a,
            correct_h=jnp.sum((jnp.argmax(logits_h, -1) == y) * m),
            correct_a=jnp.sum((jnp.argmax(logits_a, -1) == y) * m),
            similarity=met["similarity"], homogeneity=met["homogeneity"], lam=met["lambda"],
        )
        return new, rec

      carry, rec = jax.lax.scan(step, carry, (idx, mask))
      val_loss_h, val_acc_h = evaluate(carry.params_h, xval, yval)
      val_loss_a, val_acc_a = evaluate(carry.params_a, xval, yval)
      out = dict(
          # The seed averages batch losses over the epoch, and counts accuracy over samples.
          train_loss_h=jnp.mean(rec["loss_h"]), train_loss_a=jnp.mean(rec["loss_a"]),
          train_acc_h=100.0 * jnp.sum(rec["correct_h"]) / n_train,
          train_acc_a=100.0 * jnp.sum(rec["correct_a"]) / n_train,
          val_loss_h=val_loss_h, val_loss_a=val_loss_a,
          val_acc_h=val_acc_h, val_acc_a=val_acc_a,
          similarity=rec["similarity"], homogeneity=rec["homogeneity"], lam=rec["lam"],
      )
      return carry, out

    return run, evaluate

  def compiled_epoch(self, n_train: int):
    run, evaluate = self.epoch_fn(n_train)
    vrun = jax.vmap(run, in_axes=(0, 0, None, None, None, None, None))
    return jax.jit(vrun, donate_argnums=(0,)), jax.jit(
        jax.vmap(evaluate, in_axes=(0, None, None))
    )


@dataclasses.dataclass
class PairedResult:
  """Final accuracies per seed (percent) and the run's histories."""

  seeds: np.ndarray
  test_acc_h: np.ndarray
  test_acc_a: np.ndarray
  test_loss_h: np.ndarray
  test_loss_a: np.ndarray
  history: dict[str, np.ndarray]
  seconds: float
  final_params_h: PyTree = None
  final_params_a: PyTree = None


def train_paired(
    trainer: PairedTrainer,
    data,
    *,
    epochs: int,
    seeds: np.ndarray,
    on_epoch_end: Callable[[int, Carry, History], None] | None = None,
    resume: tuple[int, Carry, History] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PairedResult:
  """Trains both arms of every seed for ``epochs`` epochs and tests them.

  Args:
    trainer: the experiment.
    data: an ``experiments.datasets.Dataset``.
    epochs: number of epochs.
    seeds: integer seeds, one model pair each, trained side by side (vmap).
    on_epoch_end: called after each epoch with (epochs done, carry, history),
      e.g. to checkpoint.
    resume: (epochs done, carry, history) to continue from, e.g. a checkpoint.
    progress: called with 1 after each epoch (a progress bar's ``update``).
  """
  seeds = np.asarray(seeds)
  xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xval, yval = jnp.asarray(data.x_val), jnp.asarray(data.y_val)
  xte, yte = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  n_train = int(xtr.shape[0])
  run, evaluate = trainer.compiled_epoch(n_train)
  carry, shuffle_keys = trainer.init(seeds)
  start, history = 0, History()
  if resume is not None:
    start, carry, history = resume
  t0 = time.perf_counter()
  for epoch in range(start, epochs):
    carry, out = run(carry, shuffle_keys, epoch, xtr, ytr, xval, yval)
    out = jax.device_get(out)
    for name, value in out.items():
      getattr(history, name).append(np.asarray(value))
    if on_epoch_end is not None:
      on_epoch_end(epoch + 1, carry, history)
    if progress is not None:
      progress(1)
  loss_h, acc_h = evaluate(carry.params_h, xte, yte)
  loss_a, acc_a = evaluate(carry.params_a, xte, yte)
  seconds = time.perf_counter() - t0
  return PairedResult(
      seeds=seeds,
      test_acc_h=np.asarray(acc_h), test_acc_a=np.asarray(acc_a),
      test_loss_h=np.asarray(loss_h), test_loss_a=np.asarray(loss_a),
      history=history.arrays(), seconds=seconds,
      final_params_h=carry.params_h, final_params_a=carry.params_a,
  )
