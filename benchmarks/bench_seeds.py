"""Seeds in parallel: 32 paired seeds under ``jax.vmap`` vs 32 runs one after another.

Both arms use the same trainer, ``experiments.train.PairedTrainer`` (a
homogeneity model and a plain-Adam model per seed, same weights and batches),
and the same compiled epoch function (``trainer.compiled_epoch``): the
parallel arm calls it once per epoch on a carry holding all 32 seeds; the
sequential arm loops over the seeds, calling it on a carry holding one. Each
mirrors ``experiments.train.train_paired``: per epoch, one call and a
``device_get`` of its records; then the test evaluation of both models.
Initialisation (``trainer.init``, done once for the 32 seeds; the sequential
arm takes its slices) and compilation are outside the timing: every function
runs once before the timed runs. Throughput ratio = sequential time /
parallel time for the same work (32 seeds × 2 models).

Problems:

* Iris: MLP 4→10→3, batch 32, 10 epochs (30 steps), variant B-A, η = 0.01
  (as the published Iris rows); ``experiments.datasets.load("iris")``.
* MNIST MLP: the paper's MLP 784→128→10 on a Fashion-MNIST subset
  (``datasets.load("fashion_mnist", train_size=200·batch, val_size=1000,
  test_size=1000)``), 1 epoch = 200 steps, variant A-B, η = 0.01,
  η_h = 0.001; at batch 42 (``mnist``: 8400 samples, as a published row) and
  at batch 5 (``mnist-b5``: 1000 samples, also a published batch size, where a
  step is too small to keep the cores busy). If Fashion-MNIST is not on the
  machine, synthetic data of the same shapes is used and the JSON says so.

As a check, the per-seed test accuracies of the two arms are compared (they
should agree up to float rounding of the batched matmuls).

Usage::

  python -m benchmarks.bench_seeds
  python -m benchmarks.bench_seeds --quick
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common

SEEDS = 32


def iris_problem():
  import homax
  from experiments import datasets, models
  data = datasets.load("iris")
  batch, epochs = 32, 10
  total = homax.total_steps(data.x_train.shape[0], batch, epochs)
  return dict(
      name="iris mlp4-10-3", data=data, data_note="Iris (experiments.datasets, seed split)",
      model=models.mlp(4, 10, 3), batch=batch, epochs=epochs,
      make_tx=lambda avg: homax.paper_optimizer(
          "B-A", learning_rate=0.01, total_steps=total, initial_average=avg),
      adam=optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8), variant="B-A",
  )


def mnist_problem(quick: bool, batch: int = 42):
  import homax
  from experiments import datasets, models
  n_train = (20 if quick else 200) * batch  # 200 steps (20 with --quick)
  try:
    data = datasets.load("fashion_mnist", train_size=n_train, val_size=1000, test_size=1000)
    note = f"Fashion-MNIST subset ({n_train} train, 1000 val, 1000 test)"
  except datasets.DatasetUnavailable:
    rng = np.random.default_rng(0)

    def part(n):
      return rng.random((n, 784), np.float32), rng.integers(0, 10, n).astype(np.int32)

    (xtr, ytr), (xv, yv), (xte, yte) = part(n_train), part(1000), part(1000)
    data = datasets.Dataset(name="synthetic", x_train=xtr, y_train=ytr, x_val=xv, y_val=yv,
                            x_test=xte, y_test=yte, num_classes=10, note="synthetic")
    note = "synthetic uniform [0,1) inputs, uniform labels (Fashion-MNIST not on this machine)"
  epochs = 1
  total = homax.total_steps(data.x_train.shape[0], batch, epochs)
  return dict(
      name=f"mnist mlp784-128-10 b{batch}", data=data, data_note=note,
      model=models.mlp(784, 128, 10), batch=batch, epochs=epochs,
      make_tx=lambda avg: homax.paper_optimizer(
          "A-B", learning_rate=0.01, homogeneity_learning_rate=0.001, total_steps=total,
          initial_average=avg),
      adam=optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8), variant="A-B",
  )


def bench_problem(prob, reps: int):
  from experiments.train import PairedTrainer
  trainer = PairedTrainer(model=prob["model"], make_homogeneity_tx=prob["make_tx"],
                          adam_tx=prob["adam"], batch_size=prob["batch"])
  data = prob["data"]
  xtr, ytr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  xval, yval = jnp.asarray(data.x_val), jnp.asarray(data.y_val)
  xte, yte = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  n_train = int(xtr.shape[0])
  run, evaluate = trainer.compiled_epoch(n_train)
  carry0, keys = trainer.init(np.arange(SEEDS))
  jax.block_until_ready(carry0)
  epochs = prob["epochs"]

  def train(carry, k):
    """One ``train_paired``-like run; returns test accuracies (h, a)."""
    for epoch in range(epochs):
      carry, out = run(carry, k, epoch, xtr, ytr, xval, yval)
      jax.device_get(out)
    _, acc_h = evaluate(carry.params_h, xte, yte)
    _, acc_a = evaluate(carry.params_a, xte, yte)
    return np.asarray(acc_h), np.asarray(acc_a)

  def fresh(i=None):
    sl = (lambda x: x) if i is None else (lambda x: x[i:i + 1])
    return jax.tree.map(lambda x: jnp.copy(sl(x)), carry0), sl(keys)

  def parallel():
    carry, k = fresh()
    jax.block_until_ready(carry)
    t0 = time.perf_counter()
    acc = train(carry, k)
    return time.perf_counter() - t0, acc

  def sequential():
    inputs = [fresh(i) for i in range(SEEDS)]
    jax.block_until_ready(inputs)
    t0 = time.perf_counter()
    accs = [train(c, k) for c, k in inputs]
    dt = time.perf_counter() - t0
    return dt, (np.concatenate([a for a, _ in accs]), np.concatenate([b for _, b in accs]))

  t_c = time.perf_counter()
  _, acc_par = parallel()  # compiles the 32-seed functions
  train(*fresh(0))  # compiles the 1-seed functions
  compile_s = time.perf_counter() - t_c
  results = {"parallel": [], "sequential": []}
  acc_seq = None
  for r in range(reps):
    order = ("parallel", "sequential") if r % 2 == 0 else ("sequential", "parallel")
    for arm in order:
      dt, acc = parallel() if arm == "parallel" else sequential()
      results[arm].append(dt)
      if arm == "sequential":
        acc_seq = acc
  t_par, t_seq = common.median(results["parallel"]), common.median(results["sequential"])
  steps = trainer.steps_per_epoch(n_train) * epochs
  return dict(
      problem=prob["name"], data=prob["data_note"], variant=prob["variant"], seeds=SEEDS,
      batch=prob["batch"], epochs=epochs, steps_per_seed=steps,
      parallel_s=t_par, sequential_s=t_seq, ratio=t_seq / t_par,
      parallel_seed_steps_per_s=SEEDS * steps / t_par,
      sequential_seed_steps_per_s=SEEDS * steps / t_seq,
      compile_s_excluded=compile_s,
      max_test_acc_diff_pct_points=float(max(np.max(np.abs(acc_par[0] - acc_seq[0])),
                                             np.max(np.abs(acc_par[1] - acc_seq[1])))),
      mean_test_acc_h=float(np.mean(acc_par[0])), mean_test_acc_a=float(np.mean(acc_par[1])),
      times_s=results,
  )


def bench_shuffle(sizes=(120, 256, 300, 1000), reps: int = 50):
  """µs per epoch's shuffle of 32 vmapped seeds: jax.random.permutation vs counting.

  ``experiments.train.permutation`` counts ranks for n <= COUNTING_PERMUTATION_MAX
  (the same permutation, bit for bit); here the counting path is timed at every
  n, to show where the threshold comes from.
  """
  from experiments import train
  keys = jax.vmap(jax.random.key)(jnp.arange(SEEDS))
  rows = []
  saved = train.COUNTING_PERMUTATION_MAX
  try:
    train.COUNTING_PERMUTATION_MAX = 1 << 30
    for n in sizes:
      fns = {"sort": jax.jit(jax.vmap(lambda k, n=n: jax.random.permutation(k, n))),
             "count": jax.jit(jax.vmap(lambda k, n=n: train.permutation(k, n)))}
      same = bool(jnp.all(fns["sort"](keys) == fns["count"](keys)))
      us = {}
      for name, fn in fns.items():
        jax.block_until_ready(fn(keys))
        ts = []
        for _ in range(reps):
          t0 = time.perf_counter()
          jax.block_until_ready(fn(keys))
          ts.append(time.perf_counter() - t0)
        us[name] = 1e6 * common.median(ts)
      rows.append(dict(n=n, seeds=SEEDS, sort_us=us["sort"], count_us=us["count"],
                       speedup=us["sort"] / us["count"], identical=same,
                       used_by_trainer="count" if n <= saved else "sort"))
  finally:
    train.COUNTING_PERMUTATION_MAX = saved
  return rows


SHUFFLE_COLUMNS = (
    ("n", "n", "d"), ("sort_us", "jax.random.permutation µs", ".0f"),
    ("count_us", "counting µs", ".0f"), ("speedup", "×", ".2f"),
    ("identical", "identical", ""), ("used_by_trainer", "trainer uses", ""),
)


COLUMNS = (
    ("problem", "problem", ""), ("steps_per_seed", "steps", "d"),
    ("parallel_s", "vmap 32 s", ".3f"), ("sequential_s", "32 sequential s", ".3f"),
    ("ratio", "ratio ×", ".1f"), ("parallel_seed_steps_per_s", "vmap seed-steps/s", ".0f"),
    ("sequential_seed_steps_per_s", "seq seed-steps/s", ".0f"),
    ("max_test_acc_diff_pct_points", "max Δacc", ".2f"),
)


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--reps", type=int, default=None, help="timed runs per arm (default 5 Iris, 3 MNIST)")
  p.add_argument("--problems", nargs="*", default=["iris", "mnist", "mnist-b5"],
                 choices=["iris", "mnist", "mnist-b5"])
  args = p.parse_args(argv)
  common.setup_platform(args)
  info = common.machine_info()
  print(common.header(f"{SEEDS} paired seeds: jax.vmap vs one after another", info))
  rows = []
  for name in args.problems:
    if name == "iris":
      prob = iris_problem()
    else:
      prob = mnist_problem(args.quick, batch=5 if name == "mnist-b5" else 42)
    reps = args.reps or (1 if args.quick else (3 if name == "mnist" else 5))
    rows.append(bench_problem(prob, reps))
    print(common.table(rows[-1:], COLUMNS), flush=True)
  print()
  print(common.table(rows, COLUMNS))
  shuffle = bench_shuffle(reps=5 if args.quick else 50)
  print(f"\nshuffle of {SEEDS} vmapped seeds, per call:")
  print(common.table(shuffle, SHUFFLE_COLUMNS))
  record = dict(
      settings=dict(seeds=SEEDS, statistic="median of interleaved timed runs; compile excluded",
                    trainer="experiments.train.PairedTrainer.compiled_epoch"),
      rows=rows,
      shuffle=shuffle,
  )
  common.write("seeds", args, record, info)
  return record


if __name__ == "__main__":
  main()
