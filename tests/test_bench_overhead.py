"""The overhead benchmark's arm and config selection."""

import json

import pytest

from benchmarks import bench_overhead


def test_arms_and_configs_select_what_runs():
  """``--arms`` adds the optional ``part1-flatten`` arm; Adam is always timed (the baseline)."""
  record = bench_overhead.main([
      "--arms", "part1-flatten", "--configs", "b5",
      "--steps", "2", "--reps", "1", "--no-write", "--platform", "cpu"])
  rows = record["rows"]
  assert [(r["config"], r["arm"]) for r in rows] == [
      ("mlp784-128-10 b5", "adam"), ("mlp784-128-10 b5", "part1-flatten")]
  assert record["settings"]["arms"] == ("adam", "part1-flatten")
  assert rows[0]["ratio_vs_adam"] == 1.0


def test_unknown_arm_is_refused():
  with pytest.raises(SystemExit):
    bench_overhead.main(["--arms", "part3", "--no-write"])


def test_xla_flatten_repro_times_its_step():
  """The repro's step (run here in this process: the cheaper variant) compiles and is timed."""
  from benchmarks import xla_flatten_repro
  res = xla_flatten_repro._child("no_sums", 1)
  assert res["us_per_step"] > 0 and len(res["times_s"]) == 1


@pytest.mark.parametrize("quick, partial, tag, kept", [
    (False, False, "", True),        # a full run: its committed record
    (True, False, "", False),        # --quick: benchmarks/out/ only
    (False, True, "", False),        # a subset without --tag: benchmarks/out/ only
    (False, True, "b420only", True),  # a subset under its own name
    (True, True, "b420only", False),  # --quick never replaces a record
])
def test_only_full_or_tagged_runs_reach_the_committed_results(tmp_path, monkeypatch, quick, partial,
                                                               tag, kept):
  import argparse
  import json

  from benchmarks import common
  out, results = tmp_path / "out", tmp_path / "results"
  monkeypatch.setattr(common, "OUT_DIRS", (out, results))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  args = argparse.Namespace(quick=quick, no_write=False, tag=tag)
  paths = common.write("overhead", args, {"rows": []}, {}, partial=partial)
  name = common.output_name("overhead", args) + ".json"
  assert (out / name).exists()
  assert (results / name).exists() == kept
  assert len(paths) == (2 if kept else 1)
  record = json.loads((out / name).read_text())
  assert record["quick"] == quick and record["partial"] == partial


def test_a_run_cut_short_keeps_its_finished_configs(tmp_path, monkeypatch):
  """After each config the rows so far are in benchmarks/out/*.progress.json; a run
  interrupted in the next config leaves them there, and the committed results untouched."""
  from benchmarks import common
  out, results = tmp_path / "out", tmp_path / "results"
  monkeypatch.setattr(common, "OUT_DIRS", (out, results))
  monkeypatch.setattr(common, "ROOT", tmp_path)
  done = []

  def fake_config(name, *args):
    if done:
      raise RuntimeError("cut")  # a failure, Ctrl-C or a kill in the second config
    done.append(name)
    return [dict(config=name, arm="adam", us_per_step=1.0)]

  monkeypatch.setattr(bench_overhead, "bench_config", fake_config)
  stamps = iter(["2026-01-01T00:00:00+00:00", "2026-01-01T00:05:00+00:00",
                  "2026-01-01T00:09:00+00:00"])
  real_info = common.machine_info
  monkeypatch.setattr(common, "machine_info", lambda: dict(real_info(), date_utc=next(stamps)))
  with pytest.raises(RuntimeError, match="cut"):
    bench_overhead.main(["--platform", "cpu", "--tag", "cut"])
  cut = out / "overhead_cpu_cut.20260101T000000.progress.json"
  kept = json.loads(cut.read_text())
  assert kept["finished"] is False
  assert [r["config"] for r in kept["rows"]] == done
  assert not results.exists()

  # Later runs, a finished --quick one and a finished full one, leave the cut run's file
  # alone and remove only their own.
  monkeypatch.setattr(bench_overhead, "bench_config", lambda name, *a: [
      dict(config=name, arm="adam", us_per_step=1.0)])
  bench_overhead.main(["--platform", "cpu", "--tag", "cut", "--quick"])
  bench_overhead.main(["--platform", "cpu", "--tag", "cut"])
  assert sorted(p.name for p in out.glob("*.progress.json")) == [cut.name]
  assert (results / "overhead_cpu_cut.json").exists()


def test_the_one_reduction_arm_is_part1_with_other_sums(monkeypatch):
  """``part1-onesum`` traces its own N and D, and its updates are part1's to float rounding."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  model, params, average, xs, ys = bench_overhead.setup("mlp", 16, 8)
  calls = []
  original = bench_overhead.one_reduction_sums

  def counted(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(bench_overhead, "one_reduction_sums", counted)
  outs = {}
  for arm in ("part1", "part1-onesum"):
    tx = bench_overhead.make_tx(arm, average, 10)
    run = bench_overhead.make_run(model, tx, 3)
    p = jax.tree.map(jnp.copy, params)
    s = jax.tree.map(jnp.copy, tx.init(p))
    outs[arm] = run(p, s, xs, ys)[0]
  assert calls  # the replacement was traced, not homax's own sums
  for a, b in zip(jax.tree.leaves(outs["part1"]), jax.tree.leaves(outs["part1-onesum"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  n, d = bench_overhead.one_reduction_sums(params, average)
  import homax
  n_ref, d_ref = homax.sums(params, average)
  np.testing.assert_allclose([n, d], [n_ref, d_ref], rtol=1e-6)
