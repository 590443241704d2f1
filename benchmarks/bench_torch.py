"""homax against the published code: the article's PyTorch training loop.

"The published code" is ``tests/torch_reference.py``, a re-implementation of
the seed's loop with its mechanics kept: ``torch.cat`` of every parameter into
one vector after the backprop step, the Table-1 derivative built with boolean
masks and indexed assignment, and a second ``torch.optim.Adam`` for the
homogeneity step (Part I). This script times its ``run_homogeneity`` (variant
A-B) and its plain-Adam loop ``run_adam`` (the seed's ``train_traditional``),
each over ``steps`` steps of the paper's MLP 784→128→10, with the seed's
per-step monitoring (``loss.item()`` etc., ``bookkeeping=True``) and without it.
torch runs on the CPU with its default number of threads (on CUDA when jax
runs on a GPU and torch has CUDA), in a process of its own
(``benchmarks/torch_worker.py``) so that jax's threads and torch's do not
compete inside one process; the runs of both are still interleaved. Each
homax arm runs right after a torch run (``ORDER``): a jax run that follows a
torch run is slower than one that follows a jax run, so an order in which
homax's Adam arm followed torch more often than its homogeneity arm would
shrink homax's homogeneity part (found in session 13; the order rotated all
six arms before).

homax runs the same model and batch sizes on synthetic data of the same kind
(standard-normal inputs, uniform labels, a pool of 16 batches cycled through;
drawn by each framework, so not the same values or initial weights) as one jitted
``lax.scan`` of ``steps`` steps with donated buffers (the ``adam`` and
``part1`` arms of ``bench_overhead``).

Reported per batch size: the per-step time of each loop; homax's whole-step
speed-up, ``torch homogeneity step / homax homogeneity step``; and how much
cheaper the homogeneity *part* of a step is,
``(torch homog − torch Adam) / (homax homog − homax Adam)``, from the
medians of ``reps`` interleaved repetitions, and "paired": from the median
over repetitions of each repetition's difference (homog − Adam), which
cancels slow spells of a shared machine.

Usage::

  python -m benchmarks.bench_torch
  python -m benchmarks.bench_torch --quick
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import jax

from benchmarks import bench_overhead
from benchmarks import common

BATCHES = (5, 128, 420)
LR, LR_H = bench_overhead.LR, bench_overhead.LR_H
PAUSE_S = 0.05
# The arms' order within a repetition: groups rotate from one repetition to the
# next, and each homax arm runs right after the torch arm of its group.
ORDER = (("torch adam", "homax adam"), ("torch homog", "homax homog"),
         ("torch adam (no monitor)",), ("torch homog (no monitor)",))


class TorchWorker:
  """The published loops, timed in a separate process (see ``torch_worker``)."""

  def __init__(self, device: str):
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.torch_worker", device, repr(LR), repr(LR_H)],
        cwd=common.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.hello = json.loads(self.proc.stdout.readline())

  def time(self, batch: int, arm: str, steps: int) -> float:
    self.proc.stdin.write(json.dumps({"batch": batch, "arm": arm, "steps": steps}) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError("the torch worker died; see its error above")
    return json.loads(line)["seconds"]

  def close(self):
    try:
      self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
      self.proc.stdin.flush()
    except (BrokenPipeError, ValueError):
      pass
    self.proc.wait(timeout=60)


def torch_arms(worker: TorchWorker, batch: int, steps: int):
  """Timers for the reference's Adam and homogeneity (A-B) loops, with and without monitoring."""

  def timer(arm):
    def go():
      time.sleep(PAUSE_S)  # let jax's worker threads go idle first
      return worker.time(batch, arm, steps)
    return go

  return {
      "torch adam": timer("adam"), "torch homog": timer("homog"),
      "torch adam (no monitor)": timer("adam_nomon"),
      "torch homog (no monitor)": timer("homog_nomon"),
  }


def homax_arms(batch: int, steps: int):
  """Timers for homax's ``adam`` and ``part1`` arms (as in bench_overhead)."""
  import jax.numpy as jnp
  model, params0, average, xs, ys = bench_overhead.setup("mlp", 128, batch)
  timers = {}
  for arm, name in (("adam", "homax adam"), ("part1", "homax homog")):
    tx = bench_overhead.make_tx(arm, average, steps)
    run = bench_overhead.make_run(model, tx, steps)
    params = jax.tree.map(jnp.copy, params0)
    state = jax.tree.map(jnp.copy, tx.init(params))
    params, state, loss = run(params, state, xs, ys)
    jax.block_until_ready(loss)
    live = [params, state]

    def go(run=run, live=live):
      t0 = time.perf_counter()
      live[0], live[1], loss = run(live[0], live[1], xs, ys)
      jax.block_until_ready((live[0], loss))
      return time.perf_counter() - t0

    timers[name] = go
  return timers


def bench_batch(worker, batch, steps, reps):
  timers = {**homax_arms(batch, steps), **torch_arms(worker, batch, steps)}
  for name, fn in timers.items():  # warm-up (torch allocator, jit already compiled)
    if name.startswith("torch"):
      fn()
  times = common.interleaved(timers, reps, groups=ORDER)
  t = {k: common.median(v) / steps for k, v in times.items()}
  row = dict(batch=batch, steps=steps, reps=reps,
             **{k.replace(" ", "_").replace("(", "").replace(")", "") + "_us": 1e6 * v
                for k, v in t.items()})
  row["speedup_whole_step"] = t["torch homog"] / t["homax homog"]
  row["speedup_whole_step_no_monitor"] = t["torch homog (no monitor)"] / t["homax homog"]
  part_h = t["homax homog"] - t["homax adam"]
  part_t = t["torch homog"] - t["torch adam"]
  part_t_nm = t["torch homog (no monitor)"] - t["torch adam (no monitor)"]
  row["homax_part_us"] = 1e6 * part_h
  row["torch_part_us"] = 1e6 * part_t
  row["torch_part_no_monitor_us"] = 1e6 * part_t_nm
  # A homogeneity part at or below 0 is within the noise: no finite ratio.
  row["part_cheaper_x"] = part_t / part_h if part_h > 0 else None
  row["part_cheaper_no_monitor_x"] = part_t_nm / part_h if part_h > 0 else None
  # Paired: the median over repetitions of (homog - Adam) within a repetition.
  ph = common.paired_difference(times["homax homog"], times["homax adam"]) / steps
  pt = common.paired_difference(times["torch homog"], times["torch adam"]) / steps
  row["homax_part_paired_us"] = 1e6 * ph
  row["torch_part_paired_us"] = 1e6 * pt
  row["part_cheaper_paired_x"] = pt / ph if ph > 0 else None
  row["times_s"] = times
  return row


COLUMNS = (
    ("batch", "batch", "d"),
    ("torch_adam_us", "torch adam µs", ".0f"), ("torch_homog_us", "torch homog µs", ".0f"),
    ("homax_adam_us", "homax adam µs", ".0f"), ("homax_homog_us", "homax homog µs", ".0f"),
    ("speedup_whole_step", "step ×", ".1f"),
    ("torch_part_us", "torch part µs", ".0f"), ("homax_part_us", "homax part µs", ".0f"),
    ("part_cheaper_x", "part ×", ".1f"), ("part_cheaper_paired_x", "part × paired", ".1f"),
    ("torch_homog_no_monitor_us", "torch homog µs (no monitor)", ".0f"),
    ("part_cheaper_no_monitor_x", "part × (no monitor)", ".1f"),
)


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--steps", type=common.positive_int, default=None,
                 help=f"steps per timed run (default {bench_overhead.STEPS}; another value"
                      " makes the run partial)")
  p.add_argument("--reps", type=common.positive_int, default=None, help="repetitions (default 15)")
  p.add_argument("--batches", type=common.positive_int, nargs="+", default=list(BATCHES),
                 help=f"batch sizes (default {' '.join(map(str, BATCHES))}; others make the run"
                      " partial)")
  args = p.parse_args(argv)
  common.setup_platform(args)
  steps = args.steps or (40 if args.quick else bench_overhead.STEPS)
  reps = args.reps or (2 if args.quick else 15)
  device = common.torch_device(args)
  worker = TorchWorker(device)
  info = common.machine_info()
  info["torch_device"] = device
  info["torch_worker"] = worker.hello
  print(common.header("homax vs the published (torch) loop, MLP 784-128-10, variant A-B", info))
  rows = []
  record = dict(
      settings=dict(steps=steps, reps=reps, torch_device=device, variant="A-B",
                    learning_rate=LR, homogeneity_learning_rate=LR_H,
                    data="synthetic: N(0,1) inputs, uniform labels, 16 batches cycled",
                    reference="tests/torch_reference.py run_homogeneity / run_adam",
                    statistic="median over interleaved repetitions of a whole run / steps"),
      rows=rows,
  )
  try:
    for batch in args.batches:
      rows.append(bench_batch(worker, batch, steps, reps))
      print(common.table(rows[-1:], COLUMNS), flush=True)
      common.progress("torch", args, record, info)
  finally:
    worker.close()
  print()
  print(common.table(rows, COLUMNS))
  common.write("torch", args, record, info, partial=is_partial(args))
  return record


def is_partial(args) -> bool:
  """Other batch sizes or steps than a full run (``--reps`` alone: still a full run)."""
  return (sorted(args.batches) != sorted(BATCHES)
          or (args.steps is not None and args.steps != bench_overhead.STEPS))


if __name__ == "__main__":
  main()
