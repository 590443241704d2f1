"""Which runs of the torch benchmark may replace its committed record."""

import json

import pytest

from benchmarks import bench_torch, common


class _NoWorker:
  """Stands in for the torch process (no torch, no subprocess)."""

  hello = {"stub": True}

  def __init__(self, device):
    self.device = device

  def close(self):
    pass


@pytest.mark.parametrize("argv, partial", [
    ([], False),
    (["--reps", "3"], False),  # more or fewer repetitions of the same measurement
    (["--steps", "200"], False),  # the default, named
    (["--batches", "5", "128", "420"], False),
    (["--batches", "420", "5", "128"], False),  # the same batches in another order
    (["--steps", "50"], True),
    (["--batches", "128"], True),
    (["--batches", "5", "128", "420", "1000"], True),
])
def test_a_run_is_partial_unless_it_measures_the_full_runs_batches_and_steps(
    bench_dirs, monkeypatch, argv, partial):
  out, results = bench_dirs
  monkeypatch.setattr(common, "torch_device", lambda args: "cpu")
  monkeypatch.setattr(bench_torch, "TorchWorker", _NoWorker)
  batches = []
  monkeypatch.setattr(bench_torch, "bench_batch", lambda worker, batch, steps, reps: batches.append(
      batch) or dict(batch=batch, steps=steps, reps=reps))
  bench_torch.main(["--platform", "cpu", *argv])
  assert batches == (list(bench_torch.BATCHES) if "--batches" not in argv else
                     [int(b) for b in argv[argv.index("--batches") + 1:]])
  record = json.loads((out / "torch_cpu.json").read_text())
  assert record["partial"] is partial
  assert (results / "torch_cpu.json").exists() is not partial


def test_each_homax_arm_runs_right_after_a_torch_run(monkeypatch):
  """``bench_batch`` times its six arms in ``ORDER``'s rotating groups, so both homax arms
  always follow a torch run (a jax run right after torch's is slower)."""
  calls = []

  def arm(name):
    return lambda: calls.append(name) or 1.0

  names = ["homax adam", "homax homog", "torch adam", "torch homog",
           "torch adam (no monitor)", "torch homog (no monitor)"]
  monkeypatch.setattr(bench_torch, "homax_arms", lambda batch, steps: {
      n: arm(n) for n in names[:2]})
  monkeypatch.setattr(bench_torch, "torch_arms", lambda worker, batch, steps: {
      n: arm(n) for n in names[2:]})
  row = bench_torch.bench_batch(None, 5, 10, reps=8)
  assert row["reps"] == 8
  timed = calls[4:]  # after the torch arms' warm-up calls
  assert sorted(timed) == sorted(names * 8)
  for i, name in enumerate(timed):
    if name.startswith("homax"):
      assert timed[i - 1] == "torch " + name.split()[1], (i, timed[i - 4:i + 1])
  # The groups rotate: each repetition starts with another group.
  starts = [timed[i] for i in range(0, len(timed), 6)]
  assert starts[:4] == ["torch adam", "torch homog", "torch adam (no monitor)",
                        "torch homog (no monitor)"]


def _stub_arms(monkeypatch, runs):
  """``bench_batch``'s six arms as timers returning ``runs[arm]`` one repetition after
  another (the torch arms' warm-up call first gets an outlier that must not count)."""
  def timer(values):
    it = iter(values)
    return lambda: next(it)

  warm = {n: [999.0] if n.startswith("torch") else [] for n in runs}
  arms = {n: timer(warm[n] + v) for n, v in runs.items()}
  monkeypatch.setattr(bench_torch, "homax_arms", lambda batch, steps: {
      n: f for n, f in arms.items() if n.startswith("homax")})
  monkeypatch.setattr(bench_torch, "torch_arms", lambda worker, batch, steps: {
      n: f for n, f in arms.items() if n.startswith("torch")})


def test_a_rows_speedups_and_parts_are_those_of_its_median_times(monkeypatch):
  """Per step = median run time / steps (µs); whole-step speed-up = torch homog ÷ homax
  homog; the homogeneity part = homog − Adam in each framework, and its ratio torch ÷
  homax, from the medians and from the per-repetition differences (paired)."""
  runs = {  # seconds per 10-step run, three repetitions
      "torch adam": [0.30, 0.33, 0.36], "torch homog": [0.90, 1.02, 0.96],
      "torch adam (no monitor)": [0.20, 0.22, 0.21],
      "torch homog (no monitor)": [0.50, 0.56, 0.53],
      "homax adam": [0.010, 0.012, 0.011], "homax homog": [0.013, 0.016, 0.0135],
  }
  _stub_arms(monkeypatch, runs)
  row = bench_torch.bench_batch(None, 128, 10, reps=3)
  approx = lambda x: pytest.approx(x, rel=1e-9)  # noqa: E731
  assert row["batch"] == 128 and row["steps"] == 10 and row["reps"] == 3
  assert row["times_s"] == runs
  # medians / 10 steps, in µs
  assert row["torch_adam_us"] == approx(33000) and row["torch_homog_us"] == approx(96000)
  assert row["torch_adam_no_monitor_us"] == approx(21000)
  assert row["torch_homog_no_monitor_us"] == approx(53000)
  assert row["homax_adam_us"] == approx(1100) and row["homax_homog_us"] == approx(1350)
  assert row["speedup_whole_step"] == approx(96000 / 1350)
  assert row["speedup_whole_step_no_monitor"] == approx(53000 / 1350)
  assert row["homax_part_us"] == approx(250) and row["torch_part_us"] == approx(63000)
  assert row["torch_part_no_monitor_us"] == approx(32000)
  assert row["part_cheaper_x"] == approx(63000 / 250)
  assert row["part_cheaper_no_monitor_x"] == approx(32000 / 250)
  # paired: median over repetitions of (homog − Adam): homax 3, 4, 2.5 ms; torch 600, 690, 600 ms
  assert row["homax_part_paired_us"] == approx(300) and row["torch_part_paired_us"] == approx(60000)
  assert row["part_cheaper_paired_x"] == approx(200)
  assert set(k for k, *_ in bench_torch.COLUMNS) <= set(row)


def test_a_homogeneity_part_at_or_below_zero_has_no_ratio(monkeypatch):
  """homax's part within the noise (homog no slower than Adam): no finite 'part ×'."""
  runs = {n: [1.0, 1.0, 1.0] for n in ("torch adam", "torch homog", "torch adam (no monitor)",
                                       "torch homog (no monitor)", "homax adam")}
  runs["homax homog"] = [1.0, 0.9, 1.0]
  _stub_arms(monkeypatch, runs)
  row = bench_torch.bench_batch(None, 5, 10, reps=3)
  assert row["homax_part_us"] == 0.0 and row["homax_part_paired_us"] == 0.0
  assert row["part_cheaper_x"] is None and row["part_cheaper_no_monitor_x"] is None
  assert row["part_cheaper_paired_x"] is None


@pytest.mark.parametrize("argv, steps, reps", [
    ([], 200, 15), (["--quick"], 40, 2), (["--steps", "7", "--reps", "3"], 7, 3),
    (["--quick", "--steps", "7"], 7, 2),
])
def test_steps_and_repetitions_per_batch(monkeypatch, argv, steps, reps):
  """A full run times 200-step runs 15 times (``--quick``: 40 steps, 2 repetitions)."""
  monkeypatch.setattr(common, "torch_device", lambda args: "cpu")
  monkeypatch.setattr(bench_torch, "TorchWorker", _NoWorker)
  calls = []
  monkeypatch.setattr(bench_torch, "bench_batch", lambda worker, batch, s, r: calls.append(
      (batch, s, r)) or dict(batch=batch, steps=s, reps=r))
  bench_torch.main(["--platform", "cpu", "--no-write", *argv])
  assert calls == [(b, steps, reps) for b in bench_torch.BATCHES]


def test_a_short_real_run_times_both_frameworks(monkeypatch):
  """End to end, torch's worker process included: every arm of a 2-step run is timed and
  the worker, asked to quit, exits cleanly. The issue's batch sizes are the full run's."""
  assert bench_torch.BATCHES == (5, 128, 420)
  workers = []

  class Recorded(bench_torch.TorchWorker):
    def __init__(self, device):
      super().__init__(device)
      workers.append(self)

  monkeypatch.setattr(bench_torch, "TorchWorker", Recorded)
  setups = []
  setup = bench_torch.bench_overhead.setup
  monkeypatch.setattr(bench_torch.bench_overhead, "setup",
                      lambda *args: setups.append(args) or setup(*args))
  record = bench_torch.main(["--platform", "cpu", "--no-write", "--batches", "5", "--steps", "2",
                             "--reps", "1"])
  (row,) = record["rows"]
  assert row["batch"] == 5 and row["steps"] == 2 and record["settings"]["torch_device"] == "cpu"
  assert sorted(row["times_s"]) == sorted(n for group in bench_torch.ORDER for n in group)
  for name, times in row["times_s"].items():
    assert len(times) == 1 and 0 < times[0] < 60, name  # seconds for a 2-step run
  assert setups == [("mlp", 128, 5)]  # homax's arms train the published 784-128-10 MLP
  (worker,) = workers
  assert worker.hello["torch"].startswith("2.") and worker.hello["cuda"] is None
  assert worker.proc.returncode == 0  # it quit when asked
