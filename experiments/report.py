"""Paired statistics, crash-safe files, tables and plots of the experiments."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import tempfile
from typing import Iterable, Sequence

import numpy as np

COLUMNS = (
    "dataset", "data", "variant", "sample", "row_id", "seeds",
    "acc_homogeneity_mean", "acc_homogeneity_std", "acc_adam_mean", "acc_adam_std",
    "diff_mean", "diff_ci95_low", "diff_ci95_high", "wins", "losses", "ties",
    "wilcoxon_p", "published_acc_homogeneity", "published_acc_adam", "published_diff",
    "published_diff_in_ci", "seconds",
)


def _read_umask() -> int:
  mask = os.umask(0o022)  # the only way to read it is to set it; restored at once
  os.umask(mask)
  return mask


# Read once, at import (setting the umask, even briefly, is not thread-safe).
_UMASK = _read_umask()


def atomic_write_bytes(path: pathlib.Path | str, data: bytes) -> None:
  """Writes ``data`` to a temp file beside ``path``, fsyncs it, then renames it.

  A reader (or a rerun after a crash) sees either the old file or the new
  one, never a partial file.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    # mkstemp creates the file 0600; give it the mode a plain open() would.
    os.fchmod(fd, 0o666 & ~_UMASK)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savefig(fig, path) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  atomic_write_bytes(path, buf.getvalue())


def paired_stats(acc_h: Sequence[float], acc_a: Sequence[float], *, test_size: int) -> dict:
  """Mean ± std of each arm, the paired difference with a 95 % t-interval, wins.

  ``diff = homogeneity − Adam`` per seed (percentage points of a test set of
  ``test_size`` samples); the interval is ``mean ± t(0.975, n−1)·sd/√n``.
  ``wilcoxon_p`` is the two-sided Wilcoxon signed-rank p-value of the
  differences counted in whole test samples (``diff · test_size / 100``,
  rounded): accuracies are float32, so two differences of the same number of
  samples can differ in their last bits, which would rank true ties apart.
  The method is scipy's default (scipy ≥ 1.15; zeros are dropped): the exact
  distribution for up to 50 differences without zeros or ties; with zeros or
  ties, all sign permutations for up to 13 differences (zeros counted), and
  above that the normal approximation with the tie correction. NaN when every
  difference is zero or n < 2. With few nonzero pairs it means little (one
  nonzero pair in 30 gives 0.32).
  """
  from scipy import stats

  h = np.asarray(acc_h, np.float64)
  a = np.asarray(acc_a, np.float64)
  diff = h - a
  n = diff.size
  mean = float(diff.mean())
  if n > 1:
    sd = float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
  else:
    half = float("nan")
  samples = diff * test_size / 100.0
  counts = np.rint(samples)
  if n and float(np.max(np.abs(samples - counts))) > 0.05:
    raise ValueError(
        f"paired_stats: the accuracy differences are not whole samples of a test set of"
        f" test_size={test_size} (e.g. {diff[np.argmax(np.abs(samples - counts))]!r} pp)")
  try:
    p = float(stats.wilcoxon(counts).pvalue) if n > 1 and np.any(counts != 0) else float("nan")
  except ValueError:
    p = float("nan")
  return dict(
      seeds=n,
      acc_homogeneity_mean=float(h.mean()), acc_homogeneity_std=float(h.std(ddof=1)) if n > 1 else 0.0,
      acc_adam_mean=float(a.mean()), acc_adam_std=float(a.std(ddof=1)) if n > 1 else 0.0,
      diff_mean=mean, diff_ci95_low=mean - half, diff_ci95_high=mean + half,
      wins=int(np.sum(diff > 0)), losses=int(np.sum(diff < 0)), ties=int(np.sum(diff == 0)),
      wilcoxon_p=p,
  )


def _fmt(value) -> str:
  if isinstance(value, float):
    if math.isnan(value):
      return ""
    return f"{value:.4g}" if abs(value) < 1e-2 and value != 0 else f"{value:.2f}"
  return "" if value is None else str(value)


def write_csv(path, records: Iterable[dict], columns: Sequence[str] = COLUMNS) -> None:
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  for rec in records:
    writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
  atomic_write_text(path, buf.getvalue())


def markdown_table(records: Sequence[dict], title: str, notes: Sequence[str] = ()) -> str:
  lines = [f"# {title}", ""]
  lines += [f"{n}  " for n in notes]
  if notes:
    lines.append("")
  head = ("row", "seeds", "homogeneity %", "Adam %", "diff (pp) [95 % CI]", "wins/losses/ties",
          "Wilcoxon p", "published h / Adam (diff)", "published diff in CI")
  lines.append("| " + " | ".join(head) + " |")
  lines.append("|" + "---|" * len(head))
  for r in records:
    lines.append("| " + " | ".join((
        r["label"], str(r["seeds"]),
        f"{r['acc_homogeneity_mean']:.2f} ± {r['acc_homogeneity_std']:.2f}",
        f"{r['acc_adam_mean']:.2f} ± {r['acc_adam_std']:.2f}",
        f"{r['diff_mean']:+.2f} [{r['diff_ci95_low']:+.2f}, {r['diff_ci95_high']:+.2f}]",
        f"{r['wins']}/{r['losses']}/{r['ties']}",
        _fmt(r["wilcoxon_p"]),
        f"{r['published_acc_homogeneity']:.2f} / {r['published_acc_adam']:.2f} ({r['published_diff']:+.2f})",
        "yes" if r["published_diff_in_ci"] else "no",
    )) + " |")
  lines.append("")
  lines.append("diff = homogeneity − Adam test accuracy, paired per seed (same initial weights, same"
               " batches); ± is the standard deviation over seeds; the interval is a t-interval of"
               " the mean paired difference.")
  return "\n".join(lines) + "\n"


def save_json(path, obj) -> None:
  atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def load_json(path):
  with open(path) as f:
    return json.load(f)


def _curve(ax, values, label, color=None, linestyle="-"):
  values = np.asarray(values, np.float64)
  if values.ndim == 1:
    values = values[None]
  x = np.arange(1, values.shape[1] + 1)
  mean = values.mean(0)
  sd = values.std(0)
  (line,) = ax.plot(x, mean, label=label, color=color, linestyle=linestyle)
  ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_row(path, title: str, curves: dict) -> None:
  """The seed's three figures in one: loss, accuracy (train/val per arm), homogeneity."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, metric, ylabel in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy (%)")):
    _curve(ax, curves[f"train_{metric}_h"], "homogeneity train", "C0")
    _curve(ax, curves[f"val_{metric}_h"], "homogeneity val", "C0", "--")
    _curve(ax, curves[f"train_{metric}_a"], "Adam train", "C1")
    _curve(ax, curves[f"val_{metric}_a"], "Adam val", "C1", "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
  _curve(axes[2], curves["homogeneity"], "H (homogeneity)", "C2")
  _curve(axes[2], curves["similarity"], "S (similarity)", "C3", ":")
  _curve(axes[2], curves["lam"], "λ", "C7", "--")
  axes[2].set_xlabel("iteration")
  axes[2].legend(fontsize=7)
  fig.suptitle(title + " — mean ± sd over seeds")
  atomic_savefig(fig, path)
  plt.close(fig)


def plot_forest(path, records: Sequence[dict], title: str) -> None:
  """Paired differences with 95 % CIs per row, and the published single-run differences."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = len(records)
  fig, ax = plt.subplots(figsize=(8, 0.45 * n + 1.5))
  y = np.arange(n)[::-1]
  for yi, r in zip(y, records):
    ax.plot([r["diff_ci95_low"], r["diff_ci95_high"]], [yi, yi], color="C0")
    ax.plot(r["diff_mean"], yi, "o", color="C0", label="homax, paired mean [95 % CI]" if yi == y[0] else None)
    ax.plot(r["published_diff"], yi, "x", color="C3", markersize=8,
            label="published (single unpaired run)" if yi == y[0] else None)
  ax.axvline(0, color="k", linewidth=0.8)
  ax.set_yticks(y, [r["label"] for r in records])
  ax.set_xlabel("test accuracy: homogeneity − Adam (percentage points)")
  ax.set_title(title)
  ax.legend(fontsize=8, loc="best")
  atomic_savefig(fig, path)
  plt.close(fig)


def plot_beta_sweep(path, records: Sequence[dict], title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  recs = sorted(records, key=lambda r: r["beta"])
  beta = [r["beta"] for r in recs]
  fig, ax = plt.subplots(figsize=(7, 4))
  h = np.array([r["acc_homogeneity_mean"] for r in recs])
  hs = np.array([r["acc_homogeneity_std"] for r in recs])
  ax.errorbar(beta, h, yerr=hs, marker="o", label="homogeneity (mean ± sd)")
  a = np.array([r["acc_adam_mean"] for r in recs])
  ax.plot(beta, a, "--", color="C1", label="Adam (mean, paired)")
  ax.plot(beta, [r["published_acc_homogeneity"] for r in recs], "x", color="C3", label="published homogeneity")
  ax.plot(beta, [r["published_acc_adam"] for r in recs], "+", color="C3", label="published Adam")
  ax.set_xlabel("β")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
  ax.legend(fontsize=8)
  atomic_savefig(fig, path)
  plt.close(fig)
