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

Between the two, the 32 seeds also run as 32/g vmapped groups of g seeds,
one group after another (``--groups``, default 2 4 8), in the same
interleaved repetitions: where 32 seeds' state no longer fits the caches,
smaller groups can beat both.

What the 32-seed step moves: the compiled epoch's training-step loop, summed
over its kernels (result and operand bytes of each: the traffic if nothing
stays in cache between kernels; :func:`loop_body_bytes`), per seed; and the
speed of a copy ``x + y → x`` through memory (float32 vectors with as many
elements as the 32 seeds' carry), measured in the same run (on a GPU 20 copies
per timing, in one jitted loop, so that the figure is not one call's dispatch
and wait; ``copy_calls_per_timing``). Where the carry
is far beyond the caches (≥ 64 MiB), copy speed ÷ bytes per seed-step is what
the 32-seed program could reach if every kernel ran at copy speed, in
seed-steps per second and as a ratio to the sequential arm
(``bandwidth_bound_ratio``): an estimate (a kernel's input can still be in
cache from the kernel before), not a proof.

Problems:

* Iris: MLP 4→10→3, batch 32, 10 epochs (30 steps), variant B-A, η = 0.01
  (as the published Iris rows); ``experiments.datasets.load("iris")``.
* MNIST MLP: the paper's MLP 784→128→10 on a Fashion-MNIST subset
  (``datasets.load("fashion_mnist", train_size=200·batch, val_size=1000,
  test_size=1000)``), 1 epoch = 200 steps, variant A-B, η = 0.01,
  η_h = 0.001; at batch 42 (``mnist``: 8400 samples, as a published row) and
  at batch 5 (``mnist-b5``: 1000 samples, also a published batch size, where a
  step is too small to keep the cores busy). If Fashion-MNIST is not on the
  machine (``/usr/share/datasets/fashion-mnist``), synthetic data of the same
  shapes is used on the CPU; the printed output (a ``data:`` line per
  problem) and the JSON say so. On a GPU the script refuses to fall back
  unless given ``--allow-synthetic``: the GPU figures are meant to be compared
  with the CPU's on the same data.

As a check, the per-seed test accuracies of the two arms are compared (they
should agree up to float rounding of the batched matmuls).

Usage::

  python -m benchmarks.bench_seeds
  python -m benchmarks.bench_seeds --quick
  python -m benchmarks.bench_seeds --problems mnist --groups 2 4
"""

from __future__ import annotations

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common

SEEDS = 32
# Seeds per vmapped call timed besides 1 (one after another) and 32 (all at once).
GROUPS = (2, 4, 8)
# The bandwidth bound is computed only where the 32 seeds' carry (parameters
# and optimizer states) is at least this large: twice the 32 MiB L3 of the
# machine of benchmarks/RESULTS.md, so that every step streams it from memory.
# Below, a step is bound by per-kernel overhead, not bytes.
BOUND_MIN_CARRY_BYTES = 64 << 20
PROBLEMS = ("iris", "mnist", "mnist-b5")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Copies per timing of the copy-bandwidth reference: one call on the CPU (as the
# published CPU figures), a jitted loop of 20 on a GPU, where one call's
# dispatch and wait is as long as the copy itself (bench_memory --calls).
COPY_CALLS = {"cpu": 1, "gpu": 20}


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


def mnist_problem(quick: bool, batch: int = 42, allow_synthetic: bool = True):
  """The MNIST-MLP problem on Fashion-MNIST, or on synthetic data if it is missing.

  Without ``allow_synthetic`` a missing Fashion-MNIST is an error (``SystemExit``)
  instead of a fallback.
  """
  import homax
  from experiments import datasets, models
  n_train = (20 if quick else 200) * batch  # 200 steps (20 with --quick)
  try:
    data = datasets.load("fashion_mnist", train_size=n_train, val_size=1000, test_size=1000)
    note = f"Fashion-MNIST subset ({n_train} train, 1000 val, 1000 test)"
  except datasets.DatasetUnavailable as e:
    if not allow_synthetic:
      raise SystemExit(
          f"bench_seeds: Fashion-MNIST is not on this machine (expected in {FASHION_MNIST_DIR}:"
          f" {e}). A GPU run does not fall back to synthetic data silently: install it"
          " (`apt-get install dataset-fashion-mnist`), or pass --allow-synthetic to time the"
          " MNIST problems on synthetic data of the same shapes.") from e
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


def bench_problem(prob, reps: int, groups=GROUPS, copy_calls: int = 1):
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
  groups = sorted({1, SEEDS, *groups})
  if any(SEEDS % g for g in groups):
    raise ValueError(f"group sizes must divide {SEEDS}, got {groups}")

  def train(carry, k):
    """One ``train_paired``-like run; returns test accuracies (h, a)."""
    for epoch in range(epochs):
      carry, out = run(carry, k, epoch, xtr, ytr, xval, yval)
      jax.device_get(out)
    _, acc_h = evaluate(carry.params_h, xte, yte)
    _, acc_a = evaluate(carry.params_a, xte, yte)
    return np.asarray(acc_h), np.asarray(acc_a)

  def fresh(start, size):
    sl = lambda x: x[start:start + size]  # noqa: E731
    return jax.tree.map(lambda x: jnp.copy(sl(x)), carry0), sl(keys)

  def arm(g):
    """The 32 seeds as 32/g runs of ``g`` vmapped seeds each, one after another."""
    inputs = [fresh(i, g) for i in range(0, SEEDS, g)]
    jax.block_until_ready(inputs)
    t0 = time.perf_counter()
    accs = [train(c, k) for c, k in inputs]
    dt = time.perf_counter() - t0
    return dt, (np.concatenate([a for a, _ in accs]), np.concatenate([b for _, b in accs]))

  t_c = time.perf_counter()
  for g in groups:  # compiles the g-seed functions
    train(*fresh(0, g))
  compile_s = time.perf_counter() - t_c
  times, accs = {g: [] for g in groups}, {}
  for r in range(reps):
    order = groups[r % len(groups):] + groups[:r % len(groups)]
    for g in order:
      dt, accs[g] = arm(g)
      times[g].append(dt)
  t = {g: common.median(v) for g, v in times.items()}
  t_par, t_seq = t[SEEDS], t[1]
  steps = trainer.steps_per_epoch(n_train) * epochs
  traffic = epoch_traffic(run, carry0, keys, (xtr, ytr, xval, yval), copy_calls)
  best = max(groups, key=lambda g: t_seq / t[g])
  row = dict(
      problem=prob["name"], data=prob["data_note"], variant=prob["variant"], seeds=SEEDS,
      batch=prob["batch"], epochs=epochs, steps_per_seed=steps,
      parallel_s=t_par, sequential_s=t_seq, ratio=t_seq / t_par,
      paired_ratio=common.paired_ratio(times[1], times[SEEDS]),
      parallel_seed_steps_per_s=SEEDS * steps / t_par,
      sequential_seed_steps_per_s=SEEDS * steps / t_seq,
      group_s={str(g): t[g] for g in groups},
      group_ratio={str(g): t_seq / t[g] for g in groups},
      best_group=best, best_group_ratio=t_seq / t[best],
      compile_s_excluded=compile_s,
      max_test_acc_diff_pct_points=float(max(
          np.max(np.abs(accs[g][i] - accs[1][i])) for g in groups for i in (0, 1))),
      mean_test_acc_h=float(np.mean(accs[SEEDS][0])),
      mean_test_acc_a=float(np.mean(accs[SEEDS][1])),
      times_s={"parallel": times[SEEDS], "sequential": times[1],
               **{f"groups of {g}": times[g] for g in groups if g not in (1, SEEDS)}},
  )
  if traffic is not None:
    row.update(traffic)
  if traffic is not None and "copy_gb_s" in traffic:
    # If every kernel of the 32-seed step moved its bytes at the speed of a
    # copy through memory, the step could not do better.
    bound = row["copy_gb_s"] * 1e9 / row["xla_bytes_per_seed_step"]
    row["bandwidth_bound_seed_steps_per_s"] = bound
    row["bandwidth_bound_ratio"] = bound / row["sequential_seed_steps_per_s"]
  return row


_SHAPE = re.compile(r"\b(pred|[su](?:8|16|32|64)|bf16|f(?:16|32|64))\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"^(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\((.*?)\)")
_NO_TRAFFIC = frozenset({"parameter", "get-tuple-element", "tuple", "bitcast", "constant",
                         "after-all", "iota", "partition-id", "replica-id"})


def _shape_bytes(text: str) -> int:
  """Bytes of every array shape written in ``text`` (a shape or a tuple of shapes)."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    width = 1 if dtype == "pred" else int(re.sub(r"\D", "", dtype)) // 8
    total += width * int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
  return total


def loop_body_bytes(hlo_text: str) -> tuple[int, int]:
  """``(bytes, kernels)`` of one iteration of the largest ``while`` loop of an HLO module.

  Sums, over the loop body's top-level instructions that run as kernels
  (fusions, dots, copies, ...), the bytes of their result and of their
  operands: what the iteration moves if nothing stays in cache between
  kernels. ``hlo_text`` is a compiled module's ``as_text()``. For the epoch
  of ``PairedTrainer`` the largest loop is the ``lax.scan`` over training
  steps. Raises ``ValueError`` when the text has no ``while`` loop.
  """
  computations, lines = {}, None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      name = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
      lines = computations.setdefault(name.lstrip("%"), [])
    elif lines is not None and line.startswith("  "):
      lines.append(line.strip())
  bodies = [re.search(r"body=%?([\w.\-]+)", l).group(1)
            for ls in computations.values() for l in ls if " while(" in l]
  if not bodies:
    raise ValueError("the HLO module has no while loop")
  body = max(bodies, key=lambda b: len(computations[b]))
  sizes, total, kernels = {}, 0, 0
  for line in computations[body]:
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, opcode, operands = m.groups()
    sizes[name] = _shape_bytes(shape)
    if opcode in _NO_TRAFFIC:
      continue
    kernels += 1
    total += sizes[name] + sum(sizes.get(o.strip().split(" ")[-1].lstrip("%"), 0)
                               for o in operands.split(","))
  return total, kernels


def epoch_traffic(run, carry, keys, arrays, copy_calls: int = 1) -> dict | None:
  """What the 32-seed epoch moves per step, and a copy's speed through memory.

  ``xla_bytes_per_seed_step``: :func:`loop_body_bytes` of the compiled
  32-seed epoch, divided by the seeds. ``carry_bytes``: the 32 seeds'
  parameters and optimizer states, which every step reads and writes.
  ``copy_gb_s``: ``x + y → x`` (bytes read and written per second) on
  float32 vectors with as many elements as the carry (:func:`copy_bandwidth`,
  ``copy_calls`` copies per timing); measured only for a carry of at least
  ``BOUND_MIN_CARRY_BYTES``. ``None``
  (and a printed note) if the compiled text cannot be read.
  """
  try:
    text = run.lower(carry, keys, 0, *arrays).compile().as_text()
    nbytes, kernels = loop_body_bytes(text)
  except Exception as e:  # the text format is XLA's, not a stable API
    print(f"note: no traffic estimate ({type(e).__name__}: {e})")
    return None
  seeds = int(keys.shape[0])
  out = dict(xla_bytes_per_seed_step=nbytes / seeds, xla_kernels_per_step=kernels,
             carry_bytes=sum(int(x.nbytes) for x in jax.tree.leaves(carry)))
  if out["carry_bytes"] < BOUND_MIN_CARRY_BYTES:
    return out
  size = sum(int(x.size) for x in jax.tree.leaves(carry))
  return dict(out, copy_gb_s=copy_bandwidth(size, copy_calls), copy_calls_per_timing=copy_calls)


def copy_bandwidth(size: int, calls: int = 1, timings: int = 15) -> float:
  """GB/s of ``x + y → x`` on float32 vectors of ``size`` (12 bytes per element).

  ``bench_memory.chained``: two untimed calls (compile, warm-up), then the
  median of ``timings`` timings. With ``calls`` = 1 a timing is one donated
  call; with ``calls`` > 1 one call of a jitted loop of ``calls`` copies, each
  fed the last one's output, divided by ``calls``.
  """
  from benchmarks import bench_memory
  x = jnp.ones((size,), jnp.float32)
  y = jnp.full((size,), 1e-7, jnp.float32)
  add = jax.jit(lambda x, y: (x + y,), donate_argnums=0)
  timer = bench_memory.chained(add, (x,), (y,), calls=calls)
  return 3 * 4 * size / common.median([timer() for _ in range(timings)]) / 1e9


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

GROUP_COLUMNS = (
    ("problem", "problem", ""), ("groups", "seeds per call: × the sequential arm", ""),
    ("xla_bytes_per_seed_step", "XLA bytes / seed-step", ".3g"),
    ("copy_gb_s", "copy GB/s", ".1f"),
    ("bandwidth_bound_ratio", "bound ×", ".2f"),
)


def group_line(row) -> str:
  return "  ".join(f"{g}: {r:.2f}" for g, r in row["group_ratio"].items())


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--reps", type=common.positive_int, default=None,
                 help="timed runs per arm (default 5 Iris, 3 MNIST)")
  p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS,
                 help=f"problems to time (default {' '.join(PROBLEMS)}; a subset makes the run"
                      " partial)")
  p.add_argument("--groups", nargs="*", type=int, default=list(GROUPS),
                 help=f"seeds per vmapped call timed besides 1 and {SEEDS} (divisors of {SEEDS};"
                      f" default {' '.join(map(str, GROUPS))}; others make the run partial)")
  p.add_argument("--allow-synthetic", action="store_true",
                 help="on a GPU, time the MNIST problems on synthetic data if Fashion-MNIST is"
                      f" not in {FASHION_MNIST_DIR} (without it a GPU run stops there; on the CPU"
                      " the fallback is always allowed). The data used is printed and in the JSON")
  args = p.parse_args(argv)
  bad = [g for g in args.groups if g < 1 or SEEDS % g]
  if bad:
    p.error(f"--groups: {bad} do not divide {SEEDS}")
  common.setup_platform(args)
  on_gpu = common.jax_device()["platform"] == "gpu"
  copy_calls = COPY_CALLS["gpu" if on_gpu else "cpu"]
  # Every problem's data before any timing: a GPU run without Fashion-MNIST
  # (and without --allow-synthetic) stops here, not after the Iris timings.
  probs = [iris_problem() if name == "iris" else
           mnist_problem(args.quick, batch=5 if name == "mnist-b5" else 42,
                         allow_synthetic=args.allow_synthetic or not on_gpu)
           for name in args.problems]
  info = common.machine_info()
  print(common.header(f"{SEEDS} paired seeds: jax.vmap vs one after another", info))
  rows = []
  record = dict(
      settings=dict(seeds=SEEDS, statistic="median of interleaved timed runs; compile excluded",
                    trainer="experiments.train.PairedTrainer.compiled_epoch",
                    copy_calls_per_timing=copy_calls),
      rows=rows,
  )
  for name, prob in zip(args.problems, probs):
    print(f"{prob['name']}: data: {prob['data_note']}", flush=True)
    reps = args.reps or (1 if args.quick else (3 if name == "mnist" else 5))
    rows.append(bench_problem(prob, reps, args.groups, copy_calls))
    print(common.table(rows[-1:], COLUMNS), flush=True)
    common.progress("seeds", args, record, info)
  print()
  print(common.table(rows, COLUMNS))
  for r in rows:
    print(f"  {r['problem']}: data: {r['data']}")
  print(f"\nthe {SEEDS} seeds in vmapped groups (ratio to one after another), and what the"
        f" {SEEDS}-seed step moves (bound: every kernel at a copy's speed; '-' where the carry is cache-sized):")
  print(common.table([dict(r, groups=group_line(r)) for r in rows], GROUP_COLUMNS))
  shuffle = bench_shuffle(reps=5 if args.quick else 50)
  print(f"\nshuffle of {SEEDS} vmapped seeds, per call:")
  print(common.table(shuffle, SHUFFLE_COLUMNS))
  record["shuffle"] = shuffle
  common.write("seeds", args, record, info, partial=is_partial(args))
  return record


def is_partial(args) -> bool:
  """Other problems or group sizes than a full run (``--reps`` alone: still a full run)."""
  return sorted(args.problems) != sorted(PROBLEMS) or sorted(args.groups) != sorted(GROUPS)


if __name__ == "__main__":
  main()
