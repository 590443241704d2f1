"""The seeds benchmark's traffic count and its group sizes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_refused
from benchmarks import bench_seeds


def test_loop_body_bytes_counts_what_a_scan_step_reads_and_writes():
  """x ← 2x + y over 1,000 float32s: one kernel reads x and y and writes x (12,000 bytes).

  Besides it the loop body holds only the step counter's scalar add, so the count
  is 12,000 bytes plus a few scalars; the kernel before the loop (z·3 over 5,000
  float32s) is not counted.
  """
  def f(x, y, z):
    z = z * 3.0
    x, _ = jax.lax.scan(lambda c, _: (c * 2.0 + y, None), x, None, length=10)
    return x, z

  args = (jnp.ones(1000), jnp.ones(1000), jnp.ones(5000))
  nbytes, kernels = bench_seeds.loop_body_bytes(jax.jit(f).lower(*args).compile().as_text())
  assert 12_000 <= nbytes <= 12_000 + 64
  assert 1 <= kernels <= 3


def test_loop_body_bytes_needs_a_loop():
  text = jax.jit(lambda x: x * 2.0).lower(jnp.ones(3)).compile().as_text()
  with pytest.raises(ValueError, match="no while loop"):
    bench_seeds.loop_body_bytes(text)


def test_shape_bytes_reads_dtypes_and_tuples():
  assert bench_seeds._shape_bytes("f32[32,4,10]{2,1,0}") == 4 * 1280
  assert bench_seeds._shape_bytes("(f32[3]{0}, s32[], pred[8]{0}, bf16[2,2]{1,0})") == 12 + 4 + 8 + 8


def test_groups_must_divide_the_seeds(capsys):
  assert_refused(bench_seeds.main,
                 ["--quick", "--no-write", "--problems", "iris", "--groups", "3"], capsys,
                 "--groups: [3] do not divide 32")


@pytest.fixture
def no_timing(monkeypatch):
  """``bench_problem`` and the shuffle stubbed: each problem's row names its data."""
  seen = []

  def bench_problem(prob, reps, groups, copy_calls=1):
    seen.append(dict(name=prob["name"], groups=list(groups), copy_calls=copy_calls))
    return dict(problem=prob["name"], data=prob["data_note"], steps_per_seed=1,
                group_ratio={str(g): 1.0 for g in groups})

  monkeypatch.setattr(bench_seeds, "bench_problem", bench_problem)
  monkeypatch.setattr(bench_seeds, "bench_shuffle", lambda reps: [])
  return seen


def _without_fashion_mnist(monkeypatch):
  from experiments import datasets
  load = datasets.load

  def missing(name, **kwargs):
    if name == "fashion_mnist":
      raise datasets.DatasetUnavailable("fashion_mnist: no IDX files (stub)")
    return load(name, **kwargs)

  monkeypatch.setattr(datasets, "load", missing)


def _on_a_gpu(monkeypatch):
  """What a GPU machine's jax reports (the timings are stubbed, nothing runs on it)."""
  from benchmarks import common
  monkeypatch.setattr(common, "setup_platform", lambda args: None)
  monkeypatch.setattr(common, "jax_device",
                      lambda: {"platform": "gpu", "device_kind": "stub", "count": "1"})


@pytest.mark.parametrize("argv, partial", [
    ([], False),
    (["--reps", "2"], False),  # more or fewer repetitions of the same measurement
    (["--groups", "8", "4", "2"], False),  # the defaults in another order
    (["--groups", "2", "4"], True),
    (["--problems", "iris"], True),
])
def test_a_run_is_partial_unless_it_measures_the_full_runs_problems_and_groups(
    bench_dirs, no_timing, argv, partial):
  out, results = bench_dirs
  bench_seeds.main(["--platform", "cpu", *argv])
  record = json.loads((out / "seeds_cpu.json").read_text())
  assert record["partial"] is partial
  assert (results / "seeds_cpu.json").exists() is not partial
  assert record["settings"]["copy_calls_per_timing"] == 1


def test_the_printed_output_names_each_problems_data(bench_dirs, no_timing, monkeypatch, capsys):
  """Without Fashion-MNIST the CPU run falls back to synthetic data, and says so in print."""
  _without_fashion_mnist(monkeypatch)
  bench_seeds.main(["--platform", "cpu", "--no-write", "--quick"])
  text = capsys.readouterr().out
  assert "iris mlp4-10-3: data: Iris" in text
  for b in (42, 5):
    assert f"mnist mlp784-128-10 b{b}: data: synthetic" in text
  assert "Fashion-MNIST subset" not in text


def test_the_printed_output_names_fashion_mnist_when_it_is_used(no_timing, monkeypatch, capsys):
  from experiments import datasets
  monkeypatch.setattr(datasets, "load", lambda name, **kw: datasets.Dataset(
      name=name, x_train=np.zeros((840, 784), np.float32), y_train=np.zeros(840, np.int32),
      x_val=np.zeros((4, 784), np.float32), y_val=np.zeros(4, np.int32),
      x_test=np.zeros((4, 784), np.float32), y_test=np.zeros(4, np.int32), num_classes=10,
      note="stub"))
  bench_seeds.main(["--platform", "cpu", "--no-write", "--quick", "--problems", "mnist"])
  assert "mnist mlp784-128-10 b42: data: Fashion-MNIST subset (840 train" in capsys.readouterr().out


def test_a_gpu_run_refuses_synthetic_data_before_any_timing(no_timing, monkeypatch):
  _without_fashion_mnist(monkeypatch)
  _on_a_gpu(monkeypatch)
  with pytest.raises(SystemExit) as e:
    bench_seeds.main(["--platform", "gpu", "--no-write", "--quick"])
  assert "/usr/share/datasets/fashion-mnist" in str(e.value)
  assert "--allow-synthetic" in str(e.value)
  assert no_timing == []  # not even the Iris problem was timed


def test_a_gpu_run_uses_synthetic_data_when_allowed(no_timing, monkeypatch, capsys):
  _without_fashion_mnist(monkeypatch)
  _on_a_gpu(monkeypatch)
  record = bench_seeds.main(["--platform", "gpu", "--no-write", "--quick", "--allow-synthetic"])
  assert [r["data"].split()[0] for r in record["rows"]] == ["Iris", "synthetic", "synthetic"]
  assert "mnist mlp784-128-10 b42: data: synthetic" in capsys.readouterr().out
  # And on a GPU the copy reference runs 20 copies per timing.
  assert {s["copy_calls"] for s in no_timing} == {20}
  assert record["settings"]["copy_calls_per_timing"] == 20


def _stub_clock(monkeypatch, durations):
  """``perf_counter`` of ``bench_memory.chained``: its i-th timing lasts ``durations[i]`` s."""
  import types

  from benchmarks import bench_memory
  reads = []
  for d in durations:
    start = reads[-1] if reads else 0.0
    reads += [start, start + d]
  clock = iter(reads)
  monkeypatch.setattr(bench_memory, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  return clock


# Two untimed calls (compile and warm-up), then 15 timings: 1..15 s, median 8 s.
_DURATIONS = [100.0, 100.0] + [float(i) for i in range(1, 16)]


def test_the_cpu_copy_reference_is_one_call_per_timing(monkeypatch):
  """As before: 17 calls of one ``x + y``, the first two dropped, the median of the rest."""
  clock = _stub_clock(monkeypatch, _DURATIONS)
  gb_s = bench_seeds.copy_bandwidth(1000, calls=bench_seeds.COPY_CALLS["cpu"])
  assert gb_s == pytest.approx(12 * 1000 / 8.0 / 1e9)
  assert next(clock, None) is None  # exactly 17 timed calls


def test_the_gpu_copy_reference_divides_a_k_step_timing_by_k(monkeypatch):
  """k = 20 copies in one jitted loop per timing: seconds per copy = the timing / k."""
  clock = _stub_clock(monkeypatch, _DURATIONS)
  k = bench_seeds.COPY_CALLS["gpu"]
  assert k == 20
  gb_s = bench_seeds.copy_bandwidth(1000, calls=k)
  assert gb_s == pytest.approx(12 * 1000 / (8.0 / k) / 1e9)
  assert next(clock, None) is None


def test_epoch_traffic_records_the_copies_per_timing(monkeypatch):
  """Above BOUND_MIN_CARRY_BYTES the row has copy_gb_s and the copies per timing used."""
  monkeypatch.setattr(bench_seeds, "BOUND_MIN_CARRY_BYTES", 0)
  got = []
  monkeypatch.setattr(bench_seeds, "copy_bandwidth", lambda size, calls: got.append(
      (size, calls)) or 5.0)
  run = jax.jit(lambda c, k, e, x: (jax.lax.scan(lambda a, _: (a * 2.0 + x, None), c, None,
                                                 length=3)[0], None))
  out = bench_seeds.epoch_traffic(run, jnp.ones(16), jnp.zeros(2), (jnp.ones(16),), copy_calls=20)
  assert got == [(16, 20)]
  assert out["copy_gb_s"] == 5.0 and out["copy_calls_per_timing"] == 20


def test_iris_seeds_in_parallel_and_one_after_another_for_real(monkeypatch):
  """``bench_problem`` on Iris: the 32 seeds vmapped and one at a time reach the same test
  accuracies (those of ``train_paired`` on seeds 0–31), nothing compiles inside a timed run,
  and the row's figures are those of its recorded times (medians, the ratio sequential ÷
  parallel, seed-steps per second, the groups)."""
  import time
  import types
  from benchmarks import common
  from experiments import train
  # Every clock reading with the number of XLA compilations so far: a timed interval
  # (a pair of readings after the first two, which bracket the warm-up) must contain none.
  # The epoch's records are fetched once per epoch (``jax.device_get``), as train_paired does.
  compiles, readings, fetches = [], [], []

  def on_event(event, secs, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(secs)

  def perf_counter():
    readings.append((time.perf_counter(), len(compiles), len(fetches)))
    return readings[-1][0]

  device_get = jax.device_get
  monkeypatch.setattr(jax, "device_get", lambda x: fetches.append(1) or device_get(x))
  monkeypatch.setattr(bench_seeds, "time", types.SimpleNamespace(perf_counter=perf_counter))
  # The bandwidth bound, computed here although Iris's carry is cache-sized, from a stub copy
  # speed of 10 GB/s.
  monkeypatch.setattr(bench_seeds, "BOUND_MIN_CARRY_BYTES", 0)
  monkeypatch.setattr(bench_seeds, "copy_bandwidth", lambda size, calls: 10.0)
  jax.monitoring.register_event_duration_secs_listener(on_event)
  prob = bench_seeds.iris_problem()
  try:
    t0 = time.perf_counter()
    row = bench_seeds.bench_problem(prob, reps=2, groups=(4,))
    elapsed = time.perf_counter() - t0
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)
  timed = readings[2:]
  assert len(timed) == 2 * 2 * 3  # 2 repetitions of 3 arms (1, 4 and 32 seeds per call)
  assert readings[1][1] > readings[0][1]  # the warm-up compiled ...
  assert all(a[1] == b[1] for a, b in zip(timed[::2], timed[1::2]))  # ... the timed runs not
  # Rotating order: repetition 0 times 1, 4, 32 seeds per call, repetition 1 times 4, 32, 1;
  # each of the 32/g calls fetches its 10 epochs' records.
  assert [b[2] - a[2] for a, b in zip(timed[::2], timed[1::2])] == [320, 80, 10, 80, 10, 320]
  assert sum(sum(v) for v in row["times_s"].values()) + row["compile_s_excluded"] <= elapsed
  assert row["compile_s_excluded"] == pytest.approx(readings[1][0] - readings[0][0])
  # The 32 seeds are seeds 0–31 trained as experiments.train.train_paired trains them.
  ref = train.train_paired(train.PairedTrainer(
      model=prob["model"], make_homogeneity_tx=prob["make_tx"], adam_tx=prob["adam"],
      batch_size=prob["batch"]), prob["data"], epochs=prob["epochs"], seeds=np.arange(32))
  assert row["mean_test_acc_h"] == pytest.approx(float(np.mean(ref.test_acc_h)), abs=1e-9)
  assert row["mean_test_acc_a"] == pytest.approx(float(np.mean(ref.test_acc_a)), abs=1e-9)
  assert row["seeds"] == bench_seeds.SEEDS == 32
  assert row["steps_per_seed"] == 3 * 10  # ⌈90 / 32⌉ steps per epoch, 10 epochs
  times = row["times_s"]
  assert sorted(times) == ["groups of 4", "parallel", "sequential"]
  assert all(len(v) == 2 and min(v) > 0 for v in times.values())
  assert row["parallel_s"] == common.median(times["parallel"])
  assert row["sequential_s"] == common.median(times["sequential"])
  assert row["ratio"] == pytest.approx(row["sequential_s"] / row["parallel_s"])
  assert row["paired_ratio"] == pytest.approx(
      common.paired_ratio(times["sequential"], times["parallel"]))
  assert row["parallel_seed_steps_per_s"] == pytest.approx(32 * 30 / row["parallel_s"])
  assert row["sequential_seed_steps_per_s"] == pytest.approx(32 * 30 / row["sequential_s"])
  assert row["group_s"]["4"] == common.median(times["groups of 4"])
  assert row["group_ratio"]["1"] == pytest.approx(1.0)
  assert row["group_ratio"]["32"] == pytest.approx(row["ratio"])
  assert row["best_group_ratio"] == max(row["group_ratio"].values())
  assert row["max_test_acc_diff_pct_points"] == 0.0  # every grouping, every seed alike
  assert 0 < row["mean_test_acc_h"] <= 100 and 0 < row["mean_test_acc_a"] <= 100
  assert row["xla_bytes_per_seed_step"] > 0 and row["carry_bytes"] > 0
  assert row["copy_gb_s"] == 10.0
  assert row["bandwidth_bound_seed_steps_per_s"] == pytest.approx(
      10e9 / row["xla_bytes_per_seed_step"])
  assert row["bandwidth_bound_ratio"] == pytest.approx(
      row["bandwidth_bound_seed_steps_per_s"] / row["sequential_seed_steps_per_s"])


def test_the_shuffle_table_times_both_permutations_and_names_the_trainers_choice(monkeypatch):
  """``bench_shuffle``: per n, both ways give the same permutation, the speed-up is sort ÷
  count of the timed medians, and the trainer's choice follows COUNTING_PERMUTATION_MAX,
  which is restored afterwards (the timing lifts it to time counting at every n)."""
  import itertools
  import types
  from experiments import train
  limit = train.COUNTING_PERMUTATION_MAX
  # The counting function is traced with the threshold lifted above every n (else it sorts).
  permutation, seen = train.permutation, []
  monkeypatch.setattr(train, "permutation", lambda key, n: seen.append(
      (n, train.COUNTING_PERMUTATION_MAX)) or permutation(key, n))
  # A clock that advances 0.5 ms per reading: every timing is 500 µs.
  ticks = itertools.count()
  monkeypatch.setattr(bench_seeds, "time",
                      types.SimpleNamespace(perf_counter=lambda: 5e-4 * next(ticks)))
  rows = bench_seeds.bench_shuffle(sizes=(limit, limit + 1), reps=3)
  assert train.COUNTING_PERMUTATION_MAX == limit
  assert seen and all(m >= n for n, m in seen) and {n for n, _ in seen} == {limit, limit + 1}
  assert [r["n"] for r in rows] == [limit, limit + 1]
  assert [r["used_by_trainer"] for r in rows] == ["count", "sort"]
  for r in rows:
    assert r["identical"] is True and r["seeds"] == bench_seeds.SEEDS
    assert r["sort_us"] == pytest.approx(500.0) and r["count_us"] == pytest.approx(500.0)
    assert r["speedup"] == pytest.approx(r["sort_us"] / r["count_us"])


def _same_updates(tx, ref, params, steps=2):
  """``steps`` updates of ``tx`` and ``ref`` from the same gradients agree."""
  s, r = tx.init(params), ref.init(params)
  keys = jax.random.split(jax.random.key(3), steps)
  for k in keys:
    g = jax.tree.map(lambda x: jax.random.normal(k, x.shape, x.dtype), params)
    u, s = tx.update(g, s, params)
    v, r = ref.update(g, r, params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    params = jax.tree.map(lambda p, d: p + d, params, u)


def test_the_problems_are_the_published_rows_settings(monkeypatch):
  """Iris: MLP 4→10→3, batch 32, 10 epochs, B-A at η = 0.01 against Adam(0.01); the MNIST
  MLP: 784→128→10, one epoch of 200 steps (20 with --quick), A-B at η = 0.01, η_h = 0.001,
  at batch 42 and 5 (the docstring's settings, built here by hand)."""
  import optax
  import homax
  iris = bench_seeds.iris_problem()
  assert (iris["batch"], iris["epochs"], iris["variant"]) == (32, 10, "B-A")
  params = iris["model"].init(jax.random.key(0))
  assert sorted(x.shape for x in jax.tree.leaves(params)) == [(3,), (4, 10), (10,), (10, 3)]
  avg = iris["model"].init(jax.random.key(1))
  total = homax.total_steps(iris["data"].x_train.shape[0], 32, 10)
  _same_updates(iris["make_tx"](avg), homax.paper_optimizer(
      "B-A", learning_rate=0.01, total_steps=total, initial_average=avg), params)
  _same_updates(iris["adam"], optax.adam(0.01, eps=1e-8), params)

  _without_fashion_mnist(monkeypatch)
  for quick, batch in ((False, 42), (True, 5)):
    prob = bench_seeds.mnist_problem(quick, batch=batch)
    steps = 20 if quick else 200
    assert prob["data"].x_train.shape == (steps * batch, 784)
    assert (prob["batch"], prob["epochs"], prob["variant"]) == (batch, 1, "A-B")
    params = prob["model"].init(jax.random.key(0))
    assert sorted(x.shape for x in jax.tree.leaves(params)) == [(10,), (128,), (128, 10),
                                                                (784, 128)]
    avg = prob["model"].init(jax.random.key(1))
    _same_updates(prob["make_tx"](avg), homax.paper_optimizer(
        "A-B", learning_rate=0.01, homogeneity_learning_rate=0.001, total_steps=steps,
        initial_average=avg), params)
    _same_updates(prob["adam"], optax.adam(0.01, eps=1e-8), params)


@pytest.mark.parametrize("extra, reps", [
    ([], {"iris": 5, "mnist": 3, "mnist-b5": 5}),
    (["--quick"], {"iris": 1, "mnist": 1, "mnist-b5": 1}),
    (["--reps", "2"], {"iris": 2, "mnist": 2, "mnist-b5": 2}),
])
def test_the_defaults_are_three_problems_groups_2_4_8_and_their_repetitions(
    monkeypatch, extra, reps):
  """Without options every problem runs, with groups of 2, 4 and 8 seeds besides 1 and 32,
  5 repetitions (3 for the MNIST MLP at batch 42; 1 with --quick), on the CPU one copy per
  timing of the bandwidth reference."""
  seen = {}

  def stub(prob, r, groups, copy_calls=1):
    seen[prob["name"].split()[0] + ("-b5" if prob["batch"] == 5 else "")] = (
        r, list(groups), copy_calls)
    return dict(problem=prob["name"], data=prob["data_note"], steps_per_seed=1,
                group_ratio={str(g): 1.0 for g in groups})

  monkeypatch.setattr(bench_seeds, "bench_problem", stub)
  monkeypatch.setattr(bench_seeds, "bench_shuffle", lambda reps: [])
  _without_fashion_mnist(monkeypatch)
  bench_seeds.main([*extra, "--no-write", "--platform", "cpu"])
  assert seen == {k: (r, [2, 4, 8], 1) for k, r in reps.items()}


def test_bench_problem_refuses_a_group_size_that_does_not_divide_the_seeds():
  """Called directly (not through ``main``'s check), a group of 3 seeds is refused before
  anything is timed: 32 seeds cannot be split into groups of 3."""
  with pytest.raises(ValueError, match=r"group sizes must divide 32, got \[1, 3, 32\]"):
    bench_seeds.bench_problem(bench_seeds.iris_problem(), reps=1, groups=(3,))
