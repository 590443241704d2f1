"""The helpers every benchmark script shares (``benchmarks/common.py``): where a record is
written, what it holds, the printed tables and the timer."""

import argparse
import json
import math

import numpy as np
import pytest

from benchmarks import common


def _args(quick=False, tag="", no_write=False):
  return argparse.Namespace(quick=quick, tag=tag, no_write=no_write)


@pytest.mark.parametrize("quick, partial, tag, kept", [
    (False, None, "", True),   # a full run (the default, as xla_flatten_repro writes it)
    (False, False, "", True),
    (False, True, "", False),  # a partial run without a tag: benchmarks/out/ only
    (False, True, "t", True),  # ... with a tag: kept under its own name
    (True, False, "", False),  # --quick: never kept
    (True, True, "t", False),
])
def test_only_full_or_tagged_partial_runs_reach_the_results(bench_dirs, capsys, quick, partial,
                                                            tag, kept):
  out, results = bench_dirs
  kwargs = {} if partial is None else {"partial": partial}
  info = common.machine_info()
  paths = common.write("demo", _args(quick, tag), {"rows": []}, info, **kwargs)
  name = common.output_name("demo", _args(quick, tag)) + ".json"
  assert paths == ([out / name, results / name] if kept else [out / name])
  assert (results / name).exists() == kept
  record = json.loads((out / name).read_text())
  assert (record["quick"], record["partial"]) == (quick, bool(partial))
  printed = capsys.readouterr().out
  assert "wrote " + ", ".join(str(p.relative_to(out.parent)) for p in paths) in printed
  assert ("not written to benchmarks/results/" in printed) == (not kept)


def test_no_write_writes_nothing(bench_dirs):
  assert common.write("demo", _args(no_write=True), {"rows": []}, common.machine_info()) == []
  assert not any(d.exists() and any(d.iterdir()) for d in bench_dirs)


def test_a_record_is_plain_json_with_non_finite_numbers_as_null(bench_dirs):
  record = {"rows": [{"us": np.float32(1.5), "nan": float("nan"), "n": np.int64(3),
                      "xs": np.array([1.0, np.inf]), 7: (np.float64(-2.25), "a")}]}
  common.write("demo", _args(), record, common.machine_info())
  out, _ = bench_dirs
  text = (out / (common.output_name("demo", _args()) + ".json")).read_text()
  assert "NaN" not in text and "Infinity" not in text  # strict JSON
  rows = json.loads(text)["rows"]
  assert rows == [{"us": 1.5, "nan": None, "n": 3, "xs": [1.0, None], "7": [-2.25, "a"]}]


def test_table_right_aligns_each_column_under_a_rule():
  rows = [{"a": "x", "b": 1.23456, "c": None}, {"a": "long name", "b": 10.0, "c": 7}]
  text = common.table(rows, [("a", "arm", ""), ("b", "µs", ".2f"), ("c", "count", "")])
  assert text.splitlines() == [
      "      arm     µs  count",
      "---------  -----  -----",
      "        x   1.23      -",
      "long name  10.00      7",
  ]


def test_timed_returns_the_seconds_the_call_took(monkeypatch):
  clock = iter([100.0, 102.5])
  monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))
  calls = []
  assert common.timed(lambda: calls.append(1)) == 2.5
  assert calls == [1]


def test_paired_statistics_are_medians_of_the_per_repetition_values():
  xs, ys = [2.0, 9.0, 3.0], [1.0, 3.0, 1.0]
  assert common.paired_ratio(xs, ys) == 3.0  # ratios 2, 3, 3
  assert common.paired_difference(xs, ys) == 2.0  # differences 1, 6, 2
  assert common.median(xs) == 3.0
  assert math.isclose(common.paired_ratio([1.0, 2.0], [2.0, 1.0]), 1.25)
