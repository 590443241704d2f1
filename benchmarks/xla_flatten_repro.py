"""Why ``optax.flatten`` around homax is slow on a multi-core CPU: XLA's, not homax's.

``bench_overhead --arms part1-flatten`` found a step with
``optax.flatten(paper_optimizer)`` up to 21× as long as an Adam step with the
two threads of this CPU (batch 5), and as fast as the pytree on one core.
This script reproduces it **without homax**: a 30-line step on the paper
MLP's four leaves that does what ``optax.flatten`` and a homogeneity-like
update do — concatenate the leaves, add an update (XLA fuses the two into one
kernel), take two global sums of the result (XLA:CPU hands them to YNNPACK)
and write a running average and the params back — inside a 200-step
``lax.scan``.

The cases: both cores or one (``os.sched_setaffinity``), XLA's YNNPACK
fusions on (default) or off (``--xla_cpu_experimental_ynn_fusion_type=``),
and the step with or without the two sums ("no sums": the concatenation
alone). Each case runs in 3 processes of its own (1 with ``--quick``),
because the thread count and ``XLA_FLAGS`` are fixed when jax starts, and
because the slow case is bimodal: most repetitions take ~2 ms per step, some
~0.25 ms, and a whole process can land in either. The table gives the median
over every repetition of every process, the fastest and the slowest.

Usage::

  python -m benchmarks.xla_flatten_repro            # 8 cases × 3 processes, ~1 min
  python -m benchmarks.xla_flatten_repro --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks import common

SHAPES = ((128,), (784, 128), (10,), (128, 10))  # the paper MLP's leaves, sorted as in its dict
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
STEPS = 200


def _child(variant: str, reps: int) -> dict:
  """Times the step in this process (jax starts here, with this process's flags)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  sizes = [int(np.prod(s)) for s in SHAPES]
  n = sum(sizes)

  def flat(leaves):
    return jnp.concatenate([x.ravel() for x in leaves])

  def unflat(v):
    out, i = [], 0
    for s, k in zip(SHAPES, sizes):
      out.append(v[i:i + k].reshape(s))
      i += k
    return out

  @jax.jit
  def run(leaves, mu, avg):
    def body(carry, _):
      leaves, mu, avg = carry
      mu = 0.9 * mu + 0.1 * flat(leaves)  # a flat optimizer state, as under optax.flatten
      u = -1e-3 * mu / (jnp.abs(mu) + 1e-8)
      theta = flat(leaves) + u  # the concatenation, fused with this add
      if variant == "sums":
        s = jnp.sum(jnp.abs(theta - avg))
        t = jnp.sum(jnp.abs(theta) + jnp.abs(avg))
        step = 1e-6 * jnp.where(theta > avg, s / t, -s / t)
        new_avg = (theta + 3.0 * avg) / 4.0
        update = u + step
      else:
        new_avg = 0.5 * (theta + avg)
        update = u
      return ([p + d for p, d in zip(leaves, unflat(update))], mu, new_avg), None

    return jax.lax.scan(body, (leaves, mu, avg), None, length=STEPS)[0]

  args = ([jnp.full(s, 0.01) for s in SHAPES], jnp.zeros(n), jnp.zeros(n))
  jax.block_until_ready(run(*args))
  times = [common.timed(lambda: jax.block_until_ready(run(*args))) for _ in range(reps)]
  hlo = run.lower(*args).compile().as_text()
  fusions = [line.split("=")[0].strip().lstrip("%") for line in hlo.splitlines()
             if " fusion(" in line]
  kernels = sorted({k for k in fusions if "concatenate" in k or "ynn" in k})
  return dict(us_per_step=1e6 * common.median(times) / STEPS, times_s=times,
              concat_or_ynn_kernels=", ".join(kernels))


def main(argv=None):
  p = common.parser(__doc__.split("\n")[0])
  p.add_argument("--child", nargs=2, metavar=("VARIANT", "REPS"), help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(_child(args.child[0], int(args.child[1]))))
    return None
  if args.platform == "gpu":
    raise SystemExit("xla_flatten_repro: a CPU-only repro (thread count and XLA:CPU flags).")
  reps = 3 if args.quick else 7
  procs = 1 if args.quick else 3
  # The children run on the CPU; so does this process, so that the record's
  # device and file name say cpu on a machine with a GPU too.
  args.platform = "cpu"
  common.setup_platform(args)
  info = common.machine_info()
  print(common.header("optax.flatten-like step without homax: XLA:CPU threads × YNNPACK", info))
  cpus = sorted(os.sched_getaffinity(0))
  rows = []
  for variant in ("sums", "no sums"):
    for ynn in (True, False):
      for threads in ("all", "one"):
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = flags if ynn else f"{flags} {NO_YNN}".strip()
        code = ("import os; "
                + (f"os.sched_setaffinity(0, {{{cpus[0]}}}); " if threads == "one" else "")
                + "from benchmarks import xla_flatten_repro as r; "
                f"r.main(['--child', {variant.replace(' ', '_')!r}, '{reps}'])")
        runs = []
        for _ in range(procs):
          out = subprocess.run([sys.executable, "-c", code], env=env, cwd=common.ROOT,
                               capture_output=True, text=True, check=False)
          if out.returncode != 0:
            raise SystemExit(f"xla_flatten_repro: case {variant}/{ynn}/{threads} failed:\n"
                             f"{out.stderr[-2000:]}")
          runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        per_step = [1e6 * t / STEPS for r in runs for t in r["times_s"]]
        rows.append(dict(variant=variant, ynnpack_fusions="on" if ynn else "off",
                         cores=len(cpus) if threads == "all" else 1,
                         us_per_step=common.median(per_step), min_us=min(per_step),
                         max_us=max(per_step),
                         process_medians_us=[r["us_per_step"] for r in runs],
                         concat_or_ynn_kernels=runs[0]["concat_or_ynn_kernels"],
                         times_s=[r["times_s"] for r in runs]))
        print(common.table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
  print()
  print(common.table(rows, COLUMNS))
  common.write("xla_flatten_repro", args, dict(
      settings=dict(steps=STEPS, reps=reps, processes=procs, leaves=SHAPES, no_ynn_flag=NO_YNN,
                    statistic="median over every repetition of every process of one whole"
                              " lax.scan run / steps"),
      rows=rows), info)
  return rows


COLUMNS = (
    ("variant", "variant", ""), ("ynnpack_fusions", "YNNPACK fusions", ""),
    ("cores", "cores", "d"), ("us_per_step", "µs/step", ".1f"),
    ("min_us", "fastest", ".1f"), ("max_us", "slowest", ".1f"),
    ("concat_or_ynn_kernels", "concatenate / YNN kernels", ""),
)

if __name__ == "__main__":
  main()
