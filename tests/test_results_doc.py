"""The stored logs and records that benchmarks/RESULTS.md and README.md cite exist.

Every figure on those pages names the run it comes from: a JSON record in
``benchmarks/results/`` or a printed log in ``benchmarks/results/logs/``. A
page that cites a file the repository lacks cannot be checked, so each
citation must resolve: a full name exactly; ``…T0138_name.log`` (the date left
out) as the end of a name; ``2026-11-27T2330_…`` as the start of one; a ``*``
as a glob.
"""

import fnmatch
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
LOGS = os.path.join(RESULTS, "logs")
PAGES = ("benchmarks/RESULTS.md", "README.md")

# A cited file: an optional folder, an optional "…" (date left out), then the
# name, with "*" globs. Only names without a folder, or in benchmarks/results,
# are stored records or logs; others ($OUT/…, benchmarks/out/…) are outputs.
_NAME = re.compile(r"((?:[\w$<>.\-]+/)*…?[\w*<>.\-]+\.(?:log|tgz|json))\b")
_STORED = ("", "benchmarks/results/", "benchmarks/results/logs/")
# A cited stamp whose name is left out: "2026-11-27T2330_…".
_STAMP = re.compile(r"(20\d\d-\d\d-\d\dT\d{4}_)…")


def citations(text: str) -> tuple[set[str], set[str]]:
  """``(names, stamps)`` cited in ``text``: file names (with ``…``/``*``) and bare stamps."""
  names = set()
  for m in _NAME.findall(text):
    folder, name = m[:m.rfind("/") + 1], m[m.rfind("/") + 1:]
    if folder in _STORED and not set("<>") & set(name) and not name.lstrip("…").startswith("."):
      names.add(name)
  return names, set(_STAMP.findall(text))


def resolves(name: str, files: list[str]) -> bool:
  if name.startswith("…"):
    return any(fnmatch.fnmatch(f, "*" + name[1:]) for f in files)
  return any(fnmatch.fnmatch(f, name) for f in files)


def test_citations_are_parsed():
  names, stamps = citations(
      "log `2026-11-28T0752_a_b.log`, `…T0138_x_1core.log`, `seeds_cpu_s8_*.json`,"
      " `2026-11-27T2330_…`, `benchmarks/results/*_cpu*.json`; not `$OUT/plan.tgz`,"
      " `benchmarks/out/<name>_<platform>.json` or a `.progress.json` suffix")
  assert names == {"2026-11-28T0752_a_b.log", "…T0138_x_1core.log", "seeds_cpu_s8_*.json",
                   "*_cpu*.json"}
  assert stamps == {"2026-11-27T2330_"}
  files = ["2026-11-28T0138_x_1core.log", "seeds_cpu_s8_iris.json"]
  assert resolves("…T0138_x_1core.log", files)
  assert resolves("seeds_cpu_s8_*.json", files)
  assert not resolves("…T0139_x_1core.log", files)
  assert not resolves("2026-11-28T0752_a_b.log", files)


@pytest.mark.parametrize("page", PAGES)
def test_every_cited_log_and_record_exists(page):
  text = open(os.path.join(ROOT, page), encoding="utf-8").read()
  logs = sorted(os.listdir(LOGS))
  records = sorted(f for f in os.listdir(RESULTS) if f.endswith(".json"))
  names, stamps = citations(text)
  missing = []
  for name in sorted(names):
    pool = records if name.endswith(".json") else logs
    if not resolves(name, pool):
      missing.append(name)
  missing += [s + "…" for s in sorted(stamps) if not any(f.startswith(s) for f in logs)]
  assert not missing, f"{page} cites files that benchmarks/results does not hold: {missing}"
