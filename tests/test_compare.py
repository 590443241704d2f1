"""experiments.compare: SAM, EMA and lookahead, pairing, learning-rate choice, outputs.

The seed 002/003 models it trains are specified in ``tests/test_models.py``.

The harness test trains every method on Iris for one epoch with one learning
rate and two seeds: it is about plumbing (pairing, columns, files), not accuracy.
"""

import csv
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import compare, datasets, models, report

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"

REQUIRED_COLUMNS = (
    "dataset", "method", "best_lr", "seeds", "test_acc_mean", "test_acc_std",
    "diff_vs_adam_mean", "diff_ci95_low", "diff_ci95_high", "wins_vs_adam", "val_acc_mean",
    "us_per_step",
)


def test_sam_step_is_the_sharpness_aware_update():
  # One step: ĝ = ∇L(θ)/‖∇L(θ)‖, then Adam applies ∇L(θ + ρĝ) at θ.
  target = jnp.array([1.0, -2.0, 0.5])
  loss = lambda p: jnp.sum((p["w"] - target) ** 2 * jnp.array([1.0, 3.0, 0.2]))
  params = {"w": jnp.zeros(3)}
  algo = compare.sam_algo(0.1, rho=0.05)
  (new, _), value = algo.step(algo.init(params), loss, jax.random.key(0))
  g0 = jax.grad(loss)(params)
  norm = jnp.sqrt(jnp.sum(g0["w"] ** 2))
  g1 = jax.grad(loss)({"w": params["w"] + 0.05 * g0["w"] / norm})
  adam = optax.adam(0.1, b1=0.9, b2=0.999, eps=1e-8)
  u, _ = adam.update(g1, adam.init(params), params)
  np.testing.assert_allclose(new["w"], params["w"] + u["w"], rtol=1e-6)
  np.testing.assert_allclose(value, loss(params))
  assert not np.allclose(g1["w"], g0["w"])  # the second gradient is really elsewhere


def test_ema_and_lookahead_evaluate_their_averaged_weights():
  loss = lambda p: jnp.sum((p - 3.0) ** 2)
  ema = compare.ema_algo(0.1, decay=0.9)
  carry = ema.init(jnp.zeros(2))
  carry, _ = ema.step(carry, loss, None)
  # A debiased EMA after one step is the weights themselves.
  np.testing.assert_allclose(ema.params(carry), carry[0], rtol=1e-6)
  carry, _ = ema.step(carry, loss, None)
  assert not np.allclose(ema.params(carry), carry[0])
  la = compare.lookahead_algo(0.1, sync_period=5)
  carry = la.init(jnp.zeros(2))
  for _ in range(3):
    carry, _ = la.step(carry, loss, None)
  # Between syncs the slow weights (evaluated) stay put while the fast ones move.
  np.testing.assert_allclose(la.params(carry), 0.0)
  assert not np.allclose(carry[0].fast, 0.0)


def test_a_host_loop_trains_as_the_whole_program():
  # Seed 004's CNN task runs one program per epoch, called from Python
  # (host_loop=True); every other run is one program. Both must train the same
  # members: the same start, batches and per-step keys (forward-gradient tangents),
  # with the carry passed on from epoch to epoch. Not bit for bit: the host
  # loop's steps are unrolled, so XLA may fuse them differently.
  cfg = compare.DATASETS["iris"]
  data = compare.load_data("iris", quick=True)
  model = cfg.model(data)
  prep = compare.prepare(model, int(data.x_train.shape[0]), seeds=np.array([0, 1, 2]),
                         epochs=2, batch_size=40)
  assert prep.mask.shape[0] > 1  # several steps per epoch
  methods = [compare.METHODS["fwd-adam"]]
  lrs = [(1e-3, 3e-2)] * len(methods)
  whole = compare.run_methods(methods, model, data, prep, lrs=lrs, workers=1)
  loop = compare.run_methods(methods, model, data, prep, lrs=lrs, workers=1, host_loop=True)
  for a, b in zip(whole, loop):
    assert (a.method, a.steps) == (b.method, b.steps)
    assert a.train_loss_curve.shape == b.train_loss_curve.shape == (2, 3, 2)
    for field in ("val_acc", "val_loss", "test_acc", "test_loss", "train_loss_curve", "val_acc_curve"):
      np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-5, atol=1e-6,
                                 err_msg=f"{a.method} {field}")
    for x, y in zip(jax.tree.leaves(a.initial_params), jax.tree.leaves(b.initial_params)):
      np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", list(compare.DATASETS))
def test_the_committed_comparison_ran_with_these_settings(name):
  # results/compare/<name>.json records the settings and lr grids of the committed
  # run: the dataset configs and method grids here must still be those (a changed
  # epoch count, subset size or grid would leave the committed table stale).
  committed = report.load_json(RESULTS / "compare" / f"{name}.json")
  config = committed["config"]
  data = compare.load_data(name)
  assert compare.run_config(name, data, seeds=config["seeds"], quick=False, epochs=None) == config
  assert set(committed["methods"]) == set(compare.METHODS)
  for method, run in committed["methods"].items():
    np.testing.assert_array_equal(np.float32(run["lrs"]), np.float32(compare.METHODS[method].lrs),
                                  err_msg=method)
    steps_per_epoch = -(-config["n_train"] // config["batch_size"])
    assert run["steps"] == config["epochs"] * steps_per_epoch, method


def test_the_committed_iris_comparison_retrains_to_its_numbers():
  # Two of the committed run's ten seeds, retrained for every lr of three methods
  # (the default, non-quick grids and epochs): Adam, Part II (its dynamic λ needs
  # the run's total step count) and forward-gradient Adam (its tangents come from
  # per-step keys). Accuracies are counts: exact; losses to float32 rounding
  # (other CPUs round the last bits differently, see test_cli.py).
  committed = report.load_json(RESULTS / "compare" / "iris.json")["methods"]
  methods = ["adam", "hom-partII", "fwd-adam"]
  t0 = time.perf_counter()
  runs = compare.run_dataset("iris", seeds=np.array([0, 1]), methods=methods, workers=1)["runs"]
  elapsed = time.perf_counter() - t0
  for name in methods:
    run, ref = runs[name], committed[name]
    assert run.lrs.tolist() == ref["lrs"] and run.steps == ref["steps"], name
    for field in ("val_acc", "test_acc"):
      np.testing.assert_array_equal(getattr(run, field), np.asarray(ref[field])[:, :2],
                                    err_msg=f"{name} {field}")
    for field in ("val_loss", "test_loss"):
      np.testing.assert_allclose(getattr(run, field), np.asarray(ref[field])[:, :2], rtol=1e-5,
                                 err_msg=f"{name} {field}")
    assert 0 < run.compile_s < elapsed and 0 < run.run_s < elapsed, name


def test_the_committed_comparison_tables_rebuild_from_its_json(tmp_path):
  # compare.csv and compare.md are the summaries of the committed per-lr, per-seed
  # numbers in compare/<dataset>.json: best lr on validation, paired statistics,
  # ranks, the headline's wording ("CI below 0", ties), rounding. Rebuilt here
  # byte for byte (the run's command and wall time are taken from the md).
  text = (RESULTS / "compare.md").read_text()
  command, seconds = re.search(r"Command: `(.*)` — (\d+) s wall", text).groups()
  records, configs, flat = {}, {}, []
  for name in compare.DATASETS:
    saved = report.load_json(RESULTS / "compare" / f"{name}.json")
    runs = {}
    assert set(saved["methods"]) == set(compare.METHODS)
    for method in compare.METHODS:  # the run's order (the JSON's keys are sorted)
      m = saved["methods"][method]
      lrs, seeds = np.float32(m["lrs"]), np.array(m["seeds"])
      curve = np.zeros((lrs.size, seeds.size, 1))
      runs[method] = compare.MethodRun(
          method, lrs, seeds, *(np.float32(m[k]) for k in ("val_acc", "val_loss", "test_acc", "test_loss")),
          curve, curve, {}, compile_s=m["compile_s"], run_s=m["run_s"], steps=m["steps"])
      assert runs[method].us_per_step == m["us_per_step"]
      assert compare.best_lr_index(runs[method]) == m["best_lr_index"], (name, method)
    records[name] = compare.summarize(dict(config=saved["config"], runs=runs))
    configs[name] = saved["config"]
    flat += records[name]
  assert compare.markdown(records, configs, command, float(seconds)) == text
  report.write_csv(tmp_path / "compare.csv", [compare._round(r) for r in flat], compare.CSV_COLUMNS)
  assert (tmp_path / "compare.csv").read_text() == (RESULTS / "compare.csv").read_text()


def test_the_committed_seed004_table_ran_with_these_tasks():
  # results/seed004.csv records each task's data, model, size, epochs, batch and
  # lr grid: seed004_tasks() and its grid must still give those.
  with open(RESULTS / "seed004.csv", newline="") as f:
    committed = list(csv.DictReader(f))
  tasks = compare.seed004_tasks()
  if tasks[-1]["stand_in"] is None:
    pytest.skip("KMNIST is on this machine: the committed table ran on its Fashion-MNIST stand-in")
  assert [r["task"] for r in committed] == [t["task"] for t in tasks for _ in compare.SEED004_METHODS]
  assert [r["method"] for r in committed] == list(compare.SEED004_METHODS) * len(tasks)
  for row, task in zip(committed, (t for t in tasks for _ in compare.SEED004_METHODS)):
    params = models.num_params(task["model"].init(jax.random.key(0)))
    assert row == dict(row, data=task["data"].name, stand_in_for=task["stand_in"] or "",
                       model=task["model_name"], epochs=str(task["epochs"]),
                       batch_size=str(task["batch_size"]), n_train=str(task["data"].x_train.shape[0]),
                       n_test=str(task["data"].x_test.shape[0]), params=str(params),
                       lrs=" ".join(f"{x:g}" for x in compare.seed004_lrs(False))), row["task"]


def test_the_docstring_table_gives_each_methods_grid():
  # The module docstring's table of methods and learning rates is what users read.
  rows = {}
  for line in compare.__doc__.splitlines():
    parts = line.split()
    if parts and parts[0] in compare.METHODS:
      rows[parts[0]] = line[line.rindex("  "):].strip()
  assert set(rows) == set(compare.METHODS)
  for name, grid in rows.items():
    lrs = compare.METHODS[name].lrs
    if "…" in grid:  # "0.01 … 1.0 (5)": first, last and count
      first, last, count = re.fullmatch(r"(\S+) … (\S+) \((\d+)\)", grid).groups()
      assert (float(first), float(last), int(count)) == (lrs[0], lrs[-1], len(lrs)), name
    else:
      assert tuple(float(x) for x in grid.split(", ")) == tuple(lrs), name


def test_us_per_step_is_per_model():
  # The CSV's us_per_step: wall time of the run over steps × models (lrs × seeds
  # train side by side): 0.5 s for 100 steps of 2 lrs × 5 seeds is 500 µs.
  none = np.zeros((2, 5))
  run = compare.MethodRun("adam", np.array([1e-3, 1e-2]), np.arange(5), none, none, none, none,
                          none, none, {}, compile_s=9.0, run_s=0.5, steps=100)
  assert run.us_per_step == pytest.approx(500.0)


def test_ema_decay_covers_about_the_last_epoch():
  # The docstring: decay 1 − 1/max(10, steps per epoch).
  assert compare._ema_decay(3) == pytest.approx(0.9)
  assert compare._ema_decay(10) == pytest.approx(0.9)
  assert compare._ema_decay(200) == pytest.approx(0.995)


def test_best_lr_is_chosen_on_validation_with_loss_tiebreak():
  run = compare.MethodRun(
      method="x", lrs=np.array([0.1, 0.2, 0.3]), seeds=np.arange(2),
      val_acc=np.array([[90.0, 90.0], [95.0, 95.0], [95.0, 95.0]]),
      val_loss=np.array([[0.1, 0.1], [0.5, 0.5], [0.4, np.nan]]),
      test_acc=np.array([[99.0, 99.0], [10.0, 10.0], [20.0, 20.0]]),
      test_loss=np.zeros((3, 2)), train_loss_curve=np.zeros((3, 2, 1)),
      val_acc_curve=np.zeros((3, 2, 1)), initial_params=None, compile_s=0.0, run_s=1.0, steps=1)
  # Test accuracy is never looked at; a NaN loss counts as worst.
  assert compare.best_lr_index(run) == 1
  # A diverged lr (NaN validation accuracy in a seed) is never the best.
  run.val_acc = np.array([[np.nan, 99.0], [50.0, 50.0], [40.0, 40.0]])
  assert compare.best_lr_index(run) == 1


def test_summary_ranks_methods_by_mean_test_accuracy_sharing_ties():
  # Competition ranking (1, 1, 3, 4): equal means share a rank, Adam first among them.
  def run(name, acc):
    acc = np.array([acc])  # one lr
    return compare.MethodRun(name, np.array([1e-3]), np.arange(3), acc, acc * 0, acc, acc * 0,
                             np.zeros((1, 3, 1)), np.zeros((1, 3, 1)), {}, compile_s=1.0,
                             run_s=1.0, steps=10)
  config = dict(dataset="iris", n_test=20, model="m", epochs=1, batch_size=32, n_train=90)
  runs = {"sgd": run("sgd", [90.0, 90.0, 90.0]), "sam": run("sam", [100.0, 90.0, 95.0]),
          "adam": run("adam", [95.0, 95.0, 95.0]), "adagrad": run("adagrad", [80.0, 80.0, 80.0])}
  records = compare.summarize(dict(config=config, runs=runs))
  assert [(r["method"], r["rank"]) for r in records] == [("adam", 1), ("sam", 1), ("sgd", 3),
                                                         ("adagrad", 4)]


def test_seed_statistics_and_rounding_of_the_tables():
  from scipy import stats
  for values in ([90.0, 92.5, 97.5, 95.0], [90.0, 95.0]):
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert compare._t_half(values) == pytest.approx((high - low) / 2, rel=1e-12)
    assert compare._std(values) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
  # One seed: no spread, and no interval.
  assert compare._std([90.0]) == 0.0 and np.isnan(compare._t_half([90.0]))
  # The tables round to 4 decimals, except the lr (the value asked for) and p.
  rec = dict(test_acc_mean=96.694444, best_lr=0.0003, wilcoxon_p=1.234567e-5, wins_vs_adam=3)
  assert compare._round(rec) == dict(test_acc_mean=96.6944, best_lr=0.0003, wilcoxon_p=1.234567e-5,
                                     wins_vs_adam=3)


def test_equal_counts_tie_whatever_the_rounding_of_their_mean():
  # 10 seeds, 360 validation samples: lr 0 and lr 1 got the same total right
  # (3,300), spread differently over the seeds, so their float32 means may
  # differ in the last bit; lr 1 has the lower loss and must win. A genuine
  # difference (lr 2: one sample fewer) is never a tie.
  per_seed = lambda counts: np.asarray(counts, np.float32) * np.float32(100 / 360)  # noqa: E731
  a = per_seed([330] * 10)
  b = per_seed([327, 327, 327, 334, 327, 327, 326, 326, 333, 346])
  c = per_seed([330] * 9 + [329])
  assert a.mean() > b.mean()  # in float32 the equal counts' means differ
  run = compare.MethodRun(
      method="x", lrs=np.array([0.1, 0.2, 0.3]), seeds=np.arange(10),
      val_acc=np.stack([a, b, c]), val_loss=np.array([[0.5] * 10, [0.4] * 10, [0.1] * 10]),
      test_acc=np.zeros((3, 10)), test_loss=np.zeros((3, 10)), train_loss_curve=np.zeros((3, 10, 1)),
      val_acc_curve=np.zeros((3, 10, 1)), initial_params=None, compile_s=0.0, run_s=1.0, steps=1)
  assert compare.best_lr_index(run) == 1


@pytest.fixture(scope="module")
def iris_result():
  return compare.run_dataset("iris", seeds=np.array([0, 1]), quick=True, epochs=1)


def test_every_method_in_a_seed_starts_from_identical_params(iris_result):
  runs = iris_result["runs"]
  assert set(runs) == set(compare.METHODS)
  ref = runs["adam"].initial_params
  ref_leaves = jax.tree.leaves(ref)
  # The two seeds start differently ...
  assert not np.allclose(ref_leaves[0][0, 0], ref_leaves[0][0, 1])
  for name, run in runs.items():
    assert run.lrs.size == 1 and run.seeds.tolist() == [0, 1]
    assert jax.tree.structure(run.initial_params) == jax.tree.structure(ref), name
    # ... and every method of a seed from the same weights (lookahead: its slow
    # weights, EMA: its average, both equal to the weights at step 0).
    for a, b in zip(jax.tree.leaves(run.initial_params), ref_leaves):
      np.testing.assert_array_equal(a, b, err_msg=name)
    assert np.all(np.isfinite(run.val_acc)) and np.all(np.isfinite(run.test_acc))
    assert run.train_loss_curve.shape == (1, 2, 1)


def test_outputs_csv_columns_and_files(iris_result, tmp_path):
  records = compare.write_outputs(tmp_path, {"iris": iris_result}, "pytest", 1.0)
  with open(tmp_path / "compare.csv") as f:
    rows = list(csv.DictReader(f))
  header = list(rows[0])
  assert tuple(header[:len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
  assert {r["method"] for r in rows} == set(compare.METHODS)
  assert len(rows) == len(records) == len(compare.METHODS)
  adam = next(r for r in rows if r["method"] == "adam")
  assert float(adam["diff_vs_adam_mean"]) == 0.0
  for r in rows:
    assert r["dataset"] == "iris" and int(r["seeds"]) == 2
    assert float(r["us_per_step"]) > 0 and 0 <= float(r["test_acc_mean"]) <= 100
    assert 0 <= int(r["wins_vs_adam"]) <= 2
  # The paired difference is method − Adam per seed.
  runs = iris_result["runs"]
  sam = next(r for r in rows if r["method"] == "sam")
  expected = float(np.mean(runs["sam"].test_acc[0] - runs["adam"].test_acc[0]))
  assert abs(float(sam["diff_vs_adam_mean"]) - expected) < 1e-3
  md = (tmp_path / "compare.md").read_text()
  assert "where homogeneity ranks" in md and "hom-partI" in md
  for f in ("compare/iris.png", "compare/time_per_step.png", "compare/iris.json"):
    assert (tmp_path / f).stat().st_size > 0


def test_summary_means_are_float64_means(iris_result):
  """The tables' means are of the float32 accuracies taken in float64 (a float32
  mean printed 96.6945 for the digits accuracies whose mean is 3481/3600 = 96.69444)."""
  acc = np.array([96.38889, 96.66667, 96.94444, 96.66667, 96.94444, 96.38889, 96.66667,
                  96.94444, 96.94444, 96.38889], np.float32)  # 3481/36 samples of 360 over 10 seeds
  assert round(compare._mean(acc), 4) == 96.6944
  for rec in compare.summarize(iris_result):
    run = iris_result["runs"][rec["method"]]
    j = compare.best_lr_index(run)
    assert rec["test_acc_mean"] == float(np.mean(run.test_acc[j].astype(np.float64)))
    assert rec["val_acc_mean"] == float(np.mean(run.val_acc[j].astype(np.float64)))


def test_outputs_json_is_written_before_the_plot(iris_result, tmp_path, monkeypatch):
  """A plotting failure loses no training (as in reproduce)."""
  def broken_plot(*args, **kwargs):
    raise OSError("disk full while plotting")
  monkeypatch.setattr(compare, "plot_dataset", broken_plot)
  with pytest.raises(OSError, match="plotting"):
    compare.write_outputs(tmp_path, {"iris": iris_result}, "cmd", 1.0)
  assert report.load_json(tmp_path / "compare" / "iris.json")["config"]["seeds"] == [0, 1]


def test_seed004_keeps_the_finished_tasks_of_a_failed_run(tmp_path):
  """The finished tasks are written after each one (to seed004.partial.csv): a
  failure in the next keeps them, and leaves an earlier seed004.csv whole."""
  iris = datasets.load("iris")
  task = dict(task="iris-logreg", data=iris, stand_in=None, batch_size=32, epochs=1,
              model=models.logistic_regression(4, 3), model_name="logistic regression 4-3")
  broken = dict(task, task="broken", model=None)
  (tmp_path / "seed004.csv").write_text("an earlier run's table")
  with pytest.raises(AttributeError):
    compare.run_seed004(tmp_path, seeds=np.array([0, 1]), quick=True, tasks=[task, broken],
                        log=lambda *a: None)
  assert (tmp_path / "seed004.csv").read_text() == "an earlier run's table"
  with open(tmp_path / compare.SEED004_PARTIAL) as f:
    rows = list(csv.DictReader(f))
  assert [(r["task"], r["method"], r["first_seed"]) for r in rows] == [
      ("iris-logreg", "backprop", "0"), ("iris-logreg", "forward", "0")]
  # A finished run replaces the table and removes the partial file.
  compare.run_seed004(tmp_path, seeds=np.array([3, 4]), quick=True, tasks=[task],
                      log=lambda *a: None)
  assert not (tmp_path / compare.SEED004_PARTIAL).exists()
  assert compare.seed004_other_run(tmp_path, seeds=2, first_seed=3, quick=True) is None
  assert "seeds 2 from 3" in compare.seed004_other_run(tmp_path, seeds=2, quick=True)
  assert "seeds 2 from 3" in compare.seed004_other_run(tmp_path, seeds=2, first_seed=3,
                                                       quick=False)


def test_cli_quick_subset(tmp_path, capsys):
  rc = compare.main(["--dataset", "iris", "--quick", "--methods", "sgd", "--epochs", "1",
                     "--out", str(tmp_path)])
  assert rc == 0
  out = capsys.readouterr().out
  for method in ("adam", "sgd"):  # one progress line per method
    assert re.search(rf"iris +{method}: best lr \S+ +val ", out), out
  with open(tmp_path / "compare.csv") as f:
    assert {r["method"] for r in csv.DictReader(f)} == {"adam", "sgd"}


def test_cli_rejects_unknown_method(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    compare.main(["--methods", "nope", "--out", str(tmp_path)])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert "error: --methods: unknown method(s) ['nope']" in err


def test_interrupted_cli_keeps_the_earlier_rows_of_datasets_not_rerun_yet(iris_result, tmp_path,
                                                                          monkeypatch):
  # compare.csv is rewritten after each dataset; until digits is rerun, its
  # earlier rows stay.
  def run_dataset(name, **kwargs):
    if name == "digits":
      raise KeyboardInterrupt
    assert kwargs["seeds"].tolist() == [0, 1] and kwargs["quick"] and kwargs["epochs"] == 1
    return iris_result

  monkeypatch.setattr(compare, "run_dataset", run_dataset)
  table = tmp_path / "compare.csv"
  table.write_text("dataset,method,best_lr\ndigits,adam,0.001\niris,adam,0.003\n")
  with pytest.raises(KeyboardInterrupt):
    compare.main(["--dataset", "iris", "--dataset", "digits", "--quick", "--epochs", "1",
                  "--out", str(tmp_path)])
  with open(table) as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows if r["dataset"] == "digits"] == ["adam"]
  assert next(r for r in rows if r["dataset"] == "digits")["best_lr"] == "0.001"
  assert {r["method"] for r in rows if r["dataset"] == "iris"} == set(compare.METHODS)


def test_seed004_with_a_data_dir_without_kmnist_is_an_error(tmp_path):
  """A --data-dir given for KMNIST is not silently replaced by the Fashion-MNIST stand-in."""
  with pytest.raises(datasets.DatasetUnavailable, match="kmnist"):
    compare.seed004_tasks(quick=True, data_dir=tmp_path)


def test_seed004_tasks_label_the_stand_in():
  try:
    datasets.load("fashion_mnist", train_size=1)
  except datasets.DatasetUnavailable:
    pytest.skip("neither KMNIST nor Fashion-MNIST on this machine")
  tasks = compare.seed004_tasks(quick=True)
  cnn = tasks[-1]
  assert cnn["data"].x_train.shape[1:] == (28, 28, 1)
  if cnn["data"].name != "kmnist":
    assert cnn["stand_in"] == "kmnist" and cnn["task"] == "fashion_mnist-cnn"
