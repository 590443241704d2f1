r"""The homogeneity update against the memory limit.

One jitted ``tx.update`` of ``homax.homogeneity`` alone on a flat float32
parameter vector of P elements (``--leaves 4`` splits it into four leaves),
its input updates and optimizer state donated. Two configurations:

* ``part1``: ``homax.homogeneity(1e-3)`` — the Table-1 rule, no history, a
  second Adam as the step (Part I);
* ``part2``: ``homax.homogeneity(1e-3, rule="paper-full", history=True,
  step="sgd", direction="ascend")`` (Part II).

Bytes an exact step must move (b = 4 bytes per float32 element). N and D are
global sums, so the update of any element needs both: one pass reads what
forms θ' = θ + u and ā to compute N and D, and a second pass reads them again,
with the state, and writes the outputs (the returned updates, the new ā and
the new state)::

  Part I : pass 1 reads θ, u, ā (3); pass 2 reads θ, u, ā, μ, ν (5) and
           writes u_out, ā', μ', ν' (4)            -> 12 arrays: 48·P bytes
  Part II: pass 1 reads θ, u, ā (3); pass 2 reads θ, u, ā, g (4) and
           writes u_out, ā', g' (3)                -> 10 arrays: 40·P bytes

(μ, ν: the step Adam's moments; g: the history.) Achieved bandwidth = these
bytes / the measured time, and it is compared with a copy bandwidth measured
in the same run on arrays of the same size: the jitted, donated ``x * 1.0001``
(reads and writes P: 8·P bytes) and ``x + y`` (12·P bytes); the reference is
the higher of the two. The percentage is of that reference, so 100% means the
update moves its necessary bytes as fast as a copy does.

Timing: each configuration is called back to back, its outputs fed to the
next call (so buffers are reused, not freshly allocated), the arms
interleaved; the median of ``reps`` calls. P = 1e5, 1e6, 1e7 and 1e8 (1e8 is
400 MB per array; about 3.5 GB in all).

Usage::

  python -m benchmarks.bench_memory
  python -m benchmarks.bench_memory --quick          # P = 1e5, 1e6 only
  python -m benchmarks.bench_memory --sizes 1e7 --reps 11
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from benchmarks import common

ARRAYS = {"part1": 12, "part2": 10}  # arrays of P float32 an exact step moves
COPY_ARRAYS = {"copy x*1.0001": 2, "copy x+y": 3}


def formula() -> dict[str, str]:
  return {
      "part1": "4*P*(3 + 5 + 4) = 48*P bytes: pass 1 reads theta, u, avg; pass 2 reads theta, u,"
               " avg, mu, nu and writes updates, avg', mu', nu'",
      "part2": "4*P*(3 + 4 + 3) = 40*P bytes: pass 1 reads theta, u, avg; pass 2 reads theta, u,"
               " avg, history and writes updates, avg', history'",
      "copy x*1.0001": "4*P*2 = 8*P bytes (read x, write x)",
      "copy x+y": "4*P*3 = 12*P bytes (read x, y, write x)",
  }


def split(x, leaves):
  if leaves == 1:
    return {"w": x}
  parts = jnp.array_split(x, leaves)
  return {f"w{i}": p for i, p in enumerate(parts)}


def make_tx(name):
  import homax
  if name == "part1":
    return homax.homogeneity(1e-3)
  return homax.homogeneity(1e-3, rule="paper-full", history=True, step="sgd", direction="ascend")


def arms_for(P: int, leaves: int):
  """``{name: timer}``; each timer runs one call and returns its seconds."""
  key = jax.random.key(0)
  timers = {}

  def chained(fn, carry, extra=()):
    box = [carry]

    def go():
      t0 = time.perf_counter()
      box[0] = fn(*box[0], *extra)
      jax.block_until_ready(box[0])
      return time.perf_counter() - t0

    go()  # compile and warm up
    go()
    return go

  x = jax.random.normal(jax.random.fold_in(key, 0), (P,), jnp.float32)
  y = jax.random.normal(jax.random.fold_in(key, 1), (P,), jnp.float32)
  timers["copy x*1.0001"] = chained(jax.jit(lambda x: (x * 1.0001,), donate_argnums=0), (x,))
  x2 = jax.random.normal(jax.random.fold_in(key, 2), (P,), jnp.float32)
  timers["copy x+y"] = chained(jax.jit(lambda x, y: (x + y,), donate_argnums=0), (x2,), (y,))
  params = split(jax.random.normal(jax.random.fold_in(key, 3), (P,), jnp.float32), leaves)
  for name in ARRAYS:
    tx = make_tx(name)
    average = split(jax.random.normal(jax.random.fold_in(key, 4), (P,), jnp.float32), leaves)
    state = tx.init(params)
    state = state._replace(running_average=average)
    updates = split(1e-3 * jax.random.normal(jax.random.fold_in(key, 5), (P,), jnp.float32), leaves)
    # updates and state donated: the returned ones are fed to the next call.
    step = jax.jit(lambda u, s, p, tx=tx: tx.update(u, s, p), donate_argnums=(0, 1))
    timers[name] = chained(step, (updates, state), (params,))
  return timers


def bench_size(P: int, leaves: int, reps: int):
  timers = arms_for(P, leaves)
  times = common.interleaved(timers, reps)
  t = {k: common.median(v) for k, v in times.items()}
  gbs = {k: 4 * P * COPY_ARRAYS[k] / t[k] / 1e9 for k in COPY_ARRAYS}
  ref_name = max(gbs, key=gbs.get)
  rows = []
  for name, n_arrays in ARRAYS.items():
    nbytes = 4 * P * n_arrays
    achieved = nbytes / t[name] / 1e9
    rows.append(dict(
        P=P, leaves=leaves, config=name, bytes=nbytes, ms=1e3 * t[name],
        gb_s=achieved, copy_gb_s=gbs["copy x*1.0001"], add_gb_s=gbs["copy x+y"],
        reference=ref_name, pct_of_copy=100.0 * achieved / gbs[ref_name],
        # How many copy-speed passes over P floats the step costs (ideal: n_arrays).
        array_passes_at_copy_speed=t[name] * gbs[ref_name] * 1e9 / (4 * P),
        ideal_arrays=n_arrays, times_s=times[name],
        copy_times_s={k: times[k] for k in COPY_ARRAYS},
    ))
  return rows


COLUMNS = (
    ("P", "P", ".0e"), ("config", "config", ""), ("bytes", "bytes", ".3g"),
    ("ms", "ms", ".3f"), ("gb_s", "GB/s", ".1f"), ("copy_gb_s", "x*1.0001 GB/s", ".1f"),
    ("add_gb_s", "x+y GB/s", ".1f"), ("pct_of_copy", "% of copy", ".0f"),
    ("array_passes_at_copy_speed", "passes", ".1f"), ("ideal_arrays", "ideal", "d"),
)


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--sizes", type=float, nargs="*", default=None,
                 help="values of P (default 1e5 1e6 1e7 1e8; --quick: 1e5 1e6)")
  p.add_argument("--leaves", type=int, default=1, help="split the vector into this many leaves")
  p.add_argument("--reps", type=int, default=None, help="timed calls per arm (default 9)")
  args = p.parse_args(argv)
  common.setup_platform(args)
  sizes = [int(s) for s in (args.sizes or ((1e5, 1e6) if args.quick else (1e5, 1e6, 1e7, 1e8)))]
  info = common.machine_info()
  print(common.header("homogeneity update vs copy bandwidth (float32)", info))
  for k, v in formula().items():
    print(f"  {k}: {v}")
  rows = []
  for P in sizes:
    reps = args.reps or (3 if args.quick else (5 if P >= 10**8 else 9))
    rows += bench_size(P, args.leaves, reps)
    print(common.table(rows[-len(ARRAYS):], COLUMNS), flush=True)
  print()
  print(common.table(rows, COLUMNS))
  record = dict(
      settings=dict(sizes=sizes, leaves=args.leaves, dtype="float32",
                    bytes_formula=formula(),
                    reference="max of the two copy bandwidths, same size, same run",
                    statistic="median of back-to-back donated calls, arms interleaved"),
      rows=rows,
  )
  common.write("memory", args, record, info)
  return record


if __name__ == "__main__":
  main()
