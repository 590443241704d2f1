"""Every benchmark refuses a count or size it cannot use before it runs anything
(exit 2, naming the option), and summarize names a record it cannot read.

A negative ``--reps`` used to finish with exit 0 and write an all-NaN record over
the committed one (bench_torch, bench_memory); 0 was silently the default.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from conftest import assert_refused
from benchmarks import (bench_memory, bench_overhead, bench_repeat, bench_seeds, bench_torch,
                        common, profile_step, summarize)


@pytest.fixture(autouse=True)
def nothing_is_timed(monkeypatch):
  """Refusals come from argparse; if one did not, the run must not start either."""
  def fail(*args, **kwargs):
    raise AssertionError("the benchmark started")
  monkeypatch.setattr(common, "setup_platform", fail)
  monkeypatch.setattr(bench_repeat, "run_once", fail)


@pytest.mark.parametrize("main, argv, message", [
    (bench_torch.main, ["--reps", "-1"], "argument --reps: must be an int >= 1, got -1"),
    (bench_torch.main, ["--reps", "0"], "argument --reps: must be an int >= 1, got 0"),
    (bench_torch.main, ["--steps", "0"], "argument --steps: must be an int >= 1, got 0"),
    (bench_torch.main, ["--batches", "0"], "argument --batches: must be an int >= 1, got 0"),
    (bench_torch.main, ["--batches", "-3"], "argument --batches: must be an int >= 1, got -3"),
    (bench_torch.main, ["--batches"], "argument --batches: expected at least one argument"),
    (bench_memory.main, ["--reps", "-1"], "argument --reps: must be an int >= 1, got -1"),
    (bench_memory.main, ["--sizes", "0"], "argument --sizes: must be a number > 0, got 0"),
    (bench_memory.main, ["--sizes", "0.5"], "argument --sizes: must be a whole number"),
    (bench_memory.main, ["--sizes", "abc"], "argument --sizes: must be a number > 0, got 'abc'"),
    (bench_memory.main, ["--sizes"], "argument --sizes: expected at least one argument"),
    (bench_memory.main, ["--leaves", "0"], "argument --leaves: must be an int >= 1, got 0"),
    (bench_overhead.main, ["--reps", "-1"], "argument --reps: must be an int >= 1, got -1"),
    (bench_overhead.main, ["--steps", "-5"], "argument --steps: must be an int >= 1, got -5"),
    (bench_overhead.main, ["--steps", "0"], "argument --steps: must be an int >= 1, got 0"),
    (bench_seeds.main, ["--reps", "-1"], "argument --reps: must be an int >= 1, got -1"),
    (bench_seeds.main, ["--problems"], "argument --problems: expected at least one argument"),
    (bench_repeat.main, ["--timeout", "0"], "argument --timeout: must be a number > 0, got 0"),
    (bench_repeat.main, ["--timeout", "inf"], "argument --timeout: must be a number > 0, got inf"),
    (profile_step.main, ["--batch", "0"], "argument --batch: must be an int >= 1, got 0"),
    (profile_step.main, ["--top", "-1"], "argument --top: must be an int >= 1, got -1"),
])
def test_counts_and_sizes_must_be_positive(main, argv, message, capsys):
  extra = [] if main is profile_step.main else ["--no-write"]
  assert_refused(main, argv + extra, capsys, message)


def test_positive_types_accept_what_the_docs_use():
  assert common.positive_int("15") == 15
  assert common.positive_float("2.5") == 2.5
  assert bench_memory._size("1e5") == 100000 and bench_memory._size("2.5e5") == 250000


def test_summarize_only_knows_its_tables(capsys):
  assert_refused(summarize.main, ["--only", "overheadd"], capsys,
                 "argument --only: invalid choice: 'overheadd'")


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
  monkeypatch.setattr(common, "ROOT", tmp_path)
  path = tmp_path / "benchmarks" / "results"
  path.mkdir(parents=True)
  return path


@pytest.mark.parametrize("text", ["", '{"machine": {', "[1, 2]"])
def test_summarize_names_an_unreadable_record(results_dir, text):
  (results_dir / "seeds_cpu.json").write_text(text)
  with pytest.raises(SystemExit) as info:
    summarize.main(["--only", "seeds"])
  assert f"{results_dir / 'seeds_cpu.json'}: not a readable benchmark record" in str(info.value)


def test_summarize_names_an_incomplete_record(results_dir):
  record = json.loads((common.OUT_DIRS[1] / "memory_cpu.json").read_text())
  del record["settings"]
  (results_dir / "memory_cpu.json").write_text(json.dumps(record))
  with pytest.raises(SystemExit) as info:
    summarize.main(["--only", "memory"])
  assert f"{results_dir / 'memory_cpu.json'}: an incomplete or damaged record" in str(info.value)
  assert "settings" in str(info.value)


@pytest.mark.parametrize("spec_name, argv0, command", [
    ("benchmarks.bench_overhead", "/x/bench_overhead.py", "python -m benchmarks.bench_overhead"),
    (None, "<ROOT>/benchmarks/bench_seeds.py", "python -m benchmarks.bench_seeds"),
    ("", "<ROOT>/benchmarks/bench_torch.py", "python -m benchmarks.bench_torch"),
    (None, "/elsewhere/my bench.py", "python '/elsewhere/my bench.py'"),
])
def test_the_recorded_command_is_the_one_that_ran(monkeypatch, spec_name, argv0, command):
  # python -m <module> sets __main__.__spec__; python <path> does not.
  main = types.ModuleType("__main__")
  main.__spec__ = None if spec_name is None else types.SimpleNamespace(name=spec_name)
  monkeypatch.setitem(sys.modules, "__main__", main)
  monkeypatch.setattr("sys.argv", [argv0.replace("<ROOT>", str(common.ROOT)), "--reps", "3"])
  assert common.machine_info()["command"] == command + " --reps 3"
  monkeypatch.setattr("sys.argv", sys.argv[:1])
  assert common.machine_info()["command"] == command


def test_machine_info_records_only_the_settings_that_change_xla(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  monkeypatch.setenv("JAX_DEFAULT_MATMUL_PRECISION", "highest")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
  monkeypatch.setenv("HOMAX_UNRELATED", "x")
  env = common.machine_info()["environment"]
  assert {k: env[k] for k in ("XLA_FLAGS", "JAX_DEFAULT_MATMUL_PRECISION", "TF_CPP_MIN_LOG_LEVEL")
          } == {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false",
                "JAX_DEFAULT_MATMUL_PRECISION": "highest", "TF_CPP_MIN_LOG_LEVEL": "1"}
  assert all(k.startswith(("JAX_", "XLA_")) or k == "TF_CPP_MIN_LOG_LEVEL" for k in env), env


def test_machine_info_describes_this_machine(monkeypatch):
  # Every record says where it was timed: read here independently of common's parsing.
  monkeypatch.setattr("sys.argv", ["bench_overhead.py", "--reps", "3", "--tag", "a b"])
  info = common.machine_info()
  assert info["command"].startswith("python -m ")
  assert info["command"].endswith(" --reps 3 --tag 'a b'")
  cpuinfo = pathlib.Path("/proc/cpuinfo")
  if cpuinfo.exists():
    models = [line.partition(":")[2].strip() for line in cpuinfo.read_text().splitlines()
              if line.split(":")[0].strip() == "model name"]
    assert info["cpu"] == (models[0] if models else platform.processor() or "unknown")
  if pathlib.Path("/proc/meminfo").exists():
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    assert abs(info["mem_total_gib"] - ram_gib) <= 0.06, (info["mem_total_gib"], ram_gib)
  assert info["nproc"] == os.cpu_count()
  assert {k: info["versions"][k] for k in ("jax", "numpy")} == {"jax": jax.__version__,
                                                                "numpy": np.__version__}
  assert info["versions"]["python"] == platform.python_version()
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=common.ROOT, capture_output=True, text=True)
  if head.returncode == 0:  # a git checkout (CI's clone is one)
    assert info["git"]["commit"] == head.stdout.strip() and len(info["git"]["commit"]) == 40
    assert isinstance(info["git"]["dirty"], bool)
