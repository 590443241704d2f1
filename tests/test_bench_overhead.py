"""The overhead benchmark's arm and config selection."""

import json

import pytest

from conftest import assert_refused
from benchmarks import bench_overhead


def test_arms_and_configs_select_what_runs():
  """``--arms`` adds the optional ``part1-flatten`` arm; Adam is always timed (the baseline)."""
  record = bench_overhead.main([
      "--arms", "part1-flatten", "--configs", "b5",
      "--steps", "2", "--reps", "2", "--no-write", "--platform", "cpu"])
  rows = record["rows"]
  assert [(r["config"], r["arm"]) for r in rows] == [
      ("mlp784-128-10 b5", "adam"), ("mlp784-128-10 b5", "part1-flatten")]
  assert record["settings"]["arms"] == ("adam", "part1-flatten")
  adam, flat = rows
  # The ratio is of this config's two measured per-step times, and each comes from
  # this run's two repetitions of a 2-step run (each repetition continuing from the
  # last one's params and state).
  assert flat["ratio_vs_adam"] == pytest.approx(flat["us_per_step"] / adam["us_per_step"])
  for r in rows:
    assert len(r["times_s"]) == 2
    assert r["us_per_step"] == pytest.approx(1e6 * sum(r["times_s"]) / 2 / 2)


def test_unknown_arm_is_refused(capsys):
  assert_refused(bench_overhead.main, ["--arms", "part3", "--no-write"], capsys,
                 "argument --arms: invalid choice: 'part3'")


def test_xla_flatten_repro_times_its_step():
  """The repro's step (run here in this process: the cheaper variant) compiles and is timed:
  one time per repetition, each a whole STEPS-step run, and µs/step their median / STEPS."""
  from benchmarks import common, xla_flatten_repro
  res = xla_flatten_repro._child("no_sums", 3)
  assert len(res["times_s"]) == 3 and min(res["times_s"]) > 0
  assert res["us_per_step"] == pytest.approx(
      1e6 * common.median(res["times_s"]) / xla_flatten_repro.STEPS)
  assert isinstance(res["concat_or_ynn_kernels"], str)


def test_a_step_time_is_the_median_run_time_divided_by_the_steps(monkeypatch):
  """``bench_config`` with a stub timer: µs/step = 1e6 · median(run times) / steps, the
  ratios from those (``ratio_vs_adam``, ``ratio_vs_sgd``), and the paired ratio the median
  of the per-repetition ratios (here unlike the ratio of the medians)."""
  from benchmarks import common
  steps = 100
  times = {"adam": [0.2, 0.4, 0.3], "sgd": [0.1, 0.1, 0.1], "sgd+homog": [0.15, 0.3, 0.15]}
  seen = {}

  def stub_interleaved(arms, reps):
    seen.update(arms=list(arms), reps=reps)
    return {a: list(times[a]) for a in arms}

  monkeypatch.setattr(common, "interleaved", stub_interleaved)
  # No compilation: a "run" that returns its inputs and a finite loss.
  monkeypatch.setattr(bench_overhead, "make_run",
                      lambda model, tx, steps: lambda p, s, xs, ys: (p, s, 1.0))
  rows = bench_overhead.bench_config("tiny", "mlp", 4, 2, steps, 3,
                                     arms=("adam", "sgd", "sgd+homog"))
  assert seen == {"arms": ["adam", "sgd", "sgd+homog"], "reps": 3}
  r = {row["arm"]: row for row in rows}
  assert r["adam"]["us_per_step"] == pytest.approx(1e6 * 0.3 / steps)  # 3000 µs
  assert r["sgd"]["us_per_step"] == pytest.approx(1e6 * 0.1 / steps)
  assert r["sgd+homog"]["us_per_step"] == pytest.approx(1e6 * 0.15 / steps)
  assert r["sgd+homog"]["ratio_vs_adam"] == pytest.approx(0.15 / 0.3)
  assert r["sgd+homog"]["ratio_vs_adam_paired"] == pytest.approx(0.75)  # median(.75, .75, .5)
  assert r["sgd+homog"]["ratio_vs_sgd"] == pytest.approx(1.5)
  assert r["sgd"]["ratio_vs_adam"] == pytest.approx(1 / 3)
  assert r["adam"]["ratio_vs_sgd"] is None
  assert r["adam"]["spread_pct"] == pytest.approx(100 * 0.2 / 0.3)
  assert r["adam"]["times_s"] == times["adam"]


@pytest.mark.parametrize("argv, partial", [
    ([], False),
    (["--reps", "3"], False),  # more or fewer repetitions of the same measurement
    (["--arms", "adam", "part1", "part2", "sgd", "sgd+homog"], False),  # the defaults, named
    (["--arms", "adam", "part1", "part1-flatten"], True),  # README's command: no Part II, no SGD
    (["--arms", "part1-onesum"], True),
    (["--arms", "sgd+homog", "part2", "sgd", "part1", "part1-onesum", "part1-materialize"],
     False),  # every default arm, and extras
    (["--configs", "b5", "b420"], True),
    (["--configs", "deep", "b420", "b5", "b128"], False),  # all four, in another order
    (["--steps", "50"], True),
])
def test_a_run_is_partial_unless_it_measures_the_full_runs_arms_configs_and_steps(
    bench_dirs, monkeypatch, argv, partial):
  """Through ``main``: a partial run without --tag writes benchmarks/out/ only, so it
  cannot replace the committed record of the full run."""
  out, results = bench_dirs
  configs = []
  monkeypatch.setattr(bench_overhead, "bench_config", lambda name, *a: configs.append(a) or [
      dict(config=name, arm=arm, us_per_step=1.0) for arm in a[-1]])
  bench_overhead.main(["--platform", "cpu", *argv])
  record = json.loads((out / "overhead_cpu.json").read_text())
  assert record["partial"] is partial
  assert (results / "overhead_cpu.json").exists() is not partial
  if "--arms" not in argv:
    assert all(a[-1] == bench_overhead.ARMS for a in configs)


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


@pytest.mark.parametrize("arm, fn", [("part1-onesum", "one_reduction_sums"),
                                     ("part1-onesum-direct", "direct_one_reduction_sums")])
def test_the_one_reduction_arms_are_part1_with_other_sums(monkeypatch, arm, fn):
  """The one-reduction arms trace their own N and D, and their updates are part1's
  to float rounding."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  model, params, average, xs, ys = bench_overhead.setup("mlp", 16, 8)
  calls = []
  original = getattr(bench_overhead, fn)

  def counted(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  monkeypatch.setattr(bench_overhead, fn, counted)
  outs = {}
  for a in ("part1", arm):
    tx = bench_overhead.make_tx(a, average, 10)
    run = bench_overhead.make_run(model, tx, 3)
    p = jax.tree.map(jnp.copy, params)
    s = jax.tree.map(jnp.copy, tx.init(p))
    outs[a] = run(p, s, xs, ys)[0]
  assert calls  # the replacement was traced, not homax's own sums
  for a, b in zip(jax.tree.leaves(outs["part1"]), jax.tree.leaves(outs[arm])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  n, d = original(params, average)
  import homax
  n_ref, d_ref = homax.sums(params, average)
  np.testing.assert_allclose([n, d], [n_ref, d_ref], rtol=1e-6)


@pytest.mark.parametrize("platform, extra_writes", [("cpu", 0), ("cuda", 4)])
def test_the_materialize_arm_adds_the_write_backs_only_off_the_cpu(platform, extra_writes):
  """``part1-materialize`` is ``part1`` with the step input's write-back on every
  platform: the same program for the CPU, one more write per leaf (4) for a GPU."""
  import jax
  import jax.numpy as jnp

  model, params, average, xs, ys = bench_overhead.setup("mlp", 16, 8)
  writes = {}
  for arm in ("part1", "part1-materialize"):
    tx = bench_overhead.make_tx(arm, average, 10)
    run = bench_overhead.make_run(model, tx, 3)
    state = jax.tree.map(jnp.copy, tx.init(params))
    text = run.trace(params, state, xs, ys).lower(lowering_platforms=(platform,)).as_text()
    writes[arm] = text.count("stablehlo.dynamic_update_slice")
  assert writes["part1-materialize"] - writes["part1"] == extra_writes


def test_the_adam_adam_arm_is_part1s_two_adams_without_homogeneity():
  """``adam+adam`` feeds the base Adam's update to a second Adam(η_h) with torch's
  defaults, the step optimizer ``part1`` runs, and nothing else: two steps of it
  equal two Adams applied by hand, and its state is two Adam states."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  model, params, average, xs, ys = bench_overhead.setup("mlp", 16, 8)
  tx = bench_overhead.make_tx("adam+adam", average, 10)
  state = tx.init(params)
  assert [type(s[0]).__name__ for s in state] == ["ScaleByAdamState"] * 2
  run = bench_overhead.make_run(model, tx, 2)
  got = run(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state), xs, ys)[0]

  p = _by_hand(optax.chain(optax.adam(1e-3), optax.adam(bench_overhead.LR_H, eps=1e-8)),
               model, params, xs, ys, steps=2)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(got)[0], jax.tree.leaves(params)[0])


def test_interleaved_rotates_single_arms_or_groups():
  from benchmarks import common
  calls = []
  arms = {n: (lambda n=n: calls.append(n) or 0.0) for n in "abc"}
  times = common.interleaved(arms, 3)
  assert calls == list("abcbcacab") and all(len(t) == 3 for t in times.values())
  calls.clear()
  common.interleaved(arms, 2, groups=[("a", "b"), ("c",)])
  assert calls == list("abccab")
  with pytest.raises(ValueError, match="every arm exactly once"):
    common.interleaved(arms, 1, groups=[("a", "b")])


def test_the_configs_are_the_issues_models_and_batches():
  """The four timed configs are the issue's (the paper's MLP 784→128→10 at batch 5, 128
  and 420; 784→1024→1024→10 at batch 128), and each builds the model and batches its name
  says: one (in, out) kernel and bias per layer, a pool of ``POOL`` batches of 784 inputs."""
  import jax
  import numpy as np
  assert [c[0] for c in bench_overhead.CONFIGS] == [
      "mlp784-128-10 b5", "mlp784-128-10 b128", "mlp784-128-10 b420",
      "mlp784-1024-1024-10 b128"]
  for name, kind, hidden, batch in bench_overhead.CONFIGS:
    layers, b = name.split()
    sizes = [int(n) for n in layers.removeprefix("mlp").split("-")]
    assert int(b.removeprefix("b")) == batch
    model, params, average, xs, ys = bench_overhead.setup(kind, hidden, batch)
    want = sorted([(i, o) for i, o in zip(sizes, sizes[1:])] + [(o,) for o in sizes[1:]])
    assert sorted(x.shape for x in jax.tree.leaves(params)) == want
    assert jax.tree.structure(average) == jax.tree.structure(params)
    assert xs.shape == (bench_overhead.POOL, batch, 784) and ys.shape == (bench_overhead.POOL, batch)
    assert model.apply(params, xs[0]).shape == (batch, 10)
    assert set(np.unique(np.asarray(ys))) <= set(range(10))


def _by_hand(tx, model, params, xs, ys, steps):
  """The params after ``steps`` steps of ``tx`` on batches 0, 1, …, applied one by one."""
  import jax
  import jax.numpy as jnp
  import optax

  def loss(p, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y))

  state = tx.init(params)
  for k in range(steps):
    u, state = tx.update(jax.grad(loss)(params, xs[k], ys[k]), state, params)
    params = optax.apply_updates(params, u)
  return params


def _reference_arm(arm, average, total_steps):
  """The optimizer each default arm's docstring names, built here with its literal settings."""
  import optax
  import homax
  return {
      "adam": lambda: optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8),
      "part1": lambda: homax.paper_optimizer(
          "A-B", learning_rate=1e-3, homogeneity_learning_rate=1e-3, total_steps=total_steps,
          initial_average=average),
      "part2": lambda: homax.paper_optimizer(
          "COMPLETE", learning_rate=1e-3, homogeneity_learning_rate=1e-3,
          total_steps=total_steps, lambda_type="dynamic", initial_average=average),
      "sgd": lambda: optax.sgd(1e-2),
      "sgd+homog": lambda: optax.chain(optax.sgd(1e-2),
                                       homax.homogeneity(1e-3, initial_average=average)),
  }[arm]()


@pytest.mark.parametrize("arm", bench_overhead.ARMS)
def test_the_default_arms_are_the_optimizers_the_docstring_names(arm):
  """Three steps of each default arm's training run equal three steps of the optimizer its
  docstring names (learning rates, variant, λ), applied by hand to the same batches."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  model, params, average, xs, ys = bench_overhead.setup("mlp", 16, 8)
  tx = bench_overhead.make_tx(arm, average, 10)
  run = bench_overhead.make_run(model, tx, 3)
  got = run(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, tx.init(params)), xs, ys)[0]

  p = _by_hand(_reference_arm(arm, average, 10), model, params, xs, ys, steps=3)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(p)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  moved = [np.max(np.abs(np.asarray(b) - np.asarray(a)))
           for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p))]
  assert max(moved) > 1e-4  # the steps moved the weights: a wrong rate would show


def test_the_training_run_donates_params_and_state_but_not_the_data():
  """``make_run`` donates its params and optimizer state (the step updates them in place),
  not the batches, which every repetition reads again."""
  import jax
  import jax.numpy as jnp

  model, params, average, xs, ys = bench_overhead.setup("mlp", 16, 8)
  tx = bench_overhead.make_tx("part1", average, 10)
  run = bench_overhead.make_run(model, tx, 2)
  p, s = jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, tx.init(params))
  run(p, s, xs, ys)
  assert all(x.is_deleted() for x in jax.tree.leaves(p))
  assert all(x.is_deleted() for x in jax.tree.leaves(s) if isinstance(x, jax.Array))
  assert not xs.is_deleted() and not ys.is_deleted()


@pytest.mark.parametrize("extra, want", [
    ([], {"b5": 7, "b128": 7, "b420": 7, "deep": 5}),
    (["--quick"], {"b5": 2, "b128": 2, "b420": 2, "deep": 2}),
    (["--reps", "3"], {"b5": 3, "b128": 3, "b420": 3, "deep": 3}),
])
def test_repetitions_default_to_seven_and_five_for_the_deep_mlp(monkeypatch, extra, want):
  """Without ``--reps`` a config is timed 7 times (the deep MLP 5: the issue asks ≥ 5), and
  a full run's steps are ``STEPS`` (≥ 200, the issue's scan length); ``--quick`` 2 of 40."""
  seen = {}

  def stub(name, kind, hidden, batch, steps, reps, arms):
    seen[name.split()[-1] if kind == "mlp" else "deep"] = (reps, steps)
    return []

  monkeypatch.setattr(bench_overhead, "bench_config", stub)
  bench_overhead.main([*extra, "--no-write", "--platform", "cpu"])
  steps = 40 if "--quick" in extra else 200
  assert bench_overhead.STEPS >= 200
  assert seen == {k: (r, steps) for k, r in want.items()}


def test_each_timing_waits_for_its_runs_result(monkeypatch):
  """A timed call ends only after ``jax.block_until_ready`` on the run's loss and params
  (jax dispatches asynchronously: without it the timing would be the dispatch)."""
  import jax
  from benchmarks import common

  blocked, timings = [], []
  real_block = jax.block_until_ready

  def spy(x):
    blocked.append(x)
    return real_block(x)

  def timed(fn):
    n = len(blocked)
    fn()
    timings.append(blocked[n:])
    return 1.0

  monkeypatch.setattr(jax, "block_until_ready", spy)
  monkeypatch.setattr(common, "timed", timed)
  bench_overhead.bench_config("mlp784-16-10 b8", "mlp", 16, 8, steps=2, reps=2, arms=("adam",))
  assert len(timings) == 2
  for waited in timings:
    leaves = jax.tree.leaves(waited)
    assert any(getattr(x, "shape", None) == () for x in leaves)  # the loss
    assert any(getattr(x, "shape", None) == (784, 16) for x in leaves)  # the new params
