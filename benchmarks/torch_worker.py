"""Times the published (torch) loops in a process of their own; used by bench_torch.

torch runs here, away from jax: in one process, XLA's worker threads (which
spin for a while after each jax call) and torch's OpenMP threads compete for
the same cores, and on a small machine torch's per-op barriers then stall —
a cost of sharing the process, not of either library.

Protocol: one JSON object per line on stdin, ``{"batch": b, "arm": name,
"steps": s}``, answered by one line ``{"seconds": t}`` on stdout; ``{"quit":
true}`` ends. ``arm`` is ``adam``, ``homog``, ``adam_nomon`` or ``homog_nomon``
(``nomon``: without the seed's per-step monitoring). This module imports
torch and numpy only.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
POOL = 16  # as bench_overhead.POOL


def load_reference():
  """Imports ``tests/torch_reference.py`` (the tests directory is not a package)."""
  spec = importlib.util.spec_from_file_location(
      "torch_reference", ROOT / "tests" / "torch_reference.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class Arms:
  """The reference's loops on synthetic batches, one setup per batch size.

  A thin wrapper: each timed call builds a fresh model with the same initial
  weights and calls ``run_homogeneity`` (variant A-B) or ``run_adam`` of the
  reference on ``steps`` batches; the time is of that call alone.
  """

  def __init__(self, device: str, learning_rate: float, homogeneity_learning_rate: float):
    import torch
    self.torch = torch
    self.ref = load_reference()
    self.device = device
    self.lr, self.lr_h = learning_rate, homogeneity_learning_rate
    self.setups = {}

  def setup(self, batch: int, steps: int):
    key = (batch, steps)
    if key not in self.setups:
      torch, ref = self.torch, self.ref
      rng = np.random.default_rng(0)
      pool = [(torch.tensor(rng.standard_normal((batch, 784), dtype=np.float32)),
               torch.tensor(rng.integers(0, 10, batch), dtype=torch.long))
              for _ in range(POOL)]
      batches = [pool[k % POOL] for k in range(steps)]
      if self.device != "cpu":
        batches = [(x.to(self.device), y.to(self.device)) for x, y in batches]
      torch.manual_seed(0)
      init_state = ref.Net(784, 128, 10).state_dict()
      torch.manual_seed(1)
      average = ref.flat_parameters(ref.Net(784, 128, 10)).to(self.device)
      self.setups[key] = (batches, init_state, average)
    return self.setups[key]

  def sync(self):
    if self.device == "cuda":
      self.torch.cuda.synchronize()

  def time(self, batch: int, arm: str, steps: int) -> float:
    batches, init_state, average = self.setup(batch, steps)
    net = self.ref.Net(784, 128, 10)
    net.load_state_dict(init_state)
    net = net.to(self.device)
    bookkeeping = not arm.endswith("_nomon")
    self.sync()
    t0 = time.perf_counter()
    if arm.startswith("homog"):
      self.ref.run_homogeneity(
          net, batches, variant="A-B", learning_rate=self.lr,
          homogeneity_learning_rate=self.lr_h, total_steps=steps,
          average=average, record=False, bookkeeping=bookkeeping)
    elif arm.startswith("adam"):
      self.ref.run_adam(net, batches, self.lr, record=False, bookkeeping=bookkeeping)
    else:
      raise ValueError(arm)
    self.sync()
    return time.perf_counter() - t0


def serve(device: str, learning_rate: float, homogeneity_learning_rate: float) -> None:
  import torch
  arms = Arms(device, learning_rate, homogeneity_learning_rate)
  hello = {"threads": torch.get_num_threads(), "torch": torch.__version__,
           "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None}
  print(json.dumps(hello), flush=True)
  for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("quit"):
      break
    seconds = arms.time(int(msg["batch"]), msg["arm"], int(msg["steps"]))
    print(json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
  serve(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
