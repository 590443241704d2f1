"""Shared helpers of the benchmarks: options, machine info, tables and JSON output.

Every benchmark script:

* takes ``--quick`` (few repetitions, to check that it runs), ``--platform``
  (``auto``: whatever ``jax.devices()`` gives, i.e. the GPU when jax has one;
  ``cpu``: force the CPU) and ``--tag`` (appended to the output name);
* prints a table and writes one JSON record to ``benchmarks/out/<name>.json``
  (git-ignored) and to ``benchmarks/results/<name>.json`` (kept in git), with
  the machine, the load average before and after, the library versions, the
  date and the exact command. ``<name>`` is the benchmark's name followed by
  the platform (``overhead_cpu``, ``overhead_gpu``, ...) and the tag;
* keeps what it has measured so far in
  ``benchmarks/out/<name>.<start time>.progress.json`` (``progress``) after
  each config, batch, size or problem, so that a run cut short (a ``timeout``,
  Ctrl-C) loses at most the unit in hand; the run's finished record removes
  its own file, and no other run touches it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIRS = (ROOT / "benchmarks" / "out", ROOT / "benchmarks" / "results")


def positive_int(text: str) -> int:
  """argparse type: an int >= 1 (argparse names the option when it refuses one)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
  return value


def positive_float(text: str) -> float:
  """argparse type: a finite float > 0."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
  if not (0.0 < value < float("inf")):
    raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
  return value


def parser(description: str) -> argparse.ArgumentParser:
  """An argument parser with the options every benchmark shares."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true",
                 help="few repetitions and short runs: checks that the script works")
  p.add_argument("--platform", choices=("auto", "cpu", "gpu"), default="auto",
                 help="auto: jax's default device (a GPU if present); cpu: force the CPU;"
                      " gpu: require a GPU (jax on it, torch on CUDA) and fail without one")
  p.add_argument("--tag", default="", help="suffix of the output file name")
  p.add_argument("--no-write", action="store_true", help="print only, write no JSON")
  return p


def setup_platform(args) -> None:
  """Forces jax onto the CPU, or checks for a GPU; call before any jax computation."""
  import jax
  if args.platform == "cpu":
    jax.config.update("jax_platforms", "cpu")
  elif args.platform == "gpu":
    platform_ = jax.devices()[0].platform
    if platform_ != "gpu":
      raise SystemExit(f"--platform gpu: jax's default device is {platform_!r}, not a GPU"
                       " (install jax with CUDA, e.g. `pip install -U jax[cuda12]`).")


def jax_device() -> dict[str, str]:
  """The platform and name of jax's default device."""
  import jax
  dev = jax.devices()[0]
  return {"platform": dev.platform, "device_kind": getattr(dev, "device_kind", str(dev)),
          "count": str(jax.device_count())}


def torch_device(args) -> str:
  """``cuda`` when jax runs on a GPU and torch has CUDA, else ``cpu``."""
  import torch
  if args.platform != "cpu" and jax_device()["platform"] == "gpu" and torch.cuda.is_available():
    return "cuda"
  if args.platform == "gpu":
    raise SystemExit("--platform gpu: torch.cuda.is_available() is False (install a CUDA build of torch).")
  return "cpu"


def torch_sync(device: str) -> None:
  """Waits for queued torch work (CUDA is asynchronous)."""
  if device == "cuda":
    import torch
    torch.cuda.synchronize()


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
  try:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemTotal"):
        return round(int(line.split()[1]) / 2**20, 1)
  except OSError:
    pass
  return None


def _git() -> dict[str, Any]:
  def run(*cmd):
    try:
      return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # pylint: disable=broad-except
      return ""
  return {"commit": run("git", "rev-parse", "HEAD"),
          "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no"))}


def _versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "optax", "flax", "numpy", "torch"):
    mod = sys.modules.get(name)
    if mod is None:
      try:
        mod = __import__(name)
      except ImportError:
        continue
    out[name] = getattr(mod, "__version__", "?")
  return out


def machine_info() -> dict[str, Any]:
  """What a reader needs to judge a timing: machine, load, versions, date, command."""
  info = {
      "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": _command(),
      "cpu": _cpu_model(),
      "nproc": os.cpu_count(),
      "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "mem_total_gib": _mem_total_gib(),
      "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
      "os": platform.platform(),
      "versions": _versions(),
      "jax_device": jax_device(),
      "git": _git(),
      # Settings that change what XLA compiles or how it allocates (e.g.
      # JAX_DEFAULT_MATMUL_PRECISION, XLA_FLAGS, XLA_PYTHON_CLIENT_PREALLOCATE).
      "environment": {k: v for k, v in sorted(os.environ.items())
                      if k.startswith(("JAX_", "XLA_")) or k == "TF_CPP_MIN_LOG_LEVEL"},
  }
  try:
    import torch
    info["torch_threads"] = torch.get_num_threads()
    info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
  except ImportError:
    pass
  return info


def _command() -> str:
  """The command line that ran this process: ``python -m <module> <args>`` (a script run
  by its path inside the repository is named as its module; one outside it by its path)."""
  args = " " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if spec is not None and spec.name:
    return f"python -m {spec.name}{args}"
  path = pathlib.Path(sys.argv[0]).resolve()
  try:
    return "python -m " + ".".join(path.relative_to(ROOT).with_suffix("").parts) + args
  except ValueError:
    return "python " + shlex.quote(str(path)) + args


def output_name(bench: str, args) -> str:
  name = f"{bench}_{jax_device()['platform']}"
  return name + (f"_{args.tag}" if args.tag else "")


def _progress_path(bench: str, args, info: dict[str, Any]) -> pathlib.Path:
  """One file per run: the name has the run's start time (``info["date_utc"]``)."""
  stamp = "".join(c for c in str(info.get("date_utc", ""))[:19] if c.isalnum())
  return OUT_DIRS[0] / f"{output_name(bench, args)}.{stamp}.progress.json"


def progress(bench: str, args, record: dict[str, Any], info: dict[str, Any]) -> None:
  """Keeps an unfinished run's record so far in ``benchmarks/out/`` only.

  Written after each unit of work (config, batch, size, problem), replaced by
  the next, and removed by the same run's ``write``; what a run cut short had
  measured stays there (``"finished": false``), never in ``benchmarks/results/``.
  """
  if args.no_write:
    return
  payload = {"benchmark": bench, "quick": bool(args.quick), "finished": False,
             "machine": info, **record}
  path = _progress_path(bench, args, info)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
  tmp.replace(path)


def write(bench: str, args, record: dict[str, Any], info: dict[str, Any],
          partial: bool = False) -> list[pathlib.Path]:
  """Writes ``{"machine": info, **record}`` to the output directories.

  ``benchmarks/results/`` (committed, read by ``summarize``) gets only full
  runs: a ``--quick`` run, and a ``partial`` one (a subset of the configs,
  sizes or problems) without a ``--tag``, go to ``benchmarks/out/`` alone, so
  that they cannot replace a full run's record under the same name.
  """
  info = dict(info)
  info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
  payload = {"benchmark": bench, "quick": bool(args.quick), "partial": bool(partial),
             "machine": info, **record}
  if args.no_write:
    return []
  keep = not args.quick and (not partial or bool(args.tag))
  paths = []
  for d in OUT_DIRS if keep else OUT_DIRS[:1]:
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{output_name(bench, args)}.json"
    path.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    paths.append(path)
  _progress_path(bench, args, info).unlink(missing_ok=True)
  print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in paths))
  if not keep:
    print("(a --quick or partial run: not written to benchmarks/results/; give a partial run"
          " --tag NAME to keep it there)")
  return paths


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  return x


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
  """A plain-text table; ``columns`` are ``(key, header, format)``."""
  cells = [[h for _, h, _ in columns]]
  for r in rows:
    line = []
    for key, _, fmt in columns:
      v = r.get(key)
      line.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
    cells.append(line)
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
  out = []
  for j, line in enumerate(cells):
    out.append("  ".join(c.rjust(w) for c, w in zip(line, widths)))
    if j == 0:
      out.append("  ".join("-" * w for w in widths))
  return "\n".join(out)


def header(title: str, info: dict[str, Any]) -> str:
  v = info["versions"]
  return (f"== {title} ==\n"
          f"{info['date_utc']}  {info['cpu']}  nproc={info['nproc']}"
          f"  load={info['load_average_1_5_15']}  jax {v.get('jax')} on"
          f" {info['jax_device']['device_kind']} ({info['jax_device']['platform']})"
          f"  torch {v.get('torch', '-')}\n"
          f"command: {info['command']}")


def interleaved(arms: dict[str, Callable[[], float]], reps: int,
                groups: Sequence[Sequence[str]] | None = None) -> dict[str, list[float]]:
  """Calls every arm once per repetition, in rotating order; returns their times.

  Each callable runs its measured work and returns its duration in seconds.
  Rotating the order spreads slow spells of a shared machine over all arms.
  With ``groups`` (every arm in exactly one), the groups rotate and the arms
  of a group run one after another in their given order, so an arm always
  runs right after the one before it in its group.
  """
  names = list(arms)
  if groups is None:
    groups = [(n,) for n in names]
  grouped = [n for g in groups for n in g]
  if sorted(grouped) != sorted(names):
    raise ValueError(f"groups must hold every arm exactly once: got {list(groups)} for {names}")
  times = {n: [] for n in names}
  for r in range(reps):
    k = r % len(groups)
    for group in [*groups[k:], *groups[:k]]:
      for n in group:
        times[n].append(arms[n]())
  return times


def timed(fn: Callable[[], Any]) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def median(xs) -> float:
  return float(np.median(np.asarray(xs, dtype=np.float64)))


def paired_ratio(xs, ys) -> float:
  """Median over repetitions of ``xs[i] / ys[i]`` (same repetition of ``interleaved``).

  Within one repetition the arms run back to back, so a slow spell of a
  shared machine hits both; the paired ratio cancels much of it.
  """
  return median(np.asarray(xs, np.float64) / np.asarray(ys, np.float64))


def paired_difference(xs, ys) -> float:
  """Median over repetitions of ``xs[i] - ys[i]`` (see :func:`paired_ratio`)."""
  return median(np.asarray(xs, np.float64) - np.asarray(ys, np.float64))
