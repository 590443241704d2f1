"""Beyond Adam: the homogeneity rule against other optimizers, paired and tuned.

    python -m experiments.compare                       # the default run (≈ 3–6 min, 2 CPU cores)
    python -m experiments.compare --dataset iris --seeds 10 --out runs/iris
    python -m experiments.compare --quick --out runs/quick  # a smoke test: 2 epochs (Fashion-MNIST 1), 1 lr, 2 seeds
    python -m experiments.compare --protocol seed004    # backprop vs forward gradients (seed 004)

**Methods** (``METHODS``; each with its learning-rate grid; the grids were
placed after a probe on digits and Fashion-MNIST so that the best value is
inside them where possible — e.g. forward-gradient SGD diverges at 0.01 there,
Adam loses at 0.03):

==============  ===============================================================  ===================
name            what                                                             learning rates
==============  ===============================================================  ===================
adam            ``optax.adam`` (torch defaults)                                  1e-3, 3e-3, 1e-2
sgd             plain SGD, no momentum (seed 001: ``optim.SGD(lr=0.01)``)       0.01 … 1.0 (5)
adagrad         torch's Adagrad (seed 001: ``optim.Adagrad(lr=0.01)``;           0.01, 0.03, 0.1, 0.3
                initial accumulator 0, eps 1e-10)
hom-partI       Adam + homogeneity Part I, ``paper_optimizer('A-B')``            1e-3, 3e-3, 1e-2
hom-partII      Adam + homogeneity Part II, ``'COMPLETE'``, λ dynamic            1e-3, 3e-3, 1e-2
hom-exact       Part I (A-B) with ``rule='exact'`` (the true subgradient)        1e-3, 3e-3, 1e-2
lookahead       ``optax.lookahead(adam, sync_period=5, slow_step_size=0.5)``,    1e-3, 3e-3, 1e-2
                evaluated at the slow weights
sam             ``optax.contrib.sam(adam, normalize+sgd(ρ=0.05), opaque_mode)``  1e-3, 3e-3, 1e-2
                : a second gradient at θ + ρ∇L/‖∇L‖ per step
adam-noise      ``chain(add_noise(η=0.01, γ=0.55), adam)``                       1e-3, 3e-3, 1e-2
adam-ema        Adam, evaluated at a debiased ``optax.ema`` of the weights with  1e-3, 3e-3, 1e-2
                decay 1 − 1/max(10, steps per epoch) (≈ the last epoch)
fwd-sgd         ``homax.forward_gradient`` (1 tangent) into ``optax.sgd``        1e-3, 3e-3, 1e-2, 3e-2
fwd-adam        ``homax.forward_gradient`` (1 tangent) into ``optax.adam``       1e-3, 3e-3, 1e-2, 3e-2
==============  ===============================================================  ===================

The homogeneity methods use η_h = η (the article's Iris rows use 0.01/0.01) and
a second, independent initialisation as the initial running average, as the
seed does.

**Pairing.** For seed ``s``, every method and every learning rate starts from
the same weights (``fold_in(key(s), 0)``; the homogeneity average from
``fold_in(key(s), 1)``) and sees the same batches in the same order
(``fold_in(key(s), 2)``); method-specific randomness (gradient noise, forward
tangents) comes from ``fold_in(key(s), 3)``. So ``method − Adam`` is a paired
difference per seed.

**Tuning.** Each method runs all its learning rates × all seeds in one jitted
program (``jax.vmap`` over lr × seed, ``lax.scan`` over epochs and steps). The
best learning rate per method is the one with the highest mean *validation*
accuracy (ties: lower mean validation loss); the table reports that lr's
*test* accuracy, so the test set plays no part in the choice.

**Default protocol** (chosen so that the whole run takes about 5 minutes on 2
CPU cores; ``DATASETS``): the seeds' 60/20/20 split with standardisation for
the tabular sets, an MLP in → 64 → ReLU → classes, batch 32, epochs iris 50,
penguins 30, breast_cancer 30, digits 20; Fashion-MNIST with seed 002's
``mlp1`` (784 → 64 → 10), batch 50 (seed 002), 3 epochs on a **subset**: the
first 10000 of the 42000 training images, the first 2000 validation images and
the full official 10000-image test set. 10 paired seeds. That is about 340 s of
CPU time, half of it XLA compilation (60 programs of 1–5 s each, compiled two
at a time); the recorded run (``results/compare.md``) took 199 s wall on 2
shared CPU cores.

**Time per step** (``us_per_step``) is the wall time of the compiled run
divided by steps and by models (lr × seed) trained side by side, compile time
excluded, per-epoch validation included; a program that runs in under 0.5 s
is timed three times and the fastest kept. The CPUs are shared, so treat it as a
rough ratio between methods, not an absolute speed.

Outputs in ``--out`` (default ``results/``), all written atomically:
``compare.csv``, ``compare.md``, ``compare/<dataset>.png`` (test accuracy with
95 % CI per method), ``compare/time_per_step.png`` and ``compare/<dataset>.json``
(every lr × seed result). ``compare.csv`` and ``compare.md`` are rebuilt from
the run's datasets only, so before anything trains the run stops (exit 2) if
``--out`` is not a writable directory, if a dataset it was asked for (by
``--dataset`` or by default) cannot be loaded, if ``--out``'s ``compare.csv``
holds datasets the run would drop, or if a ``compare/<dataset>.json`` there is
from a run with other settings (seeds, ``--quick``, epochs, sizes) or more
methods. An unreadable ``compare/<dataset>.json`` is moved aside to
``<dataset>.json.unreadable`` (``.unreadable.N`` if that is taken). The outputs
are rewritten after each dataset: while the run goes on (or if it is
interrupted), ``compare.md`` and the time plot show the datasets finished so
far, and ``compare.csv`` also keeps the earlier rows of those not yet rerun.

**Seed-004 protocol** (``--protocol seed004``, 5 seeds by default): backprop vs
forward-gradient training, both with plain SGD from the same weights and
batches, on seed 004's three tasks — logistic regression (4 → 3) and an MLP
(4 → 64 → 3) on penguins (60 epochs, batch 32), and a small CNN (seed 003's
two-conv net) on 500 training / 100 validation / 100 test KMNIST images (20
epochs, batch 50). KMNIST is used when tfds or IDX files are present;
otherwise the same CNN runs on the same number of Fashion-MNIST images,
labelled as a stand-in everywhere. One lr grid for both arms (1e-3 … 1.0),
best on validation. Writes ``seed004.csv``, ``seed004.md`` and ``seed004.png``
(loss and accuracy curves), with single-model µs/step (:func:`single_step_us`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import math
import pathlib
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import homax
from experiments import datasets, models, report, reproduce
from experiments.train import cross_entropy

PyTree = Any

CSV_COLUMNS = (
    "dataset", "method", "best_lr", "seeds", "test_acc_mean", "test_acc_std",
    "diff_vs_adam_mean", "diff_ci95_low", "diff_ci95_high", "wins_vs_adam", "val_acc_mean",
    "us_per_step",
    # Extra context after the required columns.
    "rank", "label", "losses_vs_adam", "ties_vs_adam", "wilcoxon_p", "test_loss_mean",
    "compile_s", "run_s", "model", "epochs", "batch_size", "n_train", "lrs",
)


# --------------------------------------------------------------------------
# Methods: how one model is trained, as pure functions on a carry.


class Context(NamedTuple):
  """What a method may use when it is built inside the per-model program.

  Attributes:
    lr: the learning rate (a traced scalar: one program serves every lr).
    total_steps: T, steps in the whole run.
    steps_per_epoch: steps per epoch.
    key: the seed's method key (noise, tangents), ``fold_in(key(s), 3)``.
    average: the seed's second initialisation (the homogeneity ā₀).
  """

  lr: jax.Array
  total_steps: int
  steps_per_epoch: int
  key: jax.Array
  average: PyTree


class Algo(NamedTuple):
  """A training rule as three pure functions.

  ``init(params) -> carry``; ``step(carry, loss_fn, key) -> (carry, loss)``
  where ``loss_fn(params) -> scalar`` is the current batch's loss and ``key``
  is fresh per step; ``params(carry)`` are the weights to evaluate.
  """

  init: Callable[[PyTree], PyTree]
  step: Callable[[PyTree, Callable, jax.Array], tuple[PyTree, jax.Array]]
  params: Callable[[PyTree], PyTree]


def gradient_algo(tx: optax.GradientTransformation, *, forward: bool = False) -> Algo:
  """(params, opt state), one gradient per step: backprop, or a forward gradient."""

  def step(carry, loss_fn, key):
    params, state = carry
    if forward:
      loss, grads = homax.forward_gradient(lambda p: loss_fn(p), params, key)
    else:
      loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), loss

  return Algo(lambda p: (p, tx.init(p)), step, lambda c: c[0])


def sam_algo(lr, rho: float = 0.05) -> Algo:
  """SAM (Foret et al.) through ``optax.contrib.sam`` in opaque mode.

  Opaque mode with ``sync_period=2`` does the whole SAM step inside one
  ``update``: the adversarial optimizer (normalise, then SGD(ρ), negated) moves
  to θ + ρ g/‖g‖, ``grad_fn`` gives the gradient there on the same batch, and
  Adam applies that gradient at θ. So each step costs two gradients.
  """
  tx = optax.contrib.sam(
      optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
      optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
      sync_period=2, opaque_mode=True,
  )

  def step(carry, loss_fn, key):
    del key
    params, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params,
                               grad_fn=lambda p, _: jax.grad(loss_fn)(p))
    return (optax.apply_updates(params, updates), state), loss

  return Algo(lambda p: (p, tx.init(p)), step, lambda c: c[0])


def lookahead_algo(lr, sync_period: int = 5, slow_step_size: float = 0.5) -> Algo:
  """Lookahead over Adam; gradients at the fast weights, evaluation at the slow ones."""
  tx = optax.lookahead(optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
                       sync_period=sync_period, slow_step_size=slow_step_size)

  def step(carry, loss_fn, key):
    del key
    params, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params.fast)
    updates, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), loss

  def init(p):
    lp = optax.LookaheadParams.init_synced(p)
    return lp, tx.init(lp)

  return Algo(init, step, lambda c: c[0].slow)


def ema_algo(lr, decay: float) -> Algo:
  """Adam, with a debiased exponential moving average of the weights to evaluate."""
  tx = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
  ema = optax.ema(decay, debias=True)

  def step(carry, loss_fn, key):
    del key
    params, state, ema_state, _ = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    # optax.ema on the weights themselves: its output is the debiased average.
    averaged, ema_state = ema.update(params, ema_state)
    return (params, state, ema_state, averaged), loss

  return Algo(lambda p: (p, tx.init(p), ema.init(p), p), step, lambda c: c[3])


def _adam(lr):
  return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)


def _homogeneity(variant: str, **kw):
  def build(c: Context) -> Algo:
    return gradient_algo(homax.paper_optimizer(
        variant, learning_rate=c.lr, homogeneity_learning_rate=c.lr,
        total_steps=c.total_steps, initial_average=c.average, **kw))
  return build


def _ema_decay(steps_per_epoch: int) -> float:
  return 1.0 - 1.0 / max(10, steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class Method:
  """A named method: ``build(context) -> Algo`` and its learning-rate grid."""

  name: str
  label: str
  lrs: tuple[float, ...]
  build: Callable[[Context], Algo]
  homogeneity: bool = False


ADAM_LRS = (1e-3, 3e-3, 1e-2)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("adam", "Adam", ADAM_LRS, lambda c: gradient_algo(_adam(c.lr))),
    # Seed 001's lr (0.01) is the low end: plain SGD and Adagrad peaked higher here
    # (SGD at 0.3 on digits and Fashion-MNIST, where 1.0 diverges or loses).
    Method("sgd", "SGD (seed 001)", (0.01, 0.03, 0.1, 0.3, 1.0),
           lambda c: gradient_algo(optax.sgd(c.lr))),
    # torch.optim.Adagrad's defaults (seed 001): no initial accumulator, eps 1e-10.
    Method("adagrad", "Adagrad (seed 001)", (0.01, 0.03, 0.1, 0.3),
           lambda c: gradient_algo(optax.adagrad(c.lr, initial_accumulator_value=0.0, eps=1e-10))),
    Method("hom-partI", "Adam + homogeneity Part I (A-B)", ADAM_LRS, _homogeneity("A-B"),
           homogeneity=True),
    Method("hom-partII", "Adam + homogeneity Part II (COMPLETE, dynamic)", ADAM_LRS,
           _homogeneity("COMPLETE", lambda_type="dynamic"), homogeneity=True),
    Method("hom-exact", "Adam + homogeneity, exact rule (A-B)", ADAM_LRS,
           _homogeneity("A-B", rule="exact"), homogeneity=True),
    Method("lookahead", "Lookahead(Adam)", ADAM_LRS, lambda c: lookahead_algo(c.lr)),
    Method("sam", "SAM(Adam), rho 0.05", ADAM_LRS, lambda c: sam_algo(c.lr)),
    Method("adam-noise", "Adam + gradient noise", ADAM_LRS,
           lambda c: gradient_algo(optax.chain(optax.add_noise(0.01, 0.55, c.key), _adam(c.lr)))),
    Method("adam-ema", "Adam, EMA of weights", ADAM_LRS,
           lambda c: ema_algo(c.lr, _ema_decay(c.steps_per_epoch))),
    # Forward gradients: the best lr is 3e-3 on digits/Fashion-MNIST but ≥ 1e-2 on the
    # small tabular nets, so their grids get a fourth point.
    Method("fwd-sgd", "forward-gradient SGD", (1e-3, 3e-3, 1e-2, 3e-2),
           lambda c: gradient_algo(optax.sgd(c.lr), forward=True)),
    Method("fwd-adam", "forward-gradient Adam", (1e-3, 3e-3, 1e-2, 3e-2),
           lambda c: gradient_algo(_adam(c.lr), forward=True)),
)}


# --------------------------------------------------------------------------
# Training: every lr × seed of one method in one compiled program.


@dataclasses.dataclass
class MethodRun:
  """Results of one method, arrays shaped (len(lrs), seeds)."""

  method: str
  lrs: np.ndarray
  seeds: np.ndarray
  val_acc: np.ndarray
  val_loss: np.ndarray
  test_acc: np.ndarray
  test_loss: np.ndarray
  train_loss_curve: np.ndarray  # (lrs, seeds, epochs): mean batch loss per epoch
  val_acc_curve: np.ndarray     # (lrs, seeds, epochs)
  initial_params: PyTree        # leaves (lrs, seeds, ...): the weights each run starts from
  compile_s: float
  run_s: float
  steps: int

  @property
  def us_per_step(self) -> float:
    """Wall microseconds per step per model (models train side by side)."""
    return 1e6 * self.run_s / (self.steps * self.lrs.size * self.seeds.size)


def _evaluate(apply, params, x, y):
  logits = apply(params, x)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  acc = 100.0 * jnp.mean(jnp.argmax(logits, -1) == y)
  return loss, acc


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What every method of a dataset shares, per seed (leading axis = seeds).

  Built once per dataset and passed to every method, so that the pairing
  holds by construction: for seed ``s``, ``params`` come from
  ``fold_in(key(s), 0)``, the homogeneity ``average`` from ``fold_in(key(s), 1)``,
  the batch order of epoch ``e`` from ``fold_in(fold_in(key(s), 2), e)``, and
  ``method_keys`` (gradient noise, forward tangents) are ``fold_in(key(s), 3)``.
  """

  seeds: np.ndarray
  params: PyTree            # leaves (seeds, ...)
  average: PyTree           # leaves (seeds, ...)
  batches: jax.Array        # (seeds, epochs, steps, batch) sample indices
  mask: jax.Array           # (steps, batch): 1 for real samples, 0 for padding
  method_keys: jax.Array    # (seeds,) typed keys
  epochs: int
  batch_size: int


def prepare(model: models.ModelSpec, n_train: int, *, seeds, epochs: int, batch_size: int) -> Prepared:
  """Initial weights, initial averages and batch orders of every seed (one small program)."""
  seeds = np.asarray(seeds)
  steps = math.ceil(n_train / batch_size)
  pad = steps * batch_size - n_train

  def one(seed):
    key = jax.random.key(seed)
    shuffle = jax.random.fold_in(key, 2)

    def order(epoch):
      perm = jax.random.permutation(jax.random.fold_in(shuffle, epoch), n_train)
      return jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(steps, batch_size)

    return (model.init(jax.random.fold_in(key, 0)), model.init(jax.random.fold_in(key, 1)),
            jax.vmap(order)(jnp.arange(epochs)), jax.random.fold_in(key, 3))

  params, average, batches, keys = jax.jit(jax.vmap(one))(jnp.asarray(seeds, jnp.uint32))
  mask = jnp.concatenate([jnp.ones((n_train,)), jnp.zeros((pad,))]).reshape(steps, batch_size)
  return Prepared(seeds, params, average, batches, mask, keys, epochs, batch_size)


class _Program:
  """One method over every lr × seed: its jitted pieces, their arguments and a runner.

  ``host_loop=False``: the whole run is one program (``lax.scan`` over epochs
  and steps). ``host_loop=True``: one program per epoch with its steps
  unrolled, called from Python, for convolutional models — XLA:CPU runs a
  convolution's backward pass several times slower inside a while loop than
  outside one (≈ 40 vs 9 ms per step of the seed-003 CNN here), which would
  make backprop look slow next to forward gradients for the wrong reason.
  """

  def __init__(self, method: Method, model: models.ModelSpec, data, prep: Prepared, lrs,
               host_loop: bool = False):
    self.method, self.lrs, self.prep, self.host_loop = method, lrs, prep, host_loop
    seeds = prep.seeds
    steps = int(prep.mask.shape[0])
    epochs = prep.epochs
    total = self.total = steps * epochs
    apply = model.apply
    mask = prep.mask

    def algo_for(lr, method_key, average):
      # Built inside each traced function; construction is pure, so every
      # piece of a host loop sees the same rule.
      return method.build(Context(lr, total, steps, method_key, average))

    def init_one(params0, average, method_key, lr):
      algo = algo_for(lr, method_key, average)
      carry = algo.init(params0)
      return carry, algo.params(carry)

    def epoch_one(carry, idx, epoch, average, method_key, lr, xtr, ytr, xval, yval):
      algo = algo_for(lr, method_key, average)

      def step(c, inp):
        i, m, t = inp
        x, y = xtr[i], ytr[i]
        loss_fn = lambda p: cross_entropy(apply(p, x), y, m)
        return algo.step(c, loss_fn, jax.random.fold_in(method_key, t))

      ts = epoch * steps + jnp.arange(steps)
      carry, losses = jax.lax.scan(step, carry, (idx, mask, ts), unroll=host_loop)
      _, val_acc = _evaluate(apply, algo.params(carry), xval, yval)
      return carry, (jnp.mean(losses), val_acc)

    def final_one(carry, average, method_key, lr, xval, yval, xte, yte):
      final = algo_for(lr, method_key, average).params(carry)
      val_loss, val_acc = _evaluate(apply, final, xval, yval)
      test_loss, test_acc = _evaluate(apply, final, xte, yte)
      return dict(val_acc=val_acc, val_loss=val_loss, test_acc=test_acc, test_loss=test_loss)

    def whole_one(params0, average, batches, method_key, lr, xtr, ytr, xval, yval, xte, yte):
      carry, initial = init_one(params0, average, method_key, lr)
      carry, (loss_curve, val_curve) = jax.lax.scan(
          lambda c, inp: epoch_one(c, inp[0], inp[1], average, method_key, lr, xtr, ytr, xval, yval),
          carry, (batches, jnp.arange(epochs)))
      out = final_one(carry, average, method_key, lr, xval, yval, xte, yte)
      return dict(out, train_loss_curve=loss_curve, val_acc_curve=val_curve, initial_params=initial)

    # Members in lr-major order: member j·S + s is (lrs[j], seeds[s]).
    tile = lambda a: jnp.concatenate([a] * lrs.size, axis=0)
    self.params0 = jax.tree.map(tile, prep.params)
    self.average = jax.tree.map(tile, prep.average)
    self.batches = tile(prep.batches)
    self.keys = tile(prep.method_keys)
    self.member_lrs = jnp.asarray(np.repeat(lrs, seeds.size))
    self.data = tuple(jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_val, data.y_val,
                                               data.x_test, data.y_test))
    m, n = 0, None
    self.whole = jax.jit(jax.vmap(whole_one, in_axes=(m,) * 5 + (n,) * 6))
    self.init = jax.jit(jax.vmap(init_one))
    self.epoch = jax.jit(jax.vmap(epoch_one, in_axes=(m, m, n, m, m, m, n, n, n, n)))
    self.final = jax.jit(jax.vmap(final_one, in_axes=(m, m, m, m, n, n, n, n)))

  def lower(self) -> list:
    """The jitted pieces, lowered (traced), ready to compile."""
    xtr, ytr, xval, yval, xte, yte = self.data
    if not self.host_loop:
      return [self.whole.lower(self.params0, self.average, self.batches, self.keys, self.member_lrs,
                               *self.data)]
    init_args = (self.params0, self.average, self.keys, self.member_lrs)
    carry, _ = jax.eval_shape(self.init, *init_args)
    return [
        self.init.lower(*init_args),
        self.epoch.lower(carry, self.batches[:, 0], 0, self.average, self.keys, self.member_lrs,
                         xtr, ytr, xval, yval),
        self.final.lower(carry, self.average, self.keys, self.member_lrs, xval, yval, xte, yte),
    ]

  def execute(self, compiled: list) -> dict:
    """Runs the compiled pieces; returns the outputs, all arrays with a leading member axis."""
    xtr, ytr, xval, yval, xte, yte = self.data
    if not self.host_loop:
      return compiled[0](self.params0, self.average, self.batches, self.keys, self.member_lrs,
                         *self.data)
    init, epoch, final = compiled
    carry, initial = init(self.params0, self.average, self.keys, self.member_lrs)
    losses, vals = [], []
    for e in range(self.prep.epochs):
      carry, (loss, val) = epoch(carry, self.batches[:, e], e, self.average, self.keys,
                                 self.member_lrs, xtr, ytr, xval, yval)
      losses.append(loss)
      vals.append(val)
    out = final(carry, self.average, self.keys, self.member_lrs, xval, yval, xte, yte)
    return dict(out, train_loss_curve=jnp.stack(losses, 1), val_acc_curve=jnp.stack(vals, 1),
                initial_params=initial)

  def result(self, out, compile_s: float, run_s: float) -> MethodRun:
    out = jax.device_get(out)
    shape = (self.lrs.size, self.prep.seeds.size)
    r = lambda a: np.asarray(a).reshape(shape + np.shape(a)[1:])
    return MethodRun(
        method=self.method.name, lrs=self.lrs, seeds=self.prep.seeds,
        val_acc=r(out["val_acc"]), val_loss=r(out["val_loss"]),
        test_acc=r(out["test_acc"]), test_loss=r(out["test_loss"]),
        train_loss_curve=r(out["train_loss_curve"]), val_acc_curve=r(out["val_acc_curve"]),
        initial_params=jax.tree.map(r, out["initial_params"]),
        compile_s=compile_s, run_s=run_s, steps=self.total,
    )


def run_methods(methods: Sequence[Method], model: models.ModelSpec, data, prep: Prepared, *,
                lrs: Sequence | None = None, workers: int = 2, host_loop: bool = False,
                progress=None) -> list[MethodRun]:
  """Trains ``model`` with each method for every lr × seed of ``prep``, side by side (vmap).

  Every method's program is traced first, then all are compiled on
  ``workers`` threads (XLA compiles outside the GIL, and on CPU compiling
  these small programs takes far longer than running them), then each runs
  alone, so that its wall time is its own. Returns per-run validation/test
  accuracy and loss, per-epoch curves, the weights each run starts from (to
  check the pairing) and timings.

  Args:
    methods: the methods.
    model, data, prep: the network, the dataset and the shared per-seed start.
    lrs: one lr grid per method (``None``: each method's own grid).
    workers: compile threads.
    host_loop: one program per epoch, looped from Python (see :class:`_Program`).
    progress: called with each finished :class:`MethodRun`.
  """
  lrs = [None] * len(methods) if lrs is None else list(lrs)
  programs, lowered = [], []
  for method, grid in zip(methods, lrs):
    grid = np.asarray(method.lrs if grid is None else grid, np.float32)
    t0 = time.perf_counter()
    prog = _Program(method, model, data, prep, grid, host_loop)
    pieces = prog.lower()
    programs.append((prog, len(pieces), time.perf_counter() - t0))
    lowered += pieces

  def compile_one(piece):
    t0 = time.perf_counter()
    return piece.compile(), time.perf_counter() - t0

  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    compiled = list(pool.map(compile_one, lowered))
  runs = []
  for prog, count, lower_s in programs:
    pieces, compiled = compiled[:count], compiled[count:]
    exes = [exe for exe, _ in pieces]
    compile_s = lower_s + sum(c for _, c in pieces)
    t0 = time.perf_counter()
    out = jax.block_until_ready(prog.execute(exes))
    run_s = time.perf_counter() - t0
    # A program's first call carries one-off costs that swamp sub-second runs
    # (the tabular sets): time short programs again and keep the fastest.
    for _ in range(2 if run_s < 0.5 else 0):
      t0 = time.perf_counter()
      jax.block_until_ready(prog.execute(exes))
      run_s = min(run_s, time.perf_counter() - t0)
    run = prog.result(out, compile_s, run_s)
    runs.append(run)
    if progress is not None:
      progress(run)
  return runs


# Mean validation accuracies (percent) this close count as a tie. Two lrs whose
# seeds got different numbers of validation samples right differ by at least
# 100/(n_val·seeds) points (1.1e-3 for 9,000 samples and 10 seeds); equal
# counts can differ by float rounding of the mean (~1e-6), which must not decide.
TIE_TOLERANCE_PCT = 1e-4


def best_lr_index(run: MethodRun) -> int:
  """The lr with the highest mean validation accuracy; ties go to the lower mean validation loss.

  Accuracies within ``TIE_TOLERANCE_PCT`` of the best are ties, so that the
  choice does not hang on the rounding of a mean of equal counts.
  """
  acc = np.nan_to_num(np.asarray(run.val_acc, np.float64).mean(1), nan=-np.inf)
  loss = np.nan_to_num(np.asarray(run.val_loss, np.float64).mean(1), nan=np.inf, posinf=np.inf)
  tied = np.flatnonzero(acc >= acc.max() - TIE_TOLERANCE_PCT)
  return int(tied[np.argmin(loss[tied])])


# --------------------------------------------------------------------------
# Datasets of the comparison.


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """How one dataset is trained in the comparison."""

  model: Callable[[Any], models.ModelSpec]
  model_name: str
  batch_size: int
  epochs: int
  quick_epochs: int = 2
  sizes: tuple[int | None, int | None, int | None] = (None, None, None)  # train/val/test subset
  quick_sizes: tuple[int | None, int | None, int | None] = (None, None, None)


def _tabular_mlp(d):
  return models.mlp(int(d.x_train.shape[-1]), 64, d.num_classes)


DATASETS: dict[str, DataConfig] = {
    "iris": DataConfig(_tabular_mlp, "MLP in-64-out", 32, 50),
    "penguins": DataConfig(_tabular_mlp, "MLP in-64-out", 32, 30),
    "breast_cancer": DataConfig(_tabular_mlp, "MLP in-64-out", 32, 30),
    "digits": DataConfig(_tabular_mlp, "MLP in-64-out", 32, 20),
    "fashion_mnist": DataConfig(lambda d: models.seed002("mlp1"), "seed002 mlp1 (784-64-10)", 50, 3,
                                quick_epochs=1, sizes=(10000, 2000, None),
                                quick_sizes=(500, 200, 500)),
}
DEFAULT_DATASETS = tuple(DATASETS)


def load_data(name: str, *, quick: bool = False, data_dir=None):
  cfg = DATASETS[name]
  train, val, test = cfg.quick_sizes if quick else cfg.sizes
  return datasets.load(name, data_dir=data_dir, train_size=train, val_size=val, test_size=test)


def run_dataset(name: str, *, seeds, methods: Sequence[str] = tuple(METHODS), quick: bool = False,
                data_dir=None, epochs: int | None = None, workers: int = 2, progress=None,
                data=None) -> dict:
  """Runs every method on one dataset. Returns ``{"config", "runs": {method: MethodRun}}``.

  ``data``: the dataset as ``load_data(name, quick=quick, data_dir=data_dir)``
  gives it, if already loaded.
  """
  cfg = DATASETS[name]
  if data is None:
    data = load_data(name, quick=quick, data_dir=data_dir)
  model = cfg.model(data)
  config = run_config(name, data, seeds=seeds, quick=quick, epochs=epochs)
  epochs = config["epochs"]
  prep = prepare(model, int(data.x_train.shape[0]), seeds=seeds, epochs=epochs,
                 batch_size=cfg.batch_size)
  chosen = [METHODS[m] for m in methods]
  # --quick: one lr per method, the middle of its grid.
  grids = [(m.lrs[len(m.lrs) // 2],) for m in chosen] if quick else None
  done = run_methods(chosen, model, data, prep, lrs=grids, workers=workers,
                     progress=None if progress is None else lambda r: progress(name, r.method, r))
  runs = {r.method: r for r in done}
  return dict(config=config, runs=runs)


def run_config(name: str, data, *, seeds, quick: bool, epochs: int | None) -> dict:
  """The ``config`` that :func:`run_dataset` records in ``compare/<name>.json``."""
  cfg = DATASETS[name]
  return dict(dataset=name, model=cfg.model_name,
              epochs=epochs or (cfg.quick_epochs if quick else cfg.epochs),
              batch_size=cfg.batch_size, n_train=int(data.x_train.shape[0]),
              n_val=int(data.x_val.shape[0]), n_test=int(data.x_test.shape[0]), note=data.note,
              seeds=[int(s) for s in seeds], quick=bool(quick))


def summarize(result: dict) -> list[dict]:
  """One CSV record per method: the best-on-validation lr, scored on test, paired vs Adam."""
  cfg, runs = result["config"], result["runs"]
  if "adam" not in runs:
    raise ValueError("the comparison needs the 'adam' method as its reference.")
  best = {m: best_lr_index(r) for m, r in runs.items()}
  adam_test = runs["adam"].test_acc[best["adam"]]
  records = []
  for m, r in runs.items():
    j = best[m]
    test = r.test_acc[j]
    stats = report.paired_stats(test, adam_test, test_size=int(cfg["n_test"]))
    records.append(dict(
        dataset=cfg["dataset"], method=m, best_lr=_lr(r.lrs[j]), seeds=int(r.seeds.size),
        test_acc_mean=_mean(test),
        test_acc_std=_std(test),
        diff_vs_adam_mean=stats["diff_mean"], diff_ci95_low=stats["diff_ci95_low"],
        diff_ci95_high=stats["diff_ci95_high"], wins_vs_adam=stats["wins"],
        val_acc_mean=_mean(r.val_acc[j]), us_per_step=float(r.us_per_step),
        label=METHODS[m].label, losses_vs_adam=stats["losses"], ties_vs_adam=stats["ties"],
        wilcoxon_p=stats["wilcoxon_p"], test_loss_mean=_mean(r.test_loss[j]),
        compile_s=round(r.compile_s, 2), run_s=round(r.run_s, 3), model=cfg["model"],
        epochs=cfg["epochs"], batch_size=cfg["batch_size"], n_train=cfg["n_train"],
        lrs=" ".join(f"{x:g}" for x in r.lrs),
    ))
  # Competition ranking: equal mean test accuracies share a rank (small test
  # sets make exact ties common; no tie is broken in Adam's favour).
  means = np.array([rec["test_acc_mean"] for rec in records])
  for rec in records:
    rec["rank"] = 1 + int(np.sum(means > rec["test_acc_mean"] + 1e-6))
  return sorted(records, key=lambda rec: (rec["rank"], rec["method"] != "adam"))


def _lr(x) -> float:
  # The grids are float32 on device; report the decimal value that was asked for.
  return float(f"{float(x):.6g}")


def _round(rec: dict) -> dict:
  out = {}
  for k, v in rec.items():
    out[k] = round(v, 4) if isinstance(v, float) and k not in ("best_lr", "wilcoxon_p") else v
  return out


def run_json(result: dict) -> dict:
  """Every lr × seed number of a dataset, for ``compare/<dataset>.json``."""
  per = {}
  for m, r in result["runs"].items():
    per[m] = dict(lrs=r.lrs.tolist(), seeds=r.seeds.tolist(), val_acc=r.val_acc.tolist(),
                  val_loss=r.val_loss.tolist(), test_acc=r.test_acc.tolist(),
                  test_loss=r.test_loss.tolist(),
                  train_loss_curve_mean=r.train_loss_curve.mean(1).tolist(),
                  compile_s=r.compile_s, run_s=r.run_s, steps=r.steps,
                  us_per_step=r.us_per_step, best_lr_index=best_lr_index(r))
  return dict(config=result["config"], methods=per)


# --------------------------------------------------------------------------
# Reports.


def _mean(values) -> float:
  """The mean in float64 (a float32 mean of float32 accuracies can be off in the
  fourth decimal the tables print: 96.6945 for 3481/3600 = 96.69444)."""
  return float(np.mean(np.asarray(values, np.float64)))


def _std(values) -> float:
  """The sample standard deviation (ddof 1) in float64; 0 for one value."""
  v = np.asarray(values, np.float64)
  return float(v.std(ddof=1)) if v.size > 1 else 0.0


def _t_half(values) -> float:
  from scipy import stats
  v = np.asarray(values, np.float64)
  if v.size < 2:
    return float("nan")
  return float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def plot_dataset(path, result: dict, records: list[dict]) -> None:
  """Test accuracy (mean, 95 % t-interval over seeds) per method at its best lr."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  runs = result["runs"]
  recs = records[::-1]  # best at the top
  fig, ax = plt.subplots(figsize=(8, 0.42 * len(recs) + 1.6))
  for y, rec in enumerate(recs):
    r = runs[rec["method"]]
    test = r.test_acc[best_lr_index(r)]
    half = _t_half(test)
    color = "C3" if METHODS[rec["method"]].homogeneity else ("C1" if rec["method"] == "adam" else "C0")
    ax.errorbar(test.mean(), y, xerr=None if math.isnan(half) else half, fmt="o", color=color, capsize=3)
    ax.plot(test, np.full(test.shape, y) + 0.18, ".", color=color, alpha=0.35, markersize=4)
  adam = next(rec for rec in records if rec["method"] == "adam")
  ax.axvline(adam["test_acc_mean"], color="C1", linewidth=0.8, linestyle="--")
  # Accuracy lives in [0, 100]; a t-interval from very few seeds may not.
  lo, hi = ax.get_xlim()
  ax.set_xlim(max(lo, -0.5), min(hi, 100.5))
  ax.set_yticks(range(len(recs)), [f"{rec['method']} (lr {rec['best_lr']:g})" for rec in recs])
  cfg = result["config"]
  ax.set_xlabel("test accuracy (%): mean and 95 % CI over seeds; dots: single seeds")
  ax.set_title(f"{cfg['dataset']}: {cfg['model']}, {cfg['epochs']} epochs, {len(cfg['seeds'])} paired seeds"
               "\nred: homogeneity, orange: Adam (dashed: its mean)", fontsize=9)
  report.atomic_savefig(fig, path)
  plt.close(fig)


def plot_time(path, records: list[dict]) -> None:
  """µs per step per model, per method, one bar group per dataset (log scale)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(dict.fromkeys(r["dataset"] for r in records))
  present = {r["method"] for r in records}
  methods = [m for m in METHODS if m in present]
  width = 0.8 / max(1, len(names))
  fig, ax = plt.subplots(figsize=(max(8, 0.8 * len(methods)), 4.5))
  for i, name in enumerate(names):
    by = {r["method"]: r["us_per_step"] for r in records if r["dataset"] == name}
    xs = np.arange(len(methods)) + (i - (len(names) - 1) / 2) * width
    ax.bar(xs, [by.get(m, np.nan) for m in methods], width, label=name)
  ax.set_yscale("log")
  ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
  ax.set_ylabel("µs per step per model (log)")
  ax.set_title("Time per training step (compile excluded; shared CPU, rough)")
  ax.legend(fontsize=8)
  report.atomic_savefig(fig, path)
  plt.close(fig)


def _versus_adam(rec: dict) -> str:
  if rec["ties_vs_adam"] == rec["seeds"]:
    return "same test accuracy as Adam on every seed"
  if rec["diff_ci95_low"] > 0:
    return "CI above 0"
  if rec["diff_ci95_high"] < 0:
    return "CI below 0"
  return "CI includes 0"


def _homogeneity_summary(name: str, recs: list[dict]) -> str:
  n = len(recs)
  adam = next(r for r in recs if r["method"] == "adam")
  top = [r["method"] for r in recs if r["rank"] == 1]
  best = ", ".join(top) if len(top) <= 3 else f"{len(top)} methods tie"
  parts = [f"{r['method']} rank {r['rank']}/{n}, {r['diff_vs_adam_mean']:+.2f} pp"
           f" [{r['diff_ci95_low']:+.2f}, {r['diff_ci95_high']:+.2f}], {_versus_adam(r)}"
           for r in recs if METHODS[r["method"]].homogeneity]
  return (f"- **{name}**: best {best} ({recs[0]['test_acc_mean']:.2f} %); Adam rank"
          f" {adam['rank']}/{n} ({adam['test_acc_mean']:.2f} %); " + "; ".join(parts) + ".")


def markdown(all_records: dict[str, list[dict]], configs: dict[str, dict], command: str,
             seconds: float) -> str:
  lines = ["# Beyond Adam: homogeneity vs other optimizers (paired seeds, tuned lr)", ""]
  lines += [
      f"Command: `{command}` — {seconds:.0f} s wall on this machine (2 shared CPU cores).",
      "",
      "Each method's learning rate is chosen from its grid on mean **validation** accuracy;"
      " the table gives that lr's **test** accuracy (mean ± sd over seeds). diff = method − Adam"
      " (Adam at its own best lr), paired per seed: the same initial weights and batch order for"
      " every method; the interval is a 95 % t-interval of the mean paired difference; W/L/T ="
      " wins/losses/ties against Adam. µs/step: wall time per step per model, compile excluded,"
      " shared CPU (rough). Rank: by mean test accuracy; equal means share a rank.",
      "",
      f"Caveats: {max(map(len, all_records.values())) - 1} comparisons against Adam per dataset"
      " with no multiplicity correction, so one"
      " interval that just excludes 0 is weak evidence; the tabular test sets are small (30, 69,"
      " 114, 360 samples: one sample is 3.3, 1.4, 0.9, 0.3 pp) and many methods tie there; the"
      " homogeneity methods use η_h = η and were not tuned beyond the shared lr grid; µs/step was"
      " measured while other jobs shared the 2 CPU cores, so only large ratios mean anything.",
      "",
      "## Headline: where homogeneity ranks",
      "",
  ]
  for name, recs in all_records.items():
    lines.append(_homogeneity_summary(name, recs))
  lines.append("")
  for name, recs in all_records.items():
    cfg = configs[name]
    lines += [f"## {name}", "",
              f"{cfg['model']}; {cfg['epochs']} epochs, batch {cfg['batch_size']}; "
              f"train/val/test = {cfg['n_train']}/{cfg['n_val']}/{cfg['n_test']}; "
              f"{len(cfg['seeds'])} seeds{' (--quick)' if cfg.get('quick') else ''}.  ",
              f"Data: {cfg['note']}", "",
              "| rank | method | best lr (grid) | test acc % | diff vs Adam (pp) [95 % CI] | W/L/T |"
              " val acc % | µs/step |",
              "|---|---|---|---|---|---|---|---|"]
    for r in recs:
      ci = ("" if any(math.isnan(r[k]) for k in ("diff_ci95_low", "diff_ci95_high"))
            else f" [{r['diff_ci95_low']:+.2f}, {r['diff_ci95_high']:+.2f}]")
      diff = "(reference)" if r["method"] == "adam" else f"{r['diff_vs_adam_mean']:+.2f}{ci}"
      wlt = "" if r["method"] == "adam" else f"{r['wins_vs_adam']}/{r['losses_vs_adam']}/{r['ties_vs_adam']}"
      name_cell = f"**{r['method']}**" if METHODS[r["method"]].homogeneity else r["method"]
      grid = r["lrs"].split()
      edge = " †" if len(grid) > 1 and f"{r['best_lr']:g}" in (grid[0], grid[-1]) else ""
      lines.append(
          f"| {r['rank']} | {name_cell} | {r['best_lr']:g}{edge} ({r['lrs']}) |"
          f" {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} |"
          f" {diff} | {wlt} |"
          f" {r['val_acc_mean']:.2f} | {r['us_per_step']:.1f} |")
    lines += ["", "† the best lr is at an end of its grid: a wider grid might do better.", "",
              f"![{name}](compare/{name}.png)", ""]
  lines += ["![time per step](compare/time_per_step.png)", "",
            "Methods: " + "; ".join(f"`{m.name}` = {m.label}" for m in METHODS.values()) + ".",
            "Homogeneity methods use η_h = η and a second random initialisation as ā₀."]
  return "\n".join(lines) + "\n"


def write_outputs(out: pathlib.Path, results: dict[str, dict], command: str, seconds: float,
                  keep_rows: Sequence[dict] = ()) -> list[dict]:
  """Writes every output of ``results``; returns the CSV records.

  ``keep_rows``: earlier ``compare.csv`` rows (as read) of datasets not in
  ``results``, kept at the end of ``compare.csv`` (a run writes after each
  dataset, and must not drop the earlier rows of those it has not rerun yet).
  """
  all_records, configs, flat = {}, {}, []
  for name, result in results.items():
    recs = summarize(result)
    all_records[name], configs[name] = recs, result["config"]
    flat += recs
    # The numbers first: a plotting failure must not lose the dataset's run.
    report.save_json(out / "compare" / f"{name}.json", run_json(result))
    plot_dataset(out / "compare" / f"{name}.png", result, recs)
  kept = [r for r in keep_rows if r.get("dataset") not in results]
  report.write_csv(out / "compare.csv", [_round(r) for r in flat] + kept, CSV_COLUMNS)
  report.atomic_write_text(out / "compare.md", markdown(all_records, configs, command, seconds))
  plot_time(out / "compare" / "time_per_step.png", flat)
  return flat


# --------------------------------------------------------------------------
# Seed 004: backprop vs forward gradients.

SEED004_METHODS = {
    "backprop": Method("backprop", "backprop + SGD", (), lambda c: gradient_algo(optax.sgd(c.lr))),
    "forward": Method("forward", "forward gradient + SGD", (),
                      lambda c: gradient_algo(optax.sgd(c.lr), forward=True)),
}
# One grid for both arms (plain SGD, as in seed 004); each arm picks its best on validation.
SEED004_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def seed004_tasks(quick: bool = False, data_dir=None) -> list[dict]:
  """The three tasks of seed 004 (the KMNIST one on Fashion-MNIST when KMNIST is absent)."""
  penguins = datasets.load("penguins")
  size = (100, 50, 50) if quick else (500, 100, 100)
  stand_in = None
  try:
    images = datasets.load("kmnist", data_dir=data_dir, flatten=False, train_size=size[0],
                           val_size=size[1], test_size=size[2])
  except datasets.DatasetUnavailable:
    if data_dir is not None:
      raise  # a --data-dir given for KMNIST is not silently replaced by the stand-in
    images = datasets.load("fashion_mnist", flatten=False, train_size=size[0], val_size=size[1],
                           test_size=size[2])
    stand_in = "kmnist"
  e = 3 if quick else None
  return [
      dict(task="penguins-logreg", data=penguins, stand_in=None, batch_size=32, epochs=e or 60,
           model=models.logistic_regression(4, 3), model_name="logistic regression 4-3"),
      dict(task="penguins-mlp", data=penguins, stand_in=None, batch_size=32, epochs=e or 60,
           model=models.mlp(4, 64, 3), model_name="MLP 4-64-3"),
      dict(task=f"{images.name}-cnn", data=images, stand_in=stand_in, batch_size=50, epochs=e or 20,
           model=models.seed003_cnn(), model_name="seed-003 two-conv CNN", host_loop=True),
  ]


def single_step_us(method: Method, model: models.ModelSpec, data, *, lr: float, batch_size: int,
                   steps: int = 20, repeats: int = 5, seed: int = 0) -> float:
  """Wall µs per training step of one model (no vmap), compile excluded.

  One jitted call runs ``steps`` steps on a fixed batch, unrolled (no while
  loop, whose convolutions XLA:CPU runs slowly, and one dispatch per call);
  the fastest of ``repeats`` calls, divided by ``steps``. The vmapped training
  runs share the machine between many models and can favour one method's
  batched kernels over another's; this measures the method alone.
  """
  params = model.init(jax.random.fold_in(jax.random.key(seed), 0))
  key = jax.random.fold_in(jax.random.key(seed), 3)
  x = jnp.asarray(data.x_train[:batch_size])
  y = jnp.asarray(data.y_train[:batch_size])
  mask = jnp.ones((x.shape[0],))
  algo = method.build(Context(jnp.float32(lr), steps, steps, key, params))
  loss_fn = lambda p: cross_entropy(model.apply(p, x), y, mask)

  @jax.jit
  def run(carry):
    return jax.lax.scan(lambda c, t: algo.step(c, loss_fn, jax.random.fold_in(key, t)),
                        carry, jnp.arange(steps), unroll=True)

  carry = algo.init(params)
  jax.block_until_ready(run(carry))
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(run(carry))
    best = min(best, time.perf_counter() - t0)
  return 1e6 * best / steps


SEED004_COLUMNS = (
    "task", "data", "stand_in_for", "model", "method", "best_lr", "seeds", "first_seed",
    "test_acc_mean",
    "test_acc_std", "test_acc_ci95", "diff_vs_backprop_mean", "diff_ci95_low",
    "diff_ci95_high", "val_acc_mean", "final_train_loss", "us_per_step",
    "us_per_step_vmapped", "compile_s", "epochs", "batch_size", "n_train", "n_test",
    "params", "lrs")


# The finished tasks of a seed004 run still going (or interrupted).
SEED004_PARTIAL = "seed004.partial.csv"


def seed004_lrs(quick: bool) -> tuple:
  """The learning-rate grid of a seed004 run."""
  return tuple(SEED004_LRS[3:4] if quick else SEED004_LRS)


def seed004_other_run(out: pathlib.Path, *, seeds: int, first_seed: int = 0,
                      quick: bool) -> str | None:
  """Why ``out/seed004.csv`` holds another run's results (seeds, first seed, lr
  grid), or None.

  Raises ValueError naming the file if it cannot be read.
  """
  path = out / "seed004.csv"
  if not path.exists():
    return None
  try:
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    there = {(int(r["seeds"]), int(r["first_seed"]), r["lrs"]) for r in rows}
  except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path} is unreadable ({type(e).__name__}: {e}); move it away, or use"
                     " another --out") from None
  now = (seeds, first_seed, " ".join(f"{x:g}" for x in seed004_lrs(quick)))
  describe = lambda n, first, lrs: f"seeds {n} from {first}, lrs {lrs!r}"  # noqa: E731
  differ = [describe(*run) + " there" for run in sorted(there) if run != now]
  if not differ:
    return None
  return f"{'; '.join(differ)}; {describe(*now)} now"


def run_seed004(out: pathlib.Path, *, seeds, quick: bool = False, data_dir=None, command="",
                workers: int = 2, log=print, tasks=None) -> list[dict]:
  """Backprop vs forward-gradient SGD on seed 004's tasks → ``seed004.csv/.md/.png``.

  ``tasks``: :func:`seed004_tasks`'s result, if already loaded.
  """
  t0 = time.perf_counter()
  if tasks is None:
    tasks = seed004_tasks(quick, data_dir)
  lrs = list(seed004_lrs(quick))
  records, curves = [], {}
  for task in tasks:
    prep = prepare(task["model"], int(task["data"].x_train.shape[0]), seeds=seeds,
                   epochs=task["epochs"], batch_size=task["batch_size"])
    runs = run_methods(list(SEED004_METHODS.values()), task["model"], task["data"], prep,
                       lrs=[lrs] * len(SEED004_METHODS), workers=workers,
                       host_loop=task.get("host_loop", False))
    backprop_test = runs[0].test_acc[best_lr_index(runs[0])]
    for name, r in zip(SEED004_METHODS, runs):
      j = best_lr_index(r)
      test = r.test_acc[j]
      paired = report.paired_stats(test, backprop_test, test_size=int(task["data"].x_test.shape[0]))
      single = single_step_us(SEED004_METHODS[name], task["model"], task["data"], lr=float(r.lrs[j]),
                              batch_size=task["batch_size"])
      rec = dict(
          task=task["task"], data=task["data"].name,
          stand_in_for=task["stand_in"] or "", model=task["model_name"], method=name,
          best_lr=_lr(r.lrs[j]), seeds=int(r.seeds.size), first_seed=int(r.seeds[0]),
          test_acc_mean=_mean(test),
          test_acc_std=_std(test),
          test_acc_ci95=_t_half(test), val_acc_mean=_mean(r.val_acc[j]),
          final_train_loss=_mean(r.train_loss_curve[j, :, -1]),
          diff_vs_backprop_mean=paired["diff_mean"], diff_ci95_low=paired["diff_ci95_low"],
          diff_ci95_high=paired["diff_ci95_high"],
          us_per_step=single, us_per_step_vmapped=float(r.us_per_step),
          compile_s=round(r.compile_s, 2),
          epochs=task["epochs"], batch_size=task["batch_size"],
          n_train=int(task["data"].x_train.shape[0]), n_test=int(task["data"].x_test.shape[0]),
          params=models.num_params(jax.tree.map(lambda a: a[0, 0], r.initial_params)),
          lrs=" ".join(f"{x:g}" for x in r.lrs),
      )
      records.append(rec)
      curves[(task["task"], name)] = (r.train_loss_curve[j], r.val_acc_curve[j], rec)
      log(f"  {task['task']:>22} {name:>8}: test {rec['test_acc_mean']:6.2f} ± {rec['test_acc_std']:.2f}"
          f"  lr {rec['best_lr']:g}  {rec['us_per_step']:.1f} µs/step (single model)")
    # After each task, beside the table: an interrupted run keeps the tasks it
    # finished, and an earlier seed004.csv stays whole until this run's replaces it.
    report.write_csv(out / SEED004_PARTIAL, [_round(r) for r in records], SEED004_COLUMNS)
  report.write_csv(out / "seed004.csv", [_round(r) for r in records], SEED004_COLUMNS)
  (out / SEED004_PARTIAL).unlink(missing_ok=True)
  _plot_seed004(out / "seed004.png", tasks, curves)
  seconds = time.perf_counter() - t0
  report.atomic_write_text(out / "seed004.md", _seed004_markdown(records, tasks, command, seconds, seeds))
  return records


def _plot_seed004(path, tasks, curves) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7), squeeze=False)
  for col, task in enumerate(tasks):
    for name, color in (("backprop", "C0"), ("forward", "C3")):
      loss, acc, rec = curves[(task["task"], name)]
      label = f"{name} (lr {rec['best_lr']:g}, {rec['us_per_step']:.0f} µs/step)"
      for row, values in ((0, loss), (1, acc)):
        x = np.arange(1, values.shape[1] + 1)
        m, s = values.mean(0), values.std(0)
        axes[row, col].plot(x, m, color=color, label=label)
        axes[row, col].fill_between(x, m - s, m + s, color=color, alpha=0.2, linewidth=0)
    title = task["task"] + (f"\n(STAND-IN for {task['stand_in']}: {task['data'].name})" if task["stand_in"] else "")
    axes[0, col].set_title(title, fontsize=9)
    axes[0, col].set_ylabel("train loss (mean of batch losses)")
    axes[1, col].set_ylabel("validation accuracy (%)")
    axes[1, col].set_xlabel("epoch")
    axes[0, col].legend(fontsize=7)
  fig.suptitle("Seed 004: backprop vs forward gradient (plain SGD), mean ± sd over seeds")
  report.atomic_savefig(fig, path)
  plt.close(fig)


def _seed004_markdown(records, tasks, command, seconds, seeds) -> str:
  lines = ["# Seed 004: training without backpropagation (forward gradients) vs backprop", "",
           f"Command: `{command}` — {seconds:.0f} s wall (2 shared CPU cores).", "",
           "Both arms use plain SGD (seed 004 subtracts lr × gradient) from the same initial"
           f" weights and batches ({len(seeds)} paired seeds). The forward gradient is"
           " `homax.forward_gradient` with one standard-normal tangent per step (one `jax.jvp`,"
           " no reverse mode). Each arm's lr is the best on mean validation accuracy from the"
           f" shared grid {', '.join(f'{x:g}' for x in SEED004_LRS)}; test accuracy at that lr;"
           " diff = forward − backprop per seed, with a 95 % t-interval. Seed 004 trains until"
           " a loss threshold; here every run has a fixed number of epochs (below).", "",
           "µs/step (1 model): one model alone (no vmap), 20 unrolled steps on a fixed batch per"
           " jitted call, fastest of 5 calls ÷ 20, compile excluded; vmapped µs/step is the training runs' wall"
           " time per step per model with all lr × seed models side by side. The CPU was shared"
           " with other jobs, so small differences mean nothing. Because XLA:CPU runs a"
           " convolution's backward pass several times slower inside a loop, the CNN runs loop"
           " over epochs in Python with unrolled steps.", ""]
  for task in tasks:
    if task["stand_in"]:
      lines += [f"**Stand-in:** KMNIST is not on this machine (tfds/IDX not found), so the CNN task"
                f" runs on **{task['data'].name}** with the same sizes"
                f" ({task['data'].x_train.shape[0]} train / {task['data'].x_val.shape[0]} val /"
                f" {task['data'].x_test.shape[0]} test). Its numbers are not KMNIST numbers.", ""]
  lines += ["| task | model (params) | epochs × batch | method | best lr | test acc % (± sd) |"
            " diff vs backprop (pp) [95 % CI] | final train loss | µs/step (1 model) |"
            " µs/step (vmapped) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in records:
    diff = ("(reference)" if r["method"] == "backprop" else
            f"{r['diff_vs_backprop_mean']:+.2f} [{r['diff_ci95_low']:+.2f}, {r['diff_ci95_high']:+.2f}]")
    lines.append(f"| {r['task']}{' (stand-in)' if r['stand_in_for'] else ''} | {r['model']} ({r['params']})"
                 f" | {r['epochs']} × {r['batch_size']} | {r['method']} | {r['best_lr']:g}"
                 f"{' †' if r['best_lr'] in (SEED004_LRS[0], SEED004_LRS[-1]) else ''}"
                 f" | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} | {diff}"
                 f" | {r['final_train_loss']:.3f} | {r['us_per_step']:.0f} | {r['us_per_step_vmapped']:.0f} |")
  lines += ["", "† the best lr is at an end of the grid.", "",
            "Data: " + "; ".join(f"{t['task']}: {t['data'].note}" for t in tasks), "",
            "![loss and accuracy curves](seed004.png)"]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# CLI.


def _earlier_rows(out: pathlib.Path) -> list[dict]:
  """The rows of an existing ``out/compare.csv`` (none if there is none)."""
  path = out / "compare.csv"
  if not path.exists():
    return []
  try:
    with open(path, newline="") as f:
      return list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f"{path} is unreadable ({type(e).__name__}: {e}); move it away, or use"
                     " another --out") from None


def _datasets_it_would_drop(out: pathlib.Path, names) -> list[str]:
  """The datasets of an existing ``out/compare.csv`` that are not in ``names``."""
  found = {row.get("dataset") for row in _earlier_rows(out)}
  return sorted(d for d in found if d and d not in names)


# What a dataset's run must share with an earlier ``compare/<dataset>.json`` that
# it would overwrite (besides a superset of its methods).
RUN_SETTINGS = ("seeds", "quick", "epochs", "batch_size", "n_train", "n_val", "n_test", "model")


def run_settings(name: str, data, *, seeds, quick: bool, epochs: int | None) -> dict:
  """The settings of ``RUN_SETTINGS`` that :func:`run_dataset` will record for ``name``."""
  config = run_config(name, data, seeds=seeds, quick=quick, epochs=epochs)
  return {k: config[k] for k in RUN_SETTINGS}


def _other_run(path: pathlib.Path, settings: dict, methods) -> str | None:
  """Why ``path`` (an earlier ``compare/<dataset>.json``) is another run's, or None.

  Raises ValueError if it cannot be read.
  """
  try:
    record = report.load_json(path)
    config, earlier = record["config"], record["methods"]
    if not (isinstance(config, dict) and isinstance(earlier, dict)):
      raise TypeError("config and methods must be objects")
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{type(e).__name__}: {e}") from None
  differ = [f"{k} {config.get(k)!r} there, {v!r} now" for k, v in settings.items()
            if config.get(k) != v]
  missing = [m for m in earlier if m not in methods]
  if missing:
    differ.append(f"methods {', '.join(missing)} there, not in this run")
  return "; ".join(differ) or None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--protocol", choices=("compare", "seed004"), default="compare")
  parser.add_argument("--dataset", action="append", choices=sorted(DATASETS),
                      help="dataset to compare on (repeatable; default: all of "
                      f"{', '.join(DEFAULT_DATASETS)})")
  parser.add_argument("--methods", default=None,
                      help=f"comma-separated subset of {','.join(METHODS)} (adam is always included)")
  parser.add_argument("--seeds", type=int, default=None,
                      help="paired seeds (default 10; 5 for --protocol seed004; 2 with --quick)")
  parser.add_argument("--first-seed", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=None, help="override every dataset's epochs")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
  parser.add_argument("--data-dir", default=None,
                      help="directory with the image dataset's files (IDX or tfds): Fashion-MNIST"
                      " for the default protocol, KMNIST for seed004")
  parser.add_argument("--workers", type=int, default=2, help="threads compiling programs (default 2)")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: few epochs, one lr per method, small Fashion-MNIST subset")
  args = parser.parse_args(argv)
  if args.seeds is None:
    args.seeds = 2 if args.quick else (5 if args.protocol == "seed004" else 10)
  if args.seeds < 1:
    parser.error("--seeds must be >= 1")
  if not 0 <= args.first_seed <= 2**32 - args.seeds:
    # Seeds are uint32 PRNG keys: outside this range they would wrap around.
    parser.error(f"--first-seed must be in [0, 2**32 - --seeds], got {args.first_seed}")
  if args.epochs is not None and args.epochs < 1:
    parser.error(f"--epochs must be >= 1, got {args.epochs}")
  if args.protocol == "seed004":
    ignored = [flag for flag, value in (("--dataset", args.dataset), ("--methods", args.methods),
                                        ("--epochs", args.epochs)) if value is not None]
    if ignored:
      parser.error(f"{', '.join(ignored)} do(es) not apply to --protocol seed004 (its tasks,"
                   " methods and epochs are the seed's)")
  methods = list(METHODS)
  if args.methods:
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
      parser.error(f"--methods: unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    methods = ["adam"] + [m for m in chosen if m != "adam"]
  out_dirs = [args.out] if args.protocol == "seed004" else [args.out, args.out / "compare"]
  for problem in (reproduce.check_data_dir(args.data_dir), *map(reproduce.check_out, out_dirs)):
    if problem:
      # Before anything trains: a bad --out would otherwise fail at the first write.
      parser.error(problem)
  outputs = (("seed004.csv", "seed004.md", "seed004.png") if args.protocol == "seed004"
             else ("compare.csv", "compare.md"))
  for output in outputs:
    if (args.out / output).is_dir():
      parser.error(f"--out {args.out}: {args.out / output} is a directory; the run writes a file there")
  seeds = np.arange(args.first_seed, args.first_seed + args.seeds)
  command = "python -m experiments.compare" + ("" if argv is None and len(sys.argv) <= 1 else
                                               " " + " ".join(sys.argv[1:] if argv is None else argv))
  t0 = time.perf_counter()

  if args.protocol == "seed004":
    print(f"seed 004: backprop vs forward gradient, {args.seeds} seeds → {args.out / 'seed004'}.*",
          flush=True)
    try:  # the data first, so that bad data stops the run before anything trains
      tasks = seed004_tasks(args.quick, args.data_dir)
    except datasets.DatasetUnavailable as e:
      what = (f"--data-dir {args.data_dir}: KMNIST cannot be loaded from it (without --data-dir,"
              " seed004 runs on the Fashion-MNIST stand-in)" if args.data_dir else
              "seed004 needs KMNIST or its stand-in, Fashion-MNIST; neither can be loaded")
      parser.error(f"{what}.\n  " + str(e).replace("\n", "\n    "))
    except (ValueError, OSError) as e:  # a damaged file, or another set's given as KMNIST's
      print(f"error: {e}", file=sys.stderr)
      return 2
    try:
      other = seed004_other_run(args.out, seeds=args.seeds, first_seed=args.first_seed,
                                quick=args.quick)
    except ValueError as e:
      parser.error(str(e))
    if other:
      # Never overwrite another run's table (e.g. the committed one by a --quick run).
      parser.error(f"--out {args.out} holds seed004 results of another run ({other}); use another"
                   " --out, or move seed004.* away first")
    run_seed004(args.out, seeds=seeds, quick=args.quick, data_dir=args.data_dir,
                command=command, workers=args.workers, tasks=tasks)
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0

  names = list(dict.fromkeys(args.dataset or DEFAULT_DATASETS))  # each dataset once
  try:
    dropped = _datasets_it_would_drop(args.out, names)
  except ValueError as e:
    parser.error(str(e))
  if dropped:
    # compare.csv and compare.md are rebuilt from this run's datasets only.
    parser.error(f"--out {args.out} holds compare results for {', '.join(dropped)}, which this run"
                 f" ({', '.join(names)}) would drop from {args.out / 'compare.csv'}; use another"
                 " --out, or move those files away first")
  # Every dataset is loaded before anything trains: one that was asked for but
  # cannot be loaded stops the run, rather than being left out of (hence
  # dropped from) compare.csv and compare.md.
  loaded = {}
  for name in names:
    try:
      loaded[name] = load_data(name, quick=args.quick, data_dir=args.data_dir)
    except datasets.DatasetUnavailable as e:
      where = f" from --data-dir {args.data_dir}" if args.data_dir else ""
      asked = "--dataset" if args.dataset else "the default datasets include"
      parser.error(f"{asked} {name}, which cannot be loaded{where}; leave it out with --dataset"
                   " (one per dataset to run), or make it available.\n  "
                   + str(e).replace("\n", "\n    "))
    except (ValueError, OSError) as e:
      # A damaged file: stop, naming it.
      print(f"error: {name}: {e}", file=sys.stderr)
      return 2
  # Never overwrite another run's compare/<dataset>.json (other seeds, --quick, epochs, ...).
  others, unreadable = [], []
  for name in names:
    path = args.out / "compare" / f"{name}.json"
    if not path.exists():
      continue
    settings = run_settings(name, loaded[name], seeds=seeds, quick=args.quick, epochs=args.epochs)
    try:
      why = _other_run(path, settings, methods)
    except ValueError as e:
      unreadable.append((path, e))
      continue
    if why:
      others.append(f"{path} ({why})")
  if others:
    parser.error(f"--out {args.out} holds results of a run with other settings: {'; '.join(others)};"
                 " rerun with the same settings or another --out, or move those files away first")
  for path, e in unreadable:  # only once the run is sure to go ahead
    aside = reproduce.move_aside(path)
    print(f"warning: {path} is unreadable ({e}); moved to {aside.name}", file=sys.stderr)
  print(f"compare: {len(methods)} methods × {len(names)} datasets × {args.seeds} paired seeds"
        f"{' (--quick)' if args.quick else ''} → {args.out / 'compare'}.*", flush=True)

  def progress(name, m, r):
    j = best_lr_index(r)
    print(f"  {name:>14} {m:>11}: best lr {r.lrs[j]:<7g} val {r.val_acc[j].mean():6.2f}"
          f"  test {r.test_acc[j].mean():6.2f}  compile {r.compile_s:5.1f} s  run {r.run_s:6.2f} s"
          f"  ({r.us_per_step:.1f} µs/step)", flush=True)

  results = {}
  earlier = _earlier_rows(args.out)  # only datasets of this run (checked above)
  for name in names:
    results[name] = run_dataset(name, seeds=seeds, methods=methods, quick=args.quick,
                                data_dir=args.data_dir, epochs=args.epochs, workers=args.workers,
                                progress=progress, data=loaded.pop(name))
    # Rewrite the outputs after every dataset, so an interrupted run keeps what it
    # finished, and compare.csv the earlier rows of the datasets still to run.
    write_outputs(args.out, results, command, time.perf_counter() - t0, keep_rows=earlier)
  write_outputs(args.out, results, command, time.perf_counter() - t0)
  print(f"done in {time.perf_counter() - t0:.1f} s: {args.out / 'compare.csv'}, {args.out / 'compare.md'},"
        f" plots under {args.out / 'compare'}/")
  return 0


if __name__ == "__main__":
  sys.exit(main())
