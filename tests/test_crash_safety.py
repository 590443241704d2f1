"""Crash safety: SIGKILL in the middle of a table loses nothing that was finished.

The test runs ``python -m experiments.reproduce`` as a subprocess, kills it
with SIGKILL as soon as the first row's JSON exists (so mid-table: the next
row is still training), reruns the same command to completion, and checks
that the finished rows were neither redone nor damaged, that no temp file is
left, and that every JSON and CSV file parses.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
ROWS = ("B-A-2", "B-A-3")  # 2-epoch rows; the first one is shared with other tests.
SEEDS = 3
TIMEOUT = 300.0


def command(out):
  return [sys.executable, "-m", "experiments.reproduce", "--table", "iris", "--seeds", str(SEEDS),
          "--out", str(out), "--quiet", "--rows", ",".join(ROWS)]


def environment(tmp_path_factory):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  env["JAX_PLATFORMS"] = "cpu"
  # The session's persistent compilation cache (see test_checkpoint.py):
  # rows compiled by earlier tests or by the killed run compile once.
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "jax-cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env.pop("XLA_FLAGS", None)
  return env


def temp_files(root):
  found = []
  for directory, _, files in os.walk(root):
    found += [pathlib.Path(directory, f) for f in files if f.endswith(".tmp")]
  return found


def test_sigkill_mid_table_then_rerun(tmp_path, tmp_path_factory):
  out = tmp_path / "results"
  rows_dir = out / "iris" / "rows"
  env = environment(tmp_path_factory)

  with open(tmp_path / "first.log", "wb") as log:
    proc = subprocess.Popen(command(out), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + TIMEOUT
      while not list(rows_dir.glob("*.json")):
        if proc.poll() is not None:
          pytest.fail(f"the run ended (rc {proc.returncode}) before any row finished:\n"
                      + (tmp_path / "first.log").read_text())
        if time.monotonic() > deadline:
          pytest.fail("no row finished in time")
        time.sleep(0.02)
      assert proc.poll() is None, "the whole table finished before the kill"
      proc.send_signal(signal.SIGKILL)
      assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()

  finished = sorted(rows_dir.glob("*.json"))
  assert finished and len(finished) < len(ROWS)
  before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished}
  # What a kill during an atomic write leaves behind (a write is a temp file
  # then a rename), planted so that the cleanup is tested whatever the
  # moment of the kill above.
  (rows_dir / f".{ROWS[-1]}.json.k1ll3d.tmp").write_text('{"config": {"tab')
  (out / ".iris.csv.k1ll3d.tmp").write_text("dataset,var")

  rerun = subprocess.run(command(out), cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  for name, (data, mtime) in before.items():
    path = rows_dir / name
    assert path.read_bytes() == data, f"{name} was rewritten"
    assert path.stat().st_mtime_ns == mtime, f"{name} was redone"
    row_id = name.removesuffix(".json")
    assert f"{row_id}: already done, skipped" in rerun.stdout
    assert f"{row_id}: homogeneity" not in rerun.stdout  # not trained again
  assert sorted(p.name for p in rows_dir.glob("*.json")) == sorted(f"{r}.json" for r in ROWS)

  assert temp_files(out) == []
  for path in out.rglob("*.json"):
    record = json.loads(path.read_text())
    assert record["config"]["seeds"] == list(range(SEEDS))
    assert len(record["per_seed"]["acc_homogeneity"]) == SEEDS
  with open(out / "iris.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert sorted(r["row_id"] for r in table) == sorted(ROWS)
  for r in table:
    float(r["acc_homogeneity_mean"]), float(r["diff_mean"]), int(r["seeds"])
  markdown = (out / "iris.md").read_text()
  assert all(f"#{r.rsplit('-', 1)[1]}" in markdown for r in ROWS)
