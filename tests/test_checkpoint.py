"""Checkpoints: orbax save/restore mid-training continues bit-identically.

Two levels: the optimizer (params and an optax chain's state with a
``HomogeneityState`` inside, through ``ocp.StandardCheckpointer``), and the
experiments CLI (``--checkpoint-every``), whose interrupted row resumes from
its last checkpoint and ends with exactly the row JSON of an uninterrupted run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from conftest import assert_trees_identical
import homax
from experiments import datasets, reproduce, report, train

ROW = "B-A-2"  # 2 epochs of 1 step: interrupt after epoch 1, resume epoch 2.
SEEDS = 3


# ---------------------------------------------------------------------------
# The optimizer.


def problem():
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  params = {"w": jax.random.normal(k1, (6, 5)) / 2.0, "b": jnp.zeros(5)}
  average = {"w": jax.random.normal(k2, (6, 5)) / 2.0, "b": jnp.full(5, 0.1)}
  x = jax.random.normal(k3, (32, 6))
  y = jax.random.normal(k4, (32, 5))
  loss = lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
  return params, average, loss


@pytest.mark.parametrize("make_tx", [
    # Part I with a separate Adam step; Part II with history and SGD ascent.
    lambda avg: optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2, initial_average=avg)),
    lambda avg: homax.paper_optimizer("COMPLETE", learning_rate=1e-2, homogeneity_learning_rate=5e-3,
                                      total_steps=20, lambda_type="linear", initial_average=avg),
], ids=["adam+homogeneity", "COMPLETE"])
def test_restored_state_continues_bit_identically(tmp_path, make_tx):
  params, average, loss = problem()
  tx = make_tx(average)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p_full, s_full = params, tx.init(params)
  for _ in range(20):
    p_full, s_full = step(p_full, s_full)

  p, s = params, tx.init(params)
  for _ in range(10):
    p, s = step(p, s)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", {"params": p, "opt_state": s})
  checkpointer.wait_until_finished()
  del p, s

  # A new process would know only the shapes: restore against abstract trees.
  fresh = tx.init(params)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": fresh})
  restored = checkpointer.restore(tmp_path / "ckpt", abstract)
  p, s = restored["params"], restored["opt_state"]
  assert jax.tree.structure(s) == jax.tree.structure(fresh)
  assert isinstance(homax.find_state(s), homax.HomogeneityState)
  assert int(homax.metrics(s)["count"]) == 10
  for _ in range(10):
    p, s = step(p, s)
  assert_trees_identical(p, p_full)
  assert_trees_identical(s, s_full)


# ---------------------------------------------------------------------------
# The experiments CLI.


class Interrupted(Exception):
  pass


def _no_plots(monkeypatch):
  # Plots are not what is tested here, and each costs a second.
  for name in ("plot_row", "plot_forest", "plot_beta_sweep"):
    monkeypatch.setattr(report, name, lambda *args, **kwargs: None)


# B-A-2: 1 step per epoch, interrupted after epoch 1. A-B-2: 2 steps per epoch
# (batch 64 of 90), interrupted after epoch 2, so that the per-step curves of
# two saved epochs must be cut back into their epochs on resume.
@pytest.mark.parametrize("row_id, crash_after", [("B-A-2", 1), ("A-B-2", 2)])
def test_cli_resumes_an_interrupted_row(tmp_path, monkeypatch, capsys, persistent_cache, row_id,
                                        crash_after):
  _no_plots(monkeypatch)
  row = {r.id: r for r in reproduce.table_rows("iris")}[row_id]
  assert row.epochs > crash_after
  data = datasets.load("iris")
  seeds = np.arange(SEEDS)
  common = dict(table="iris", data_name="iris", data=data, seeds=seeds)

  # The reference: one uninterrupted run, no checkpoints.
  reproduce.run_row(row, out_dir=tmp_path / "full", **common)
  full = report.load_json(tmp_path / "full" / "iris" / "rows" / f"{row_id}.json")

  # Interrupt after epoch `crash_after`: `progress` runs after the epoch's checkpoint.
  out = tmp_path / "resumed"
  epochs_done = []

  def crash(n):
    epochs_done.append(n)
    if len(epochs_done) == crash_after:
      raise Interrupted

  with pytest.raises(Interrupted):
    reproduce.run_row(row, out_dir=out, checkpoint_every=1, progress=crash, **common)
  ckpt_dir = out / "checkpoints" / "iris" / row_id
  assert report.load_json(ckpt_dir / "latest.json")["epoch"] == crash_after
  # Only the latest epoch is kept: each save removes the ones before it.
  assert sorted(p.name for p in ckpt_dir.glob("epoch-*")) == [f"epoch-{crash_after}"]
  assert (ckpt_dir / f"epoch-{crash_after}").is_dir()
  assert not (out / "iris" / "rows" / f"{row_id}.json").exists()

  # Rerun the same command through the CLI; spy on the resume it passes on.
  calls = []
  original = train.train_paired

  def spy(*args, **kwargs):
    calls.append(kwargs.get("resume"))
    return original(*args, **kwargs)

  monkeypatch.setattr(train, "train_paired", spy)
  argv = ["--table", "iris", "--seeds", str(SEEDS), "--out", str(out), "--rows", row_id,
          "--checkpoint-every", "1"]
  capsys.readouterr()
  assert reproduce.main(argv) == 0
  assert len(calls) == 1 and calls[0] is not None and calls[0][0] == crash_after
  # The progress bar (stderr) counts the resumed epochs as done: it ends full.
  out_text, err = capsys.readouterr()
  assert f"{row_id}: 100%" in err and f"| {row.epochs}/{row.epochs} [" in err, err
  assert f"{row_id}: homogeneity" in out_text

  resumed = report.load_json(out / "iris" / "rows" / f"{row_id}.json")
  assert resumed["config"] == full["config"]
  assert resumed["per_seed"] == full["per_seed"]  # exact: floats through JSON
  assert resumed["curves"] == full["curves"]
  drop = lambda s: {k: v for k, v in s.items() if k != "seconds"}
  assert drop(resumed["summary"]) == drop(full["summary"])
  # A finished row leaves no checkpoints behind.
  assert not ckpt_dir.exists()


def test_checkpoint_of_another_config_is_not_resumed(tmp_path, monkeypatch, persistent_cache):
  _no_plots(monkeypatch)
  row = {r.id: r for r in reproduce.table_rows("iris")}[ROW]
  data = datasets.load("iris")

  def crash(n):
    raise Interrupted

  with pytest.raises(Interrupted):
    reproduce.run_row(row, table="iris", data_name="iris", data=data, seeds=np.arange(SEEDS),
                      out_dir=tmp_path, checkpoint_every=1, progress=crash)
  # Other seeds: the checkpoint belongs to another run and must be ignored.
  resumes = _spy_on_resume(monkeypatch)
  seen = []
  reproduce.run_row(row, table="iris", data_name="iris", data=data, seeds=np.arange(1, SEEDS + 1),
                    out_dir=tmp_path, checkpoint_every=1, progress=seen.append)
  assert resumes == [None]  # trained from epoch 0, not from the other run's epoch 1
  assert seen == [1] * row.epochs  # every epoch trained, none skipped


def _spy_on_resume(monkeypatch) -> list:
  """Per ``train.train_paired`` call, the epoch of its ``resume`` argument (None: from the start)."""
  calls = []
  original = train.train_paired

  def spy(*args, **kwargs):
    resume = kwargs.get("resume")
    calls.append(None if resume is None else resume[0])
    return original(*args, **kwargs)

  monkeypatch.setattr(train, "train_paired", spy)
  return calls


def test_tables_sharing_a_row_id_keep_their_own_checkpoints(tmp_path, monkeypatch, persistent_cache):
  # iris and iris-exact both have row B-A-2: a run of one must neither resume
  # nor delete (nor clean the temp files of) the other's checkpoint.
  _no_plots(monkeypatch)
  row = {r.id: r for r in reproduce.table_rows("iris")}[ROW]
  assert ROW in {r.id for r in reproduce.table_rows("iris-exact")}

  def crash(n):
    raise Interrupted

  with pytest.raises(Interrupted):
    reproduce.run_row(row, table="iris", data_name="iris", data=datasets.load("iris"),
                      seeds=np.arange(SEEDS), out_dir=tmp_path, checkpoint_every=1, progress=crash)
  # Wherever the iris checkpoint is (found, not assumed, so this fails with the old layout too).
  (latest,) = (tmp_path / "checkpoints").rglob("latest.json")
  ckpt_dir = latest.parent
  stale = ckpt_dir / ".latest.json.abc.tmp"  # a temp file of the iris run, not iris-exact's
  stale.write_text("")
  files = sorted(p.relative_to(ckpt_dir) for p in ckpt_dir.rglob("*"))

  resumes = _spy_on_resume(monkeypatch)
  argv = ["--seeds", str(SEEDS), "--out", str(tmp_path), "--rows", ROW, "--checkpoint-every", "1",
          "--quiet"]
  assert reproduce.main(["--table", "iris-exact", *argv]) == 0
  assert resumes == [None]
  assert sorted(p.relative_to(ckpt_dir) for p in ckpt_dir.rglob("*")) == files
  assert report.load_json(latest)["config"]["table"] == "iris"
  # The iris run resumes its own checkpoint, and then removes it.
  assert reproduce.main(["--table", "iris", *argv]) == 0
  assert resumes == [None, 1]
  assert not (tmp_path / "checkpoints").exists()


def test_checkpoints_every_n_epochs_and_after_the_last(tmp_path, monkeypatch, persistent_cache):
  # --checkpoint-every 3 over A-B-2's 10 epochs saves after epochs 3, 6, 9 and 10.
  _no_plots(monkeypatch)
  saved = []

  class Recorder:  # stands in for orbax's Checkpointer: records each save
    def save(self, path, tree):
      saved.append(path.name)
      path.mkdir(parents=True)

    def close(self):
      pass

  monkeypatch.setattr(reproduce, "_checkpointer", Recorder)
  row = {r.id: r for r in reproduce.table_rows("iris")}["A-B-2"]
  assert row.epochs == 10
  reproduce.run_row(row, table="iris", data_name="iris", data=datasets.load("iris"),
                    seeds=np.arange(1), out_dir=tmp_path, checkpoint_every=3)
  assert saved == ["epoch-3", "epoch-6", "epoch-9", "epoch-10"]
  assert not (tmp_path / "checkpoints").exists()  # removed once the row is written
