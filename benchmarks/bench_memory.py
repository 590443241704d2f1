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

Two more arms make the bound explicit (Part I, one leaf, ``--leaves 1``):

* ``pass1``: N and D alone, in the cheapest XLA formulation found — a
  ``fori_loop`` over blocks of ``BLOCK`` elements, each block's θ, u, ā read
  once for both sums (3 arrays: 12·P bytes). Above the cache (P ≥ 1e7) its
  time estimates what any XLA-compiled step spends on N and D. It is an
  estimate, not a proof: a formulation not found could be faster. In cache
  (P ≤ 1e6) it is no bound at all: its time includes a call's fixed cost,
  and homax's own step beats the "bound" there.
* ``part1-blocked``: a prototype (not in homax) of the whole Part I update as
  two blocked ``fori_loop`` passes — the pass above, then every output block
  computed from in-cache inputs and written in place — i.e. the two-pass
  structure done by hand. Checked against ``homax.homogeneity`` (the JSON
  stores the largest relative difference: N and D are summed in another
  order).

From ``pass1``, the best fraction of copy bandwidth an XLA-compiled Part I
step can reach (the estimate above) is ``48·P / (t_pass1 + 36·P / copy_bw) / copy_bw``: the
second pass (9 arrays, 36·P bytes) at exactly copy speed, after the first.

Timing: each configuration is called back to back, its outputs fed to the
next call (so buffers are reused, not freshly allocated), the arms
interleaved; the median of ``reps`` timings. A timing is one call, or with
``--calls k`` > 1 one call of a jitted ``fori_loop`` that runs the step k times
on the device, divided by k (default 1 on the CPU, 20 on a GPU, where one
call's dispatch and wait alone is tens of µs, as long as a copy of 1e6
floats). P = 1e5, 1e6, 1e7 and 1e8 (1e8 is 400 MB per array; about 3.5 GB
in all).

Usage::

  python -m benchmarks.bench_memory
  python -m benchmarks.bench_memory --quick          # P = 1e5, 1e6 only
  python -m benchmarks.bench_memory --sizes 1e7 --reps 11
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

ARRAYS = {"part1": 12, "part2": 10}  # arrays of P float32 an exact step moves
EXTRA_ARRAYS = {"pass1": 3, "part1-blocked": 12}
BLOCK = 1 << 18  # elements per block of the blocked arms (1 MiB per float32 array)
COPY_ARRAYS = {"copy x*1.0001": 2, "copy x+y": 3}
SIZES = (1e5, 1e6, 1e7, 1e8)  # P of a full run; other --sizes make the run partial
SUMS_FORMS_SIZES = (1e5, 2.5e5, 5e5, 1e6, 2e6)


def formula() -> dict[str, str]:
  return {
      "part1": "4*P*(3 + 5 + 4) = 48*P bytes: pass 1 reads theta, u, avg; pass 2 reads theta, u,"
               " avg, mu, nu and writes updates, avg', mu', nu'",
      "part2": "4*P*(3 + 4 + 3) = 40*P bytes: pass 1 reads theta, u, avg; pass 2 reads theta, u,"
               " avg, history and writes updates, avg', history'",
      "pass1": "4*P*3 = 12*P bytes: reads theta, u, avg once for both N and D (blocked fori_loop)",
      "part1-blocked": "48*P bytes, as part1 (prototype: two blocked passes, not in homax)",
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


def _block_sums(theta, u, avg):
  """(N without ε, D without ε) of θ' = θ + u against ā, by blocks of BLOCK."""
  P = theta.shape[0]
  nb = P // BLOCK

  def body(i, c):
    n, d = c
    sl = lambda x: jax.lax.dynamic_slice(x, (i * BLOCK,), (BLOCK,))
    t, a = sl(theta) + sl(u), sl(avg)
    return n + jnp.sum(jnp.abs(t - a)), d + jnp.sum(jnp.abs(t) + jnp.abs(a))

  zero = jnp.zeros((), jnp.float32)
  n, d = jax.lax.fori_loop(0, nb, body, (zero, zero)) if nb else (zero, zero)
  t, a = theta[nb * BLOCK:] + u[nb * BLOCK:], avg[nb * BLOCK:]
  return n + jnp.sum(jnp.abs(t - a)), d + jnp.sum(jnp.abs(t) + jnp.abs(a))


def pass1(u, theta, avg):
  return _block_sums(theta, u, avg)


def part1_blocked(u, state, theta, learning_rate=1e-3, eps=1e-8):
  """Prototype: ``homax.homogeneity(learning_rate).update`` for one flat leaf, two blocked passes.

  ``state`` is a ``HomogeneityState`` of that transformation (a single-array
  params tree). Values equal homax's up to the order in which N and D are
  summed. Not part of homax: the per-block loop is slower than homax's update
  at 1e6 to 4e6 elements on the machine of RESULTS.md, and it is CPU-only.
  """
  import optax
  from homax._src import derivative as derivative_lib
  P = theta.shape[0]
  nb = P // BLOCK
  k = state.count
  adam_state, rest = state.step_state
  avg, mu, nu = state.running_average, adam_state.mu, adam_state.nu
  n, d = _block_sums(theta, u, avg)
  d = d + eps
  lam = (k + 1.0) / (k + 2.0)  # the default lambda schedule, homax.lambda_schedules.dynamic()
  consts = derivative_lib._case_constants(n, d)
  kf = k.astype(jnp.float32)
  adam = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)

  def block(t, a, ub, mub, nub):
    c, _ = derivative_lib._leaf_coefficient(t, a, n, d, "paper", consts)
    scaled = learning_rate * ((1.0 - lam) * c)
    su, (new_adam, _) = adam.update(scaled, (adam_state._replace(mu=mub, nu=nub), rest), t)
    return ub + su, (t + kf * a) / (kf + 1.0), new_adam.mu, new_adam.nu

  def own(x):
    # A block copied out before any block is written back: with it, XLA updates
    # the four arrays in place instead of copying them whole every iteration.
    return jax.lax.dynamic_update_slice(x, x[:1], (0,))

  def body(i, carry):
    sl = lambda x: own(jax.lax.dynamic_slice(x, (i * BLOCK,), (BLOCK,)))
    ub, ab, mub, nub = (sl(x) for x in carry)
    out = block(sl(theta) + ub, ab, ub, mub, nub)
    return tuple(jax.lax.dynamic_update_slice(x, y, (i * BLOCK,)) for x, y in zip(carry, out))

  carry = (u, avg, mu, nu)
  if nb:
    carry = jax.lax.fori_loop(0, nb, body, carry)
  if nb * BLOCK < P:
    tail = lambda x: own(x[nb * BLOCK:])
    ub, ab, mub, nub = (tail(x) for x in carry)
    out = block(tail(theta) + ub, ab, ub, mub, nub)
    carry = tuple(jax.lax.dynamic_update_slice(x, y, (nb * BLOCK,)) for x, y in zip(carry, out))
  new_u, new_avg, new_mu, new_nu = carry
  new_adam = adam_state._replace(count=optax.safe_increment(adam_state.count), mu=new_mu, nu=new_nu)
  s = 1.0 - n / d
  return new_u, state._replace(
      count=optax.safe_increment(k), running_average=new_avg, step_state=(new_adam, rest),
      homogeneity=(1.0 - lam) * s + lam * state.homogeneity, similarity=s, lam=lam)


def blocked_check(P: int) -> float:
  """Largest |blocked − homax| / max|homax| over the update and the new state's arrays.

  NaN if any array's error is NaN; an error if the two trees' leaves differ in number.
  """
  import homax
  key = jax.random.key(7)
  theta = jax.random.normal(jax.random.fold_in(key, 0), (P,), jnp.float32)
  avg = jax.random.normal(jax.random.fold_in(key, 1), (P,), jnp.float32)
  u = 1e-3 * jax.random.normal(jax.random.fold_in(key, 2), (P,), jnp.float32)
  tx = homax.homogeneity(1e-3)
  state = tx.init(theta)._replace(running_average=avg)
  errors = []
  for _ in range(3):  # three steps: count, moments and average evolve
    ref = jax.jit(tx.update)(u, state, theta)
    got = jax.jit(part1_blocked)(u, state, theta)
    for r, g in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
      scale = float(jnp.max(jnp.abs(r))) or 1.0
      errors.append(float(jnp.max(jnp.abs(r - g))) / scale)
    u, state = ref[0] * 0.5, ref[1]
    theta = theta + ref[0]
  return float(np.max(errors))  # NaN if any error is NaN (Python's max would drop it)


def chained(fn, carry, extra=(), calls=1):
  """A timer of ``carry = fn(*carry, *extra)`` (outputs fed back); compiled and warmed up now.

  With ``calls`` > 1 a timing is one call of a jitted ``fori_loop`` that runs
  ``fn`` ``calls`` times on the device, the carry donated, and the timer
  returns the seconds per step: on a GPU one call's dispatch and wait can take
  as long as moving the data. The carry changes every step, so XLA cannot
  hoist the step out of the loop.
  """
  n = len(carry)
  if calls > 1:
    step = fn

    def loop(*args):  # the carry, then extra: the same call as fn's
      return jax.lax.fori_loop(0, calls, lambda _, c: tuple(step(*c, *args[n:])), args[:n])

    fn = jax.jit(loop, donate_argnums=tuple(range(n)))
  box = [tuple(carry)]

  def go():
    t0 = time.perf_counter()
    box[0] = tuple(fn(*box[0], *extra))
    jax.block_until_ready(box[0])
    return (time.perf_counter() - t0) / calls

  go()  # compile and warm up
  go()
  go.box = box  # the carry now (read by the tests)
  return go


def arms_for(P: int, leaves: int, calls: int = 1):
  """``{name: timer}``; each timer runs ``calls`` calls and returns seconds per call."""
  key = jax.random.key(0)
  timers = {}
  x = jax.random.normal(jax.random.fold_in(key, 0), (P,), jnp.float32)
  y = jax.random.normal(jax.random.fold_in(key, 1), (P,), jnp.float32)
  timers["copy x*1.0001"] = chained(jax.jit(lambda x: (x * 1.0001,), donate_argnums=0), (x,),
                                     calls=calls)
  x2 = jax.random.normal(jax.random.fold_in(key, 2), (P,), jnp.float32)
  timers["copy x+y"] = chained(jax.jit(lambda x, y: (x + y,), donate_argnums=0), (x2,), (y,),
                                calls=calls)
  params = split(jax.random.normal(jax.random.fold_in(key, 3), (P,), jnp.float32), leaves)
  for name in ARRAYS:
    tx = make_tx(name)
    average = split(jax.random.normal(jax.random.fold_in(key, 4), (P,), jnp.float32), leaves)
    state = tx.init(params)
    state = state._replace(running_average=average)
    updates = split(1e-3 * jax.random.normal(jax.random.fold_in(key, 5), (P,), jnp.float32), leaves)
    # updates and state donated: the returned ones are fed to the next call.
    step = jax.jit(lambda u, s, p, tx=tx: tx.update(u, s, p), donate_argnums=(0, 1))
    timers[name] = chained(step, (updates, state), (params,), calls=calls)
    if name == "part1" and leaves == 1:
      x, avg1 = params["w"], jax.random.normal(jax.random.fold_in(key, 4), (P,), jnp.float32)
      u1 = 1e-3 * jax.random.normal(jax.random.fold_in(key, 5), (P,), jnp.float32)
      sums = jax.jit(pass1)

      def pass1_timer(u1=u1, avg1=avg1, x=x):
        # Not chained (its inputs do not change): ``calls`` dispatches, one wait.
        t0 = time.perf_counter()
        out = [sums(u1, x, avg1) for _ in range(calls)]
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / calls

      pass1_timer()  # compile and warm up
      pass1_timer()
      timers["pass1"] = pass1_timer
      blocked = jax.jit(part1_blocked, donate_argnums=(0, 1))
      st1 = tx.init(x)._replace(running_average=jnp.copy(avg1))
      timers["part1-blocked"] = chained(blocked, (jnp.copy(u1), st1), (x,), calls=calls)
  return timers


def bench_size(P: int, leaves: int, reps: int, calls: int = 1):
  timers = arms_for(P, leaves, calls)
  times = common.interleaved(timers, reps)
  t = {k: common.median(v) for k, v in times.items()}
  gbs = {k: 4 * P * COPY_ARRAYS[k] / t[k] / 1e9 for k in COPY_ARRAYS}
  ref_name = max(gbs, key=gbs.get)
  rows = []
  arrays = dict(ARRAYS, **{k: v for k, v in EXTRA_ARRAYS.items() if k in t})
  for name, n_arrays in arrays.items():
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
    if name == "pass1":
      # Pass 2 of Part I (9 arrays) at exactly the copy's speed, after this pass 1.
      best = t[name] + 4 * P * 9 / (gbs[ref_name] * 1e9)
      rows[-1]["best_part1_pct_of_copy"] = 100.0 * 4 * P * 12 / best / 1e9 / gbs[ref_name]
    if name == "part1-blocked" and P <= 10**7:
      rows[-1]["max_rel_diff_vs_homax"] = blocked_check(P)
  return rows


def sums_forms(P: int, reps: int) -> dict:
  """The Part I update (one flat leaf) with N and D summed stacked and directly.

  ``homax.homogeneity(1e-3).update`` compiled twice, with the stacked form
  forced for every size and with it disabled (the module threshold
  ``STACKED_SUMS_MAX_SIZE`` patched while tracing); calls interleaved.
  """
  import homax
  from homax._src import derivative as derivative_lib
  key = jax.random.key(0)
  params = jax.random.normal(jax.random.fold_in(key, 3), (P,), jnp.float32)
  timers = {}
  saved = derivative_lib.STACKED_SUMS_MAX_SIZE
  try:
    for form, limit in (("stacked", 1 << 62), ("direct", -1)):
      derivative_lib.STACKED_SUMS_MAX_SIZE = limit
      tx = homax.homogeneity(1e-3)
      state = tx.init(params)._replace(running_average=jax.random.normal(
          jax.random.fold_in(key, 4), (P,), jnp.float32))
      u = 1e-3 * jax.random.normal(jax.random.fold_in(key, 5), (P,), jnp.float32)
      step = jax.jit(lambda u, s, p, tx=tx: tx.update(u, s, p), donate_argnums=(0, 1))
      # Compiled now, while this form's threshold is set.
      timers[form] = chained(step, (u, state), (params,))
  finally:
    derivative_lib.STACKED_SUMS_MAX_SIZE = saved
  times = common.interleaved(timers, reps)
  return dict(P=P, stacked_ms=1e3 * common.median(times["stacked"]),
              direct_ms=1e3 * common.median(times["direct"]),
              stacked_over_direct=common.paired_ratio(times["stacked"], times["direct"]),
              times_s=times)


SUMS_COLUMNS = (("P", "P", ".1e"), ("stacked_ms", "stacked ms", ".3f"),
                ("direct_ms", "direct ms", ".3f"),
                ("stacked_over_direct", "stacked ÷ direct (paired)", ".3f"))


COLUMNS = (
    ("P", "P", ".0e"), ("config", "config", ""), ("bytes", "bytes", ".3g"),
    ("ms", "ms", ".3f"), ("gb_s", "GB/s", ".1f"), ("copy_gb_s", "x*1.0001 GB/s", ".1f"),
    ("add_gb_s", "x+y GB/s", ".1f"), ("pct_of_copy", "% of copy", ".0f"),
    ("array_passes_at_copy_speed", "passes", ".1f"), ("ideal_arrays", "ideal", "d"),
    ("best_part1_pct_of_copy", "best Part I % (bound)", ".0f"),
    ("max_rel_diff_vs_homax", "rel. diff vs homax", ".1e"),
)


def _size(text: str) -> float:
  """argparse type of --sizes: a number of parameters >= 1 (1e5 and 100000 alike)."""
  value = common.positive_float(text)
  if value < 1 or value != int(value):
    raise argparse.ArgumentTypeError(f"must be a whole number of parameters >= 1, got {text}")
  return value


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--sizes", type=_size, nargs="+", default=None,
                 help="values of P (default 1e5 1e6 1e7 1e8; --quick: 1e5 1e6; others make"
                      " the run partial)")
  p.add_argument("--leaves", type=common.positive_int, default=1,
                 help="split the vector into this many leaves (other than 1: a partial run)")
  p.add_argument("--reps", type=common.positive_int, default=None,
                 help="timings per arm (default 9; 5 at P >= 1e8)")
  p.add_argument("--calls", type=common.positive_int, default=None,
                 help="steps per timing, run in one jitted fori_loop when > 1 (default 1 on the"
                      " CPU, 20 on a GPU, where a call's dispatch and wait is tens of µs;"
                      " another value makes the run partial: kept in benchmarks/results/ only"
                      " with --tag)")
  p.add_argument("--sums-forms", action="store_true",
                 help="instead: the Part I update with N and D summed stacked vs directly"
                      " (default sizes 1e5 2.5e5 5e5 1e6 2e6; 15 calls each)")
  args = p.parse_args(argv)
  if args.calls is not None and args.sums_forms:
    p.error("--calls does not apply to --sums-forms")
  if args.leaves != 1 and args.sums_forms:
    p.error("--leaves does not apply to --sums-forms (one flat leaf)")
  common.setup_platform(args)
  if args.sums_forms:
    return main_sums_forms(args)
  sizes = [int(s) for s in (args.sizes or ((1e5, 1e6) if args.quick else SIZES))]
  calls = args.calls or default_calls()
  info = common.machine_info()
  print(common.header("homogeneity update vs copy bandwidth (float32)", info))
  for k, v in formula().items():
    print(f"  {k}: {v}")
  rows = []
  record = dict(
      settings=dict(sizes=sizes, leaves=args.leaves, dtype="float32",
                    bytes_formula=formula(),
                    reference="max of the two copy bandwidths, same size, same run",
                    calls_per_timing=calls,
                    statistic="median of back-to-back donated calls (with calls_per_timing > 1:"
                              " steps of one jitted fori_loop), arms interleaved"),
      rows=rows,
  )
  for P in sizes:
    reps = args.reps or (3 if args.quick else (5 if P >= 10**8 else 9))
    n_rows = len(rows)
    rows += bench_size(P, args.leaves, reps, calls)
    print(common.table(rows[n_rows:], COLUMNS), flush=True)
    common.progress("memory", args, record, info)
  print()
  print(common.table(rows, COLUMNS))
  common.write("memory", args, record, info, partial=is_partial(args, sizes, calls))
  return record


def default_calls() -> int:
  """Steps per timing of a full run: 1 on the CPU, 20 on a GPU."""
  return 20 if common.jax_device()["platform"] == "gpu" else 1


def is_partial(args, sizes, calls) -> bool:
  """Whether the run measured other than a full run: other sizes, leaves or steps per timing.

  ``--calls`` at the platform's default (1 on the CPU, 20 on a GPU) is a full
  run; another value changes what a timing holds (e.g. ``--calls 1`` on a GPU
  times dispatch, not the step). ``--reps`` alone does not make a run partial.
  """
  return sorted(sizes) != sorted(int(s) for s in SIZES) or args.leaves != 1 or calls != default_calls()


def main_sums_forms(args):
  sizes = [int(s) for s in (args.sizes or SUMS_FORMS_SIZES)]
  info = common.machine_info()
  print(common.header("Part I update: N and D stacked vs direct (float32, one leaf)", info))
  rows = []
  for P in sizes:
    rows.append(sums_forms(P, args.reps or (3 if args.quick else 15)))
    print(common.table(rows[-1:], SUMS_COLUMNS), flush=True)
  print()
  print(common.table(rows, SUMS_COLUMNS))
  record = dict(settings=dict(sizes=sizes, statistic="median of interleaved donated calls;"
                              " ratio: median of per-call ratios"), rows=rows)
  common.write("memory_sums", args, record, info,
               partial=sizes != [int(s) for s in SUMS_FORMS_SIZES])
  return record


if __name__ == "__main__":
  main()
