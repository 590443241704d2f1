"""Where a training step's time goes: XLA's per-kernel profile of two arms of ``bench_overhead``.

Runs the jitted 200-step training run of ``bench_overhead`` (same model, data and
optimizers) for each arm under ``jax.profiler.trace``, reads the Perfetto trace
it writes, and prints every XLA kernel (fusion, copy, dot, reduction) with its
time per training step, the arms side by side, and the difference. On a GPU
only the device's events count (the kernels on its streams), not the host's
launches and waits (:func:`kernel_events`). Kernels are
matched by name within an arm only (names differ between programs); the totals
and the copies of whole parameter-sized arrays are what compare across arms.
The profiler adds overhead to every kernel, so the absolute times are above
``bench_overhead``'s; the ranking and the copies are the point.

Usage::

  python -m benchmarks.profile_step                       # adam vs part1, MLP 784-128-10, batch 128
  python -m benchmarks.profile_step --arms adam part2 --batch 420 --top 15
  python -m benchmarks.profile_step --iris-seeds          # one vmapped 32-seed Iris epoch
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import tempfile

import jax
import jax.numpy as jnp

from benchmarks import bench_overhead, common

STEPS = 200
RUNS = 5
_NOT_KERNELS = ("$", "Thunk", "Pjit", "Common", "while", "Slinky", "np.asarray", "ArrayImpl",
                "ThreadpoolListener")
# Lines of a device plane that profiler tools derive from the kernels (one event
# per XLA op or module, spanning its kernels): where a trace holds them,
# counting them would count the kernels' time again.
_DERIVED_LINES = frozenset({"XLA Modules", "XLA Ops", "Async XLA Ops", "Framework Ops",
                            "Framework Name Scope", "Steps", "Launch Stats", "Source code"})


def kernel_times(arm: str, batch: int, hidden: int = 128, hlo_dir: str | None = None
                 ) -> tuple[dict[str, float], list[str], float]:
  """``({kernel: µs per training step}, [parameter-sized copies], kernels per step)``.

  With ``hlo_dir``, the compiled program's text is written to
  ``<hlo_dir>/<arm>_b<batch>.hlo.txt``.
  """
  model, params, average, xs, ys = bench_overhead.setup("mlp", hidden, batch)
  tx = bench_overhead.make_tx(arm, average, STEPS)
  run = bench_overhead.make_run(model, tx, STEPS)
  state = jax.tree.map(jnp.copy, tx.init(params))
  params = jax.tree.map(jnp.copy, params)
  shapes = {"f32[" + ",".join(map(str, x.shape)) + "]"
            for x in jax.tree.leaves(params) if x.size > 1000}
  hlo = run.lower(params, state, xs, ys).compile().as_text()
  if hlo_dir:
    import pathlib
    pathlib.Path(hlo_dir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(hlo_dir) / f"{arm.replace('+', '_')}_b{batch}.hlo.txt").write_text(hlo)
  copies = [line.split("=")[0].strip() for line in hlo.splitlines()
            if " copy(" in line and line.split("=")[1].split("{")[0].strip() in shapes]
  box = [params, state]

  def call():
    box[0], box[1], loss = run(box[0], box[1], xs, ys)
    jax.block_until_ready(loss)

  call()
  times, counts = _profiled(call, RUNS, with_counts=True)
  return ({k: v / STEPS for k, v in times.items()}, copies,
          sum(counts.values()) / STEPS)


def _profiled(call, runs: int, with_counts: bool = False):
  """``{kernel: µs per call}`` of ``call()`` run ``runs`` times under the profiler
  (and ``{kernel: events per call}`` with ``with_counts``)."""
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      for _ in range(runs):
        call()
    trace_file = glob.glob(f"{log_dir}/**/*.trace.json.gz", recursive=True)[0]
    with gzip.open(trace_file) as f:
      events = json.load(f)["traceEvents"]
  total = collections.Counter()
  count = collections.Counter()
  for e in kernel_events(events):
    total[e["name"]] += e.get("dur", 0)
    count[e["name"]] += 1
  times = {k: v / runs for k, v in total.items()}
  if with_counts:
    return times, {k: v / runs for k, v in count.items()}
  return times


def kernel_events(events: list[dict]) -> list[dict]:
  """The kernels among a trace's events (``traceEvents`` of jax's Perfetto JSON).

  A trace with device processes (a GPU's: a ``process_name`` metadata event
  whose ``args.name`` starts with ``/device:``, e.g. ``/device:GPU:0``): the
  complete (``"X"``) events of those processes, less the lines derived from
  them (``XLA Ops``, ``XLA Modules``, ...). The host's events (kernel
  launches, stream syncs, the executable's ``Execute`` spans) are not kernel
  time, and counting them would count each kernel twice.

  A trace without (XLA:CPU, where the kernels run on the host's threads): every
  complete event but the host-side spans named in ``_NOT_KERNELS`` and the
  ``end: <kernel>`` events nested in their kernel's own.
  """
  devices = {e.get("pid") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"
             and str(e.get("args", {}).get("name", "")).startswith("/device:")}
  complete = [e for e in events if e.get("ph") == "X"]
  if devices:
    derived = {(e.get("pid"), e.get("tid")) for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"
               and e.get("pid") in devices and e.get("args", {}).get("name") in _DERIVED_LINES}
    return [e for e in complete
            if e.get("pid") in devices and (e.get("pid"), e.get("tid")) not in derived]
  return [e for e in complete
          if not e["name"].startswith(_NOT_KERNELS) and not e["name"].startswith("end: ")]


def iris_epoch_times(seeds: int = 32, runs: int = 20) -> dict[str, float]:
  """``{kernel: µs per epoch}`` of the vmapped Iris epoch of ``bench_seeds`` (``seeds`` seeds).

  The compiled epoch of ``experiments.train.PairedTrainer`` on ``bench_seeds``'
  Iris problem, each call followed by the ``device_get`` of its records, as
  in ``train_paired``.
  """
  import numpy as np
  from benchmarks import bench_seeds
  from experiments.train import PairedTrainer
  prob = bench_seeds.iris_problem()
  trainer = PairedTrainer(model=prob["model"], make_homogeneity_tx=prob["make_tx"],
                          adam_tx=prob["adam"], batch_size=prob["batch"])
  d = prob["data"]
  arrays = [jnp.asarray(x) for x in (d.x_train, d.y_train, d.x_val, d.y_val)]
  run, _ = trainer.compiled_epoch(int(arrays[0].shape[0]))
  carry, keys = trainer.init(np.arange(seeds))
  box, epoch = [carry], [0]

  def call():
    box[0], out = run(box[0], keys, epoch[0], *arrays)
    jax.device_get(out)
    epoch[0] += 1

  for _ in range(3):  # compile and warm up
    call()
  return _profiled(call, runs)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arms", nargs="+", default=["adam", "part1"],
                 choices=bench_overhead.ARMS + bench_overhead.EXTRA_ARMS,
                 help="arms to profile (default: adam part1); the last minus the first is printed")
  p.add_argument("--batch", type=common.positive_int, default=128)
  p.add_argument("--top", type=common.positive_int, default=20, help="kernels listed per arm")
  p.add_argument("--hlo-dir", default=None,
                 help="also write each arm's compiled program (HLO text) into this folder")
  p.add_argument("--iris-seeds", action="store_true",
                 help="instead: the kernels of one vmapped 32-seed Iris epoch (bench_seeds)")
  args = p.parse_args(argv)
  if args.iris_seeds:
    times = iris_epoch_times()
    kernels = times
    print(f"# per-kernel time per vmapped 32-seed Iris epoch (µs, under the profiler),"
          f" jax {jax.__version__} on {jax.devices()[0].platform}:"
          f" {sum(kernels.values()):.0f} µs of kernels")
    for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[:args.top]:
      print(f"  {us:8.1f}  {name}")
    return
  print(f"# per-kernel time per training step (µs, under the profiler), MLP 784-128-10,"
        f" batch {args.batch}, jax {jax.__version__} on {jax.devices()[0].platform}")
  totals = {}
  for arm in args.arms:
    times, copies, kernels = kernel_times(arm, args.batch, hlo_dir=args.hlo_dir)
    totals[arm] = sum(times.values())
    print(f"\n## {arm}: {totals[arm]:.0f} µs of kernels per step, {kernels:.1f} kernel events"
          f" per step; copies of parameter-sized arrays: {', '.join(copies) or 'none'}")
    for name, us in sorted(times.items(), key=lambda kv: -kv[1])[:args.top]:
      print(f"  {us:8.1f}  {name}")
  a, b = args.arms[0], args.arms[-1]
  print(f"\n{b} − {a}: {totals[b] - totals[a]:.0f} µs of kernels per step (one profile per arm,"
        " not interleaved: on the CPU this difference moves by hundreds of µs between runs; the"
        " interleaved medians of bench_overhead measure it)")


if __name__ == "__main__":
  main()
