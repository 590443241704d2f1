"""Overhead of the homogeneity step over plain Adam, per training step.

Every arm runs the same jitted training run: ``steps`` steps of
forward + backward + optimizer update inside one ``lax.scan``, params and
optimizer state donated. Arms:

* ``adam``       ``optax.adam(1e-3)`` (torch's defaults) — the baseline;
* ``part1``      ``homax.paper_optimizer("A-B")``: Adam + homogeneity with a
  second Adam (Part I, dynamic λ, Table-1 rule);
* ``part2``      ``homax.paper_optimizer("COMPLETE", lambda_type="dynamic")``:
  Adam + homogeneity with history, ``θ' + η_h² g`` (Part II);
* ``sgd``        ``optax.sgd(1e-2)`` alone, for reference;
* ``sgd+homog``  ``optax.chain(optax.sgd(1e-2), homax.homogeneity(1e-3))``
  (the transformation after SGD, its default Adam step and dynamic λ);
* ``part1-flatten`` (only with ``--arms``): ``optax.flatten`` around the
  ``part1`` optimizer, i.e. every leaf concatenated into one vector before
  the update. Not a homax layout: it is timed because a user may wrap any
  optax optimizer so (with two threads on XLA:CPU it is many times slower;
  RESULTS.md §1);
* ``part1-onesum``, ``part2-onesum`` (only with ``--arms``): ``part1`` or
  ``part2`` with N and D summed by one reduction over every leaf's terms,
  concatenated (``one_reduction_sums``), instead of per leaf, on every
  platform. Measured on an H200 in session 9 (RESULTS.md §6), where the
  homogeneity part of a step is bound by its number of kernels, and since then
  homax's own form on a single NVIDIA GPU (there the arm is ``part1``/``part2``;
  on the CPU it is many times slower). The update is homax's to float
  rounding (tested);
* ``part1-onesum-direct`` (only with ``--arms``): as ``part1-onesum``, with N
  and D as two reductions of one vector each instead of one of two stacked
  rows (``direct_one_reduction_sums``): on the H200 the stacked rows' single
  reduction took 7 µs of a step. Not run on a GPU yet;
* ``part1-materialize`` (only with ``--arms``): ``part1`` with the step
  optimizer's input written back to memory on every platform
  (``transform._materialized(x, everywhere=True)``), as homax did on the GPU
  too before session 9; since then it does so on the CPU only. On the CPU the
  arm is ``part1`` itself;
* ``adam+adam`` (only with ``--arms``): ``optax.chain(optax.adam(1e-3),
  optax.adam(1e-3))``, a reference without homogeneity: the second Adam is what
  Part I's step optimizer costs alone (two more moment arrays read and
  written, one more update), so ``part1`` − ``adam+adam`` is the cost of the
  homogeneity arithmetic itself (θ', the sums N and D, Table 1 and the running
  average). Session 19, RESULTS.md §7.

Models: the paper's MLP 784→128→10 at batch 5, 128 and 420, and an MLP
784→1024→1024→10 at batch 128. Data: **synthetic** — standard-normal inputs
and uniform random labels, a pool of 16 batches cycled through (the step
reads batch ``k mod 16``), identical for every arm. Timing: the arms are
interleaved in one process (rotating order), the median of ``reps``
repetitions of a whole ``steps``-step run, divided by ``steps``; compile time
excluded (each arm runs once before timing). Ratios: of the medians
(``ratio_vs_adam``) and the median of the per-repetition ratios
(``ratio_vs_adam_paired``), which cancels slow spells of a shared machine.

Usage::

  python -m benchmarks.bench_overhead            # the full run (~2 min on 2 cores)
  python -m benchmarks.bench_overhead --quick    # a check that it runs
  python -m benchmarks.bench_overhead --arms adam part1 part1-flatten --configs b5 b420
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common

CONFIGS = (
    # (name, model kind, hidden, batch)
    ("mlp784-128-10 b5", "mlp", 128, 5),
    ("mlp784-128-10 b128", "mlp", 128, 128),
    ("mlp784-128-10 b420", "mlp", 128, 420),
    ("mlp784-1024-1024-10 b128", "deep", (1024, 1024), 128),
)
ARMS = ("adam", "part1", "part2", "sgd", "sgd+homog")
# Timed only when named with --arms.
EXTRA_ARMS = ("part1-flatten", "part1-onesum", "part2-onesum", "part1-materialize",
              "part1-onesum-direct", "adam+adam")
# --configs names a config by its last word ("b5", "b128", "b420") or "deep".
CONFIG_KEYS = {"b5": 0, "b128": 1, "b420": 2, "deep": 3}
POOL = 16
STEPS = 200  # steps per timed run of a full run (--steps)
LR, LR_H, LR_SGD = 1e-3, 1e-3, 1e-2


def build_model(kind, hidden):
  from experiments import models
  if kind == "mlp":
    return models.mlp(784, hidden, 10)
  return models.deep_mlp(784, hidden, 10)


def make_tx(arm: str, average, total_steps: int):
  import homax
  if arm == "adam":
    return optax.adam(LR, b1=0.9, b2=0.999, eps=1e-8)
  if arm == "part1":
    return homax.paper_optimizer("A-B", learning_rate=LR, homogeneity_learning_rate=LR_H,
                                 total_steps=total_steps, initial_average=average)
  if arm == "part2":
    return homax.paper_optimizer("COMPLETE", learning_rate=LR, homogeneity_learning_rate=LR_H,
                                 total_steps=total_steps, lambda_type="dynamic",
                                 initial_average=average)
  if arm == "adam+adam":
    # Part I's two Adams (the step optimizer with torch's defaults, as homax's
    # step="adam"), with nothing between them.
    return optax.chain(make_tx("adam", average, total_steps),
                       optax.adam(LR_H, b1=0.9, b2=0.999, eps=1e-8))
  if arm == "sgd":
    return optax.sgd(LR_SGD)
  if arm == "sgd+homog":
    return optax.chain(optax.sgd(LR_SGD), homax.homogeneity(LR_H, initial_average=average))
  if arm == "part1-flatten":
    from jax.flatten_util import ravel_pytree
    flat_average, _ = ravel_pytree(average)  # the inner optimizer sees one flat vector
    return optax.flatten(make_tx("part1", flat_average, total_steps))
  if arm in ("part1-onesum", "part2-onesum"):
    return with_sums(make_tx(arm.split("-")[0], average, total_steps), one_reduction_sums)
  if arm == "part1-onesum-direct":
    return with_sums(make_tx("part1", average, total_steps), direct_one_reduction_sums)
  if arm == "part1-materialize":
    import functools
    from homax._src import transform
    everywhere = functools.partial(transform._materialized, everywhere=True)
    return patched(make_tx("part1", average, total_steps), transform, "_materialized", everywhere)
  raise ValueError(arm)


def one_reduction_sums(params, average, eps=1e-8):
  """``homax.sums`` as one reduction on every platform: every leaf's two terms
  concatenated, then summed (homax's own form on a single NVIDIA GPU since session 9)."""
  from homax._src import derivative
  leaves = jax.tree.leaves(params)
  acc = derivative._accumulation_dtype(jnp.result_type(*leaves))
  n, d = derivative._concatenated_sums([x.astype(acc) for x in leaves],
                                       [x.astype(acc) for x in jax.tree.leaves(average)])
  return n, eps + d


def direct_one_reduction_sums(params, average, eps=1e-8):
  """``homax.sums`` over every leaf concatenated, as two direct reductions (N's and
  D's, each of one vector) instead of one reduction of the two stacked rows."""
  from homax._src import derivative
  leaves = jax.tree.leaves(params)
  acc = derivative._accumulation_dtype(jnp.result_type(*leaves))
  p = jnp.concatenate([jnp.ravel(x).astype(acc) for x in leaves])
  a = jnp.concatenate([jnp.ravel(x).astype(acc) for x in jax.tree.leaves(average)])
  n, d = derivative._direct_sums(p, a)
  return n, eps + d


def with_sums(tx, sums_fn):
  """``tx`` with homax's ``sums`` replaced by ``sums_fn`` while ``tx.update`` is traced."""
  from homax._src import derivative
  return patched(tx, derivative, "sums", sums_fn)


def patched(tx, module, name, value):
  """``tx`` with ``module.name`` replaced by ``value`` while ``tx.update`` is traced."""
  from unittest import mock

  def update(updates, state, params=None, **extra_args):
    with mock.patch.object(module, name, value):
      return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update)


def make_run(model, tx, steps: int):
  """A jitted ``(params, state, xs, ys) -> (params, state, mean loss)`` over ``steps`` steps."""

  def loss_fn(params, x, y):
    logits = model.apply(params, x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  grad_fn = jax.value_and_grad(loss_fn)

  def run(params, state, xs, ys):
    def step(carry, k):
      p, s = carry
      i = k % xs.shape[0]
      loss, g = grad_fn(p, xs[i], ys[i])
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss

    (params, state), losses = jax.lax.scan(step, (params, state), jnp.arange(steps))
    return params, state, jnp.mean(losses)

  return jax.jit(run, donate_argnums=(0, 1))


def setup(kind, hidden, batch):
  """``(model, params, initial average, xs, ys)``: what every arm of a config shares.

  Weights from ``fold_in(key(0), 0)``, the average from ``fold_in(key(0), 1)``;
  a pool of ``POOL`` synthetic batches (N(0, 1) inputs, uniform labels).
  """
  model = build_model(kind, hidden)
  key = jax.random.key(0)
  params = model.init(jax.random.fold_in(key, 0))
  average = model.init(jax.random.fold_in(key, 1))
  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.standard_normal((POOL, batch, 784), dtype=np.float32))
  ys = jnp.asarray(rng.integers(0, 10, (POOL, batch), dtype=np.int32))
  return model, params, average, xs, ys


def bench_config(name, kind, hidden, batch, steps, reps, arms=ARMS):
  model, params0, average, xs, ys = setup(kind, hidden, batch)
  n_params = sum(int(x.size) for x in jax.tree.leaves(params0))
  live = {}
  for arm in arms:
    tx = make_tx(arm, average, steps)
    run = make_run(model, tx, steps)
    params = jax.tree.map(jnp.copy, params0)
    # A copy: init keeps `average` itself, and donation would delete it.
    state = jax.tree.map(jnp.copy, tx.init(params))
    params, state, loss = run(params, state, xs, ys)  # compile + warm-up
    jax.block_until_ready(loss)
    if not np.isfinite(float(loss)):
      raise FloatingPointError(f"{name} {arm}: loss is {float(loss)}")
    live[arm] = [run, params, state]

  def timer(arm):
    def go():
      entry = live[arm]

      def call():
        entry[1], entry[2], loss = entry[0](entry[1], entry[2], xs, ys)
        jax.block_until_ready((entry[1], loss))

      return common.timed(call)
    return go

  times = common.interleaved({a: timer(a) for a in arms}, reps)
  per_step = {a: common.median(times[a]) / steps for a in arms}
  rows = []
  for a in arms:
    rows.append(dict(
        config=name, params=n_params, batch=batch, arm=a,
        us_per_step=1e6 * per_step[a],
        ratio_vs_adam=per_step[a] / per_step["adam"],
        ratio_vs_adam_paired=common.paired_ratio(times[a], times["adam"]),
        ratio_vs_sgd=per_step[a] / per_step["sgd"] if a.startswith("sgd") and "sgd" in per_step else None,
        spread_pct=100.0 * (max(times[a]) - min(times[a])) / np.median(times[a]),
        times_s=times[a],
    ))
  return rows


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--steps", type=common.positive_int, default=None,
                 help=f"steps per timed run (default {STEPS}; another value makes the run partial)")
  p.add_argument("--reps", type=common.positive_int, default=None,
                 help="repetitions (default 7; deep MLP 5)")
  p.add_argument("--arms", nargs="+", choices=ARMS + EXTRA_ARMS, default=None,
                 help=f"arms to time (default: {' '.join(ARMS)}); adam is always timed. A run"
                      " without every default arm is partial: kept in benchmarks/results/"
                      " only with --tag (extra arms beside the defaults are not)")
  p.add_argument("--configs", nargs="+", choices=tuple(CONFIG_KEYS), default=None,
                 help="configs to run (default: all; a subset makes the run partial)")
  args = p.parse_args(argv)
  common.setup_platform(args)
  arms = ("adam",) + tuple(a for a in dict.fromkeys(args.arms or ARMS) if a != "adam")
  configs = ([CONFIGS[CONFIG_KEYS[c]] for c in dict.fromkeys(args.configs)]
             if args.configs else list(CONFIGS))
  steps = args.steps or (40 if args.quick else STEPS)
  info = common.machine_info()
  print(common.header("overhead vs Adam (per training step)", info))
  rows = []
  record = dict(
      settings=dict(steps=steps, pool_batches=POOL, data="synthetic: N(0,1) inputs, uniform labels",
                    learning_rate=LR, homogeneity_learning_rate=LR_H, sgd_learning_rate=LR_SGD,
                    statistic="median over repetitions of one whole lax.scan run / steps",
                    arms=arms),
      rows=rows,
  )
  for name, kind, hidden, batch in configs:
    reps = args.reps or (2 if args.quick else (5 if kind == "deep" else 7))
    rows += bench_config(name, kind, hidden, batch, steps, reps, arms)
    print(common.table([r for r in rows if r["config"] == name], COLUMNS), flush=True)
    common.progress("overhead", args, record, info)
  print()
  print(common.table(rows, COLUMNS))
  common.write("overhead", args, record, info, partial=is_partial(args, arms, configs))
  return record


def is_partial(args, arms, configs) -> bool:
  """Whether the run measured less than the full run's arms, or other configs or steps.

  ``--reps`` alone does not make a run partial: it changes how often the same
  thing is timed, not what is timed; nor do extra arms timed beside all five
  default ones (the record then holds every row of a full run, and more). A
  partial run reaches ``benchmarks/results/`` only under a ``--tag``
  (``common.write``), so that e.g. ``--arms adam part1 part1-flatten`` cannot
  replace the committed record of the five default arms.
  """
  return (not set(ARMS) <= set(arms) or {c[0] for c in configs} != {c[0] for c in CONFIGS}
          or (args.steps is not None and args.steps != STEPS))


COLUMNS = (
    ("config", "config", ""), ("params", "P", "d"), ("arm", "arm", ""),
    ("us_per_step", "µs/step", ".1f"), ("ratio_vs_adam", "÷adam", ".3f"),
    ("ratio_vs_adam_paired", "÷adam paired", ".3f"),
    ("ratio_vs_sgd", "÷sgd", ".3f"), ("spread_pct", "spread%", ".0f"),
)

if __name__ == "__main__":
  main()
