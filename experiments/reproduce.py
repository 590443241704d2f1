"""Re-runs the article's published tables with paired, multi-seed statistics.

    python -m experiments.reproduce                      # Iris, 8 rows, 30 seeds
    python -m experiments.reproduce --table mnist --data fashion_mnist --seeds 5 \\
        --rows A-A-3,A-B-5,B-B-1,COMPLETE-2
    python -m experiments.reproduce --table iris-exact   # ablation: exact derivative

Each row trains, for every seed, a homogeneity model and a plain-Adam model
from the same initial weights on the same batches (``experiments.train``), and
reports the paired difference of their final test accuracies against the
published single runs. Outputs in ``--out`` (default ``results/``):
``<name>.csv``, ``<name>.md``, ``<name>/forest.png``, ``<name>/<row>.png`` (loss,
accuracy and homogeneity curves), ``<name>/beta_sweep.png`` for HYBRID rows, and
``<name>/rows/<row>.json`` (one per finished row). Every file is written
atomically; a rerun of the same command skips finished rows and continues an
interrupted row from its last checkpoint (``--checkpoint-every``), kept in
``checkpoints/<name>/<row>/`` until the row is finished (per ``<name>``:
several tables share row ids).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import optax

import homax
from experiments import datasets, models, published, report, train

# table name -> (published dataset, default data, rule override, direction override, title)
TABLES = {
    "iris": ("iris", "iris", None, None, "Iris: published rows, paired re-run"),
    "iris-exact": ("iris", "iris", "exact", None,
                   "Iris ablation: the exact derivative instead of the paper's Table 1"),
    "iris-ascend": ("iris", "iris", None, "flip",
                    "Iris ablation: the opposite direction (Part I ascends instead of descending)"),
    "mnist": ("mnist", "mnist", None, None, "MNIST protocol: published rows, paired re-run"),
}

MAX_STEP_POINTS = 2000


def _flip(variant: str) -> str:
  return "ascend" if homax.VARIANTS[variant].part == 1 else "descend"


def table_rows(table: str, only: list[str] | None = None) -> list[published.Row]:
  """The rows of ``table`` in its order, or those of ``only`` in that order.

  Raises:
    ValueError: an id of ``only`` is not a row of the table, or a row of the published
      table contradicts the protocol (:meth:`published.Row.check`; the message names the file).
  """
  dataset = TABLES[table][0]
  rows = [r for r in published.load() if r.dataset == dataset]
  for r in rows:
    try:
      r.check()
    except ValueError as e:
      raise ValueError(f"{published.CSV_PATH}: {e}") from None
  if only is not None:
    ids = {r.id: r for r in rows}
    unknown = [i for i in only if i not in ids]
    if unknown:
      raise ValueError(f"--rows: unknown row id(s) {unknown}; table {table!r} has {sorted(ids)}")
    rows = [ids[i] for i in only]
  return rows


def parse_row_ids(text: str) -> list[str]:
  """``--rows``: comma-separated ids, blanks around them ignored; ValueError for an
  empty id or one given twice."""
  ids = [i.strip() for i in text.split(",")]
  if any(not i for i in ids):
    raise ValueError(f"--rows: empty row id in {text!r} (give comma-separated ids, e.g. B-A-1,B-A-2)")
  twice = sorted({i for i in ids if ids.count(i) > 1})
  if twice:
    raise ValueError(f"--rows: a row id is given twice: {', '.join(twice)}")
  return ids


def checkpoint_dir(out_dir: pathlib.Path, name: str, row_id: str) -> pathlib.Path:
  """Where a row's checkpoints live: per output name (:func:`output_name`), since
  tables share row ids."""
  return out_dir / "checkpoints" / name / row_id


def move_aside(path: pathlib.Path, suffix: str = ".unreadable") -> pathlib.Path:
  """Renames ``path`` to ``<path><suffix>``, or ``<path><suffix>.N`` with the first
  free N, never over an earlier file; returns the new path."""
  aside = path.with_name(path.name + suffix)
  n = 0
  while aside.exists() or aside.is_symlink():
    n += 1
    aside = path.with_name(f"{path.name}{suffix}.{n}")
  path.rename(aside)
  return aside


def check_data_dir(data_dir) -> str | None:
  """None if ``--data-dir`` was not given or is a directory, else why not."""
  if data_dir is None:
    return None
  path = pathlib.Path(data_dir).expanduser()
  if not path.exists():
    return f"--data-dir {data_dir}: no such directory"
  if not path.is_dir():
    return f"--data-dir {data_dir}: not a directory"
  return None


def output_name(table: str, data: str) -> str:
  return table if data == TABLES[table][1] else f"{table}--{data}"


def _stride(x: np.ndarray) -> tuple[np.ndarray, int]:
  step = max(1, int(np.ceil(x.shape[-1] / MAX_STEP_POINTS)))
  return x[..., ::step], step


def _checkpointer():
  # Synchronous: every save is waited for anyway, and after a failed save the
  # asynchronous StandardCheckpointer leaves threads that keep the process from
  # exiting (orbax-checkpoint 0.12.8).
  import orbax.checkpoint as ocp
  return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def run_row(row, *, table, data_name, data, seeds, out_dir, checkpoint_every=0, progress=None):
  """Trains one row for all seeds and writes its JSON and plot. Returns the summary."""
  _, _, rule, direction, _ = TABLES[table]
  if direction == "flip":
    direction = _flip(row.variant)
  model = models.mlp(int(np.prod(data.x_train.shape[1:])), row.hidden_size, data.num_classes)
  trainer = train.PairedTrainer(
      model=model,
      make_homogeneity_tx=lambda avg: row.optimizer(avg, rule=rule, direction=direction),
      adam_tx=optax.adam(row.learning_rate, b1=0.9, b2=0.999, eps=1e-8),
      batch_size=row.batch_size,
  )
  config = dict(table=table, row=row.id, data=data_name, seeds=[int(s) for s in seeds],
                rule=rule, direction=direction, epochs=row.epochs, batch_size=row.batch_size,
                homax=homax.__version__)
  ckpt_dir = checkpoint_dir(out_dir, output_name(table, data_name), row.id).absolute()
  on_epoch_end, resume, checkpointer = None, None, None
  if checkpoint_every > 0:
    on_epoch_end, resume, checkpointer = _checkpoint_hooks(
        trainer, data, seeds, config, ckpt_dir, checkpoint_every, row.epochs)
    if resume is not None and progress is not None:
      progress(resume[0])
  try:
    result = train.train_paired(trainer, data, epochs=row.epochs, seeds=seeds,
                                on_epoch_end=on_epoch_end, resume=resume, progress=progress)
  finally:
    if checkpointer is not None:
      checkpointer.close()  # orbax's threads and resources, also when training fails
  stats = report.paired_stats(result.test_acc_h, result.test_acc_a,
                              test_size=int(data.x_test.shape[0]))
  published_diff = row.acc_homogeneity - row.acc_adam
  summary = dict(
      dataset=row.dataset, data=data_name, variant=row.variant, sample=row.sample,
      row_id=row.id, label=row.label, beta=row.beta, **stats,
      published_acc_homogeneity=row.acc_homogeneity, published_acc_adam=row.acc_adam,
      published_diff=published_diff,
      published_diff_in_ci=bool(stats["diff_ci95_low"] <= published_diff <= stats["diff_ci95_high"]),
      seconds=round(result.seconds, 2),
  )
  hist = result.history
  curves = {k: v.tolist() for k, v in hist.items() if k not in ("similarity", "homogeneity", "lam")}
  for k in ("similarity", "homogeneity", "lam"):
    strided, step = _stride(hist[k])
    curves[k] = strided.tolist()
    curves["step_stride"] = step
  record = dict(config=config, summary=summary,
                per_seed=dict(acc_homogeneity=result.test_acc_h.tolist(), acc_adam=result.test_acc_a.tolist(),
                              loss_homogeneity=result.test_loss_h.tolist(), loss_adam=result.test_loss_a.tolist()),
                curves=curves)
  name = output_name(table, data_name)
  # The row's numbers first: a plotting failure must not lose the trained row.
  report.save_json(out_dir / name / "rows" / f"{row.id}.json", record)
  report.plot_row(out_dir / name / f"{row.id}.png", f"{name}: {row.label}", curves)
  if ckpt_dir.exists():
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    for parent in (ckpt_dir.parent, ckpt_dir.parent.parent):  # checkpoints/<name>, checkpoints
      try:
        parent.rmdir()  # only if empty: other rows' checkpoints stay
      except OSError:
        break
  return summary


def _checkpoint_hooks(trainer, data, seeds, config, ckpt_dir, every, epochs):
  """orbax checkpoints of the carry and history every ``every`` epochs."""
  import json

  checkpointer = _checkpointer()
  failed = []

  def on_epoch_end(done, carry, history):
    if failed or (done % every and done != epochs):
      return
    tmp = ckpt_dir / f"epoch-{done}"
    hist = {k: np.stack(v, axis=1) if v[0].ndim == 1 else np.concatenate(v, axis=1)
            for k, v in dataclasses.asdict(history).items() if v}
    try:
      if tmp.exists():
        shutil.rmtree(tmp)
      checkpointer.save(tmp, dict(carry=carry, history=hist))  # synchronous
      report.atomic_write_text(ckpt_dir / "latest.json", json.dumps(dict(config=config, epoch=done)))
    except OSError as e:
      # Checkpoints are optional: a full disk or a file in the way must not lose
      # the row (orbax raises the OSError of the failed write).
      failed.append(e)
      print(f"warning: checkpoint {tmp} could not be saved ({type(e).__name__}:"
            f" {str(e).splitlines()[0] if str(e) else ''}); row {config['row']} goes on without"
            " checkpoints", file=sys.stderr)
      return
    for old in ckpt_dir.glob("epoch-*"):
      if old != tmp:
        shutil.rmtree(old, ignore_errors=True)

  resume = None
  try:
    resume = _restore(trainer, seeds, config, ckpt_dir, checkpointer)
  except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: start the row again
    print(f"warning: checkpoint {ckpt_dir} is unreadable ({type(e).__name__}:"
          f" {str(e).splitlines()[0] if str(e) else ''}); training row {config['row']} from epoch 0",
          file=sys.stderr)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
  return on_epoch_end, resume, checkpointer


def _restore(trainer, seeds, config, ckpt_dir, checkpointer):
  """(epoch, carry, history) from the checkpoint of this config, or None."""
  resume = None
  latest = ckpt_dir / "latest.json"
  if latest.exists():
    meta = report.load_json(latest)
    if meta["config"] == config and (ckpt_dir / f"epoch-{meta['epoch']}").exists():
      import jax
      carry, _ = trainer.init(np.asarray(seeds))
      path = ckpt_dir / f"epoch-{meta['epoch']}"
      # Restore against abstract trees: without a target orbax returns the
      # NamedTuples (Carry, optimizer states) as dicts with sorted keys, whose
      # leaf order is not the carry's (params_a before params_h, ...).
      saved = checkpointer.metadata(path).item_metadata
      host = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      abstract = dict(
          carry=jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), carry),
          history={k: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=host)
                   for k, m in saved["history"].items()},
      )
      restored = checkpointer.restore(path, abstract)
      carry = restored["carry"]
      hist = train.History()
      for k, v in restored["history"].items():
        v = np.asarray(v)
        if k in ("similarity", "homogeneity", "lam"):
          steps = v.shape[1] // meta["epoch"]
          chunks = [v[:, i * steps:(i + 1) * steps] for i in range(meta["epoch"])]
        else:
          chunks = [v[:, i] for i in range(meta["epoch"])]
        getattr(hist, k).extend(chunks)
      resume = (meta["epoch"], carry, hist)
  return resume


def write_table(table: str, data_name: str, out_dir: pathlib.Path) -> list[dict]:
  """(Re)writes ``<name>.csv``, ``<name>.md`` and the summary plots from every finished row.

  Every row of the table with a row file in ``out_dir`` is included, whichever
  run (``--rows`` subset) finished it, in the table's order.
  """
  name = output_name(table, data_name)
  records, first_seeds = [], {}
  for row in table_rows(table):
    path = out_dir / name / "rows" / f"{row.id}.json"
    if path.exists():
      try:
        record = _load_row(path)
      except ValueError as e:
        print(f"warning: {e}; row {row.id} left out of the table", file=sys.stderr)
        continue
      records.append(record["summary"])
      first_seeds[row.id] = record["config"]["seeds"][0]
  if not records:
    return records
  report.write_csv(out_dir / f"{name}.csv", records)
  title = TABLES[table][4] if name == table else f"{name}: {TABLES[table][4]}"
  notes = []
  if data_name != TABLES[table][1]:
    notes.append(f"**Stand-in data:** these rows ran on `{data_name}` with the {TABLES[table][0]}"
                 f" protocol; the published numbers are {TABLES[table][0]} results.")
  all_ids = [r.id for r in table_rows(table)]
  for first, seeds in sorted({(first_seeds[r["row_id"]], r["seeds"]) for r in records}):
    done_ids = [r["row_id"] for r in records
                if r["seeds"] == seeds and first_seeds[r["row_id"]] == first]
    rows_arg = "" if done_ids == all_ids else " --rows " + ",".join(done_ids)
    notes.append(f"Command: `python -m experiments.reproduce --table {table}"
                 f"{'' if data_name == TABLES[table][1] else ' --data ' + data_name}"
                 f" --seeds {seeds}{f' --first-seed {first}' if first else ''}{rows_arg}`")
  report.atomic_write_text(out_dir / f"{name}.md", report.markdown_table(records, title, notes))
  report.plot_forest(out_dir / name / "forest.png", records, title)
  hybrid = [r for r in records if r["variant"] == "HYBRID"]
  if len(hybrid) > 1:
    report.plot_beta_sweep(out_dir / name / "beta_sweep.png", hybrid, f"{name}: HYBRID β sweep")
  return records


def _remove_stale_temp_files(out_dir: pathlib.Path, name: str, rows) -> None:
  """Deletes the temp files of writes that a killed run left unfinished.

  ``report.atomic_write_bytes`` writes ``.<file>.<random>.tmp`` beside its
  target and renames it; a run killed between the two leaves the temp file,
  which no later rename would ever claim. (Two runs of one table into one
  ``--out`` at the same time are not supported anyway: both would train the
  same rows.)
  """
  stale = [*out_dir.glob(f".{name}.*.tmp"), *(out_dir / name).rglob(".*.tmp")]
  for row in rows:
    stale += checkpoint_dir(out_dir, name, row.id).glob(".*.tmp")
  for path in stale:
    path.unlink(missing_ok=True)


def _load_row(path: pathlib.Path) -> dict:
  """A finished row's record, or a ValueError naming the file."""
  try:
    record = report.load_json(path)
    config, summary = record["config"], record["summary"]
    if not (isinstance(config, dict) and isinstance(summary, dict) and config["seeds"]):
      raise TypeError("config and summary must be objects, with seeds")
    missing = [k for k in (*report.COLUMNS, "label", "beta") if k not in summary]
    if missing:
      raise KeyError(f"summary lacks {', '.join(missing)}")
  except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
    raise ValueError(f"row file {path} is unreadable ({type(e).__name__}: {e})") from None
  return record


def _row_status(path: pathlib.Path, seeds, data_name, table) -> str:
  """"missing", "done" (this run's config), "other" (another run's) or "unreadable"."""
  if not path.exists():
    return "missing"
  try:
    cfg = _load_row(path)["config"]
  except ValueError:
    return "unreadable"
  same = (cfg.get("seeds") == [int(s) for s in seeds] and cfg.get("data") == data_name
          and cfg.get("table") == table)
  return "done" if same else "other"


def check_out(out: pathlib.Path) -> str | None:
  """None if ``--out`` is (or can be made) a writable directory, else why not."""
  try:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
      pass
  except OSError as e:
    return f"--out {out}: {e.strerror or e}"
  return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--table", choices=sorted(TABLES), default="iris")
  parser.add_argument("--seeds", type=int, default=30, help="number of paired seeds (default 30)")
  parser.add_argument("--first-seed", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
  parser.add_argument("--data", default=None,
                      help="dataset to run the table's protocol on (e.g. fashion_mnist for the mnist table)")
  parser.add_argument("--data-dir", default=None, help="directory with the dataset's files (IDX or tfds)")
  parser.add_argument("--rows", default=None, help="comma-separated row ids (default: all rows of the table)")
  parser.add_argument("--checkpoint-every", type=int, default=0,
                      help="save an orbax checkpoint every N epochs so an interrupted row resumes (0: off)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error("--seeds must be >= 1")
  if not 0 <= args.first_seed <= 2**32 - args.seeds:
    # Seeds are uint32 PRNG keys: outside this range they would wrap around.
    parser.error(f"--first-seed must be in [0, 2**32 - --seeds], got {args.first_seed}")
  if args.checkpoint_every < 0:
    parser.error("--checkpoint-every must be >= 0 (0: no checkpoints)")
  problem = check_data_dir(args.data_dir)
  if problem:
    parser.error(problem)
  try:
    row_ids = None if args.rows is None else parse_row_ids(args.rows)
    rows = table_rows(args.table, row_ids)
  except ValueError as e:
    parser.error(str(e))

  data_name = args.data or TABLES[args.table][1]
  seeds = np.arange(args.first_seed, args.first_seed + args.seeds)
  name = output_name(args.table, data_name)
  problem = check_out(args.out)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  try:
    data = datasets.load(data_name, data_dir=args.data_dir)
  except datasets.DatasetUnavailable as e:
    hint = " Or run the same protocol on Fashion-MNIST: --data fashion_mnist." if data_name == "mnist" else ""
    print(f"error: {e}{hint}", file=sys.stderr)
    return 2
  except (ValueError, OSError) as e:  # unknown name, damaged file (the message names it)
    print(f"error: --data {data_name}: {e}", file=sys.stderr)
    return 2
  n_train, protocol_n = int(data.x_train.shape[0]), published.TRAIN_SIZE[TABLES[args.table][0]]
  if n_train != protocol_n:
    # Each row's T = ⌈n/b⌉·epochs (λ schedules, B-variants' η_h) is the published one.
    print(f"error: --data {data_name} has {n_train} training samples; the {args.table} rows'"
          f" published T (hence λ and the B-variants' η_h) assume {protocol_n}", file=sys.stderr)
    return 2
  # Every folder the run writes into, before any training (and once the data is
  # known, so that a bad --data leaves none behind): a file in the way, e.g.
  # <out>/<name>, would otherwise fail the first row after it trained.
  folders = [args.out / name / "rows"]
  if args.checkpoint_every:
    folders.append(args.out / "checkpoints" / name)
  for folder in folders:
    problem = check_out(folder)
    if problem:
      print(f"error: {problem}", file=sys.stderr)
      return 2
  stand_in = data_name != TABLES[args.table][1]
  print(f"table {args.table}: {len(rows)} rows × {args.seeds} paired seeds on {data_name}"
        + (f" (STAND-IN for {TABLES[args.table][0]}: published numbers are {TABLES[args.table][0]})" if stand_in else "")
        + f" → {args.out / name}.csv", flush=True)

  _remove_stale_temp_files(args.out, name, rows)
  row_path = lambda r: args.out / name / "rows" / f"{r.id}.json"  # noqa: E731
  status = {r.id: _row_status(row_path(r), seeds, data_name, args.table) for r in rows}
  other = [str(row_path(r)) for r in rows if status[r.id] == "other"]
  if other:
    # Never overwrite a finished row of another run (other seeds, data or table).
    print(f"error: {', '.join(other)} hold{'s' if len(other) == 1 else ''} finished rows of a run"
          f" with other settings (seeds, --data or --table); rerun with another --out, or move"
          f" {'it' if len(other) == 1 else 'them'} away first", file=sys.stderr)
    return 2
  for r in rows:
    if status[r.id] == "unreadable":
      aside = move_aside(row_path(r))
      print(f"warning: row file {row_path(r)} is unreadable; moved to {aside.name}, training"
            f" row {r.id} again", file=sys.stderr)
  todo = [r for r in rows if status[r.id] != "done"]
  for r in rows:
    if r not in todo:
      print(f"  {r.id}: already done, skipped")
  bar = None
  if not args.quiet and todo:
    from tqdm import tqdm
    bar = tqdm(total=sum(r.epochs for r in todo), unit="epoch", file=sys.stderr)
  t0 = time.perf_counter()
  for row in todo:
    if bar is not None:
      bar.set_description(row.id)
    try:
      s = run_row(row, table=args.table, data_name=data_name, data=data, seeds=seeds, out_dir=args.out,
                  checkpoint_every=args.checkpoint_every, progress=bar.update if bar else None)
    except KeyboardInterrupt:
      if bar is not None:
        bar.close()
      resume = (" resumes from its last checkpoint" if args.checkpoint_every
                else " starts again (--checkpoint-every N would let it resume)")
      print(f"interrupted during row {row.id}: finished rows are in {args.out / name}/rows/;"
            f" rerun the same command to go on (row {row.id}{resume})", file=sys.stderr)
      return 130
    write_table(args.table, data_name, args.out)
    msg = (f"  {row.id:>16}: homogeneity {s['acc_homogeneity_mean']:6.2f}  Adam {s['acc_adam_mean']:6.2f}"
           f"  diff {s['diff_mean']:+6.2f} [{s['diff_ci95_low']:+.2f}, {s['diff_ci95_high']:+.2f}]"
           f"  wins {s['wins']}/{s['seeds']}   published {s['published_acc_homogeneity']:.2f} vs"
           f" {s['published_acc_adam']:.2f} ({s['published_diff']:+.2f})")
    (bar.write if bar else print)(msg)
  if bar is not None:
    bar.close()
  records = write_table(args.table, data_name, args.out)
  print(f"done in {time.perf_counter() - t0:.1f} s: {len(records)} rows in {args.out / name}.csv,"
        f" {args.out / name}.md and plots under {args.out / name}/")
  return 0


if __name__ == "__main__":
  sys.exit(main())
