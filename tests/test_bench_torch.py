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
