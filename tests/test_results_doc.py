"""The stored logs and records that benchmarks/RESULTS.md and README.md cite
exist, and the README's benchmark figures are RESULTS.md's.

Every figure on RESULTS.md names the run it comes from: a JSON record in
``benchmarks/results/`` or a printed log in ``benchmarks/results/logs/``. A
page that cites a file the repository lacks cannot be checked, so each
citation must resolve: a full name exactly; ``…T0138_name.log`` (the date left
out) as the end of a name; ``2026-11-27T2330_…`` as the start of one; a ``*``
as a glob. The README cites the log of its quick start's timing; its
"Benchmarks" section quotes RESULTS.md (citing no file of its own), so each
of its figures must be one of RESULTS.md's, as written there or rounded.
"""

import fnmatch
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
LOGS = os.path.join(RESULTS, "logs")
PAGE = "benchmarks/RESULTS.md"
# Each page, and the fewest citations it has (fewer means the parsing broke).
PAGES = {PAGE: 20, "README.md": 1}

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
  assert len(names) >= PAGES[page], f"{page}'s citations were not found: has their form changed?"
  missing = []
  for name in sorted(names):
    pool = records if name.endswith(".json") else logs
    if not resolves(name, pool):
      missing.append(name)
  missing += [s + "…" for s in sorted(stamps) if not any(f.startswith(s) for f in logs)]
  assert not missing, f"{page} cites files that benchmarks/results does not hold: {missing}"


# A figure: digits with an optional thousands comma and decimals, not part of a
# longer number, a word or a version.
_FIGURE = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d|,\d{3})")


def figures(text: str) -> set[str]:
  """The figures in ``text`` worth checking: with decimals, or of three digits or more."""
  return {f for f in _FIGURE.findall(text) if "." in f or len(f.replace(",", "")) >= 3}


def quoted_from(figure: str, source: set[str]) -> bool:
  """``figure`` is in ``source`` as written, or is one of its figures rounded."""
  if figure in source:
    return True
  places = len(figure.partition(".")[2])
  value = float(figure.replace(",", ""))
  return any(len(f.partition(".")[2]) > places
             and round(float(f.replace(",", "")), places) == value for f in source)


def test_figures_are_found_and_matched():
  assert figures("1.43 / 1.41, 1,166 µs, 20 %, batch 128, jax 0.10.2, 3.6×") == {
      "1.43", "1.41", "1,166", "128", "3.6"}
  source = figures("20.83 / 20.39 and 1.166")
  assert quoted_from("20.8", source) and quoted_from("1.17", source)
  assert not quoted_from("20.9", source) and not quoted_from("1.16", source)


def test_readme_benchmark_figures_are_from_results_page():
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  start = readme.index("\n## Benchmarks")
  section = readme[start:readme.index("\n## ", start + 1)]
  source = figures(open(os.path.join(ROOT, PAGE), encoding="utf-8").read())
  quoted = figures(section)
  assert len(quoted) > 30, "the README's Benchmarks section has lost its figures?"
  stray = sorted(f for f in quoted if not quoted_from(f, source))
  assert not stray, f"README.md's Benchmarks section has figures RESULTS.md lacks: {stray}"
