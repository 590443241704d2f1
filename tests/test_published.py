"""experiments.published: the article's runs as rows, checked against their protocol."""

import csv
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import homax
from experiments import published


@pytest.fixture(scope="module")
def rows():
  return published.load()


def test_every_row_of_the_csv_loads_and_passes_its_check(rows):
  with published.CSV_PATH.open(newline="") as f:
    records = list(csv.DictReader(f))
  assert len(rows) == len(records) > 0
  assert [(r.dataset, r.variant, r.sample) for r in rows] == [
      (rec["dataset"], rec["variant"], rec["sample"]) for rec in records]
  for row in rows:
    row.check()
  ids = [(row.dataset, row.id) for row in rows]
  assert len(set(ids)) == len(ids)  # within a dataset, ids name row and plot files


def test_ids_and_labels(rows):
  by_id = {row.id: row for row in rows}
  assert by_id["A-B-2"].label == "A-B #2"
  assert by_id["COMPLETE-7"].label == "COMPLETE #7 (fixed 0.9)"
  assert by_id["COMPLETE-15"].label == "COMPLETE #15 (linear)"
  assert by_id["HYBRID-beta1.01"].label == "HYBRID β=1.01"
  hybrid = by_id["HYBRID-beta1.01"]
  assert hybrid.variant == "HYBRID" and hybrid.beta == 1.01 and hybrid.lambda_type is None
  assert by_id["COMPLETE-7"].lambda_value == 0.9 and by_id["A-B-2"].lambda_value is None


def test_the_check_catches_a_typo_in_T_or_eta_h(rows):
  row = next(r for r in rows if r.dataset == "iris" and r.variant == "B-A")
  with pytest.raises(ValueError, match=f"{row.id}: T = {row.total_iterations} from the protocol"):
    dataclasses.replace(row, total_iterations=row.total_iterations + 1).check()
  with pytest.raises(ValueError, match=f"{row.id}: η_h = "):
    dataclasses.replace(row, homogeneity_learning_rate=row.homogeneity_learning_rate * 1.001).check()
  # η_h is only checked where the variant computes it: A-B's is the CSV's choice.
  a_b = next(r for r in rows if r.variant == "A-B")
  dataclasses.replace(a_b, homogeneity_learning_rate=a_b.homogeneity_learning_rate * 2).check()


def test_each_row_builds_its_optimizer(rows):
  # One step of every row's optimizer, finite; the fixed-λ COMPLETE rows run at their λ.
  params = {"w": jnp.linspace(-1.0, 1.0, 6)}
  grads = {"w": jnp.linspace(0.5, -0.2, 6)}
  for row in rows:
    tx = row.optimizer(initial_average={"w": jnp.zeros(6)})
    updates, state = tx.update(grads, tx.init(params), params)
    assert np.all(np.isfinite(updates["w"])), row.id
    lam = float(homax.metrics(state)["lambda"])
    if row.lambda_type == "fixed":
      assert lam == pytest.approx(row.lambda_value), row.id


def test_an_unreadable_row_names_the_file_and_its_line(tmp_path):
  text = published.CSV_PATH.read_text().splitlines()
  bad = tmp_path / "published.csv"
  bad.write_text("\n".join([text[0], text[1], text[2].replace(",8,", ",eight,", 1)]) + "\n")
  with pytest.raises(ValueError, match=f"{bad}:3: cannot read published row"):
    published.load(bad)
  missing = tmp_path / "missing_column.csv"
  missing.write_text("\n".join([text[0].replace("hidden_size", "hidden"), text[1]]) + "\n")
  with pytest.raises(ValueError, match=f"{missing}:2: cannot read published row.*hidden_size"):
    published.load(missing)
