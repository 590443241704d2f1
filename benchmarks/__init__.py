"""Benchmarks of homax: overhead vs Adam, vs the published code, memory, seeds.

Run them from the repository root: ``benchmarks/run_all.sh`` (all four; add
``--quick``, ``--gpu`` or ``--cpu``), or one at a time with
``python -m benchmarks.bench_overhead`` / ``bench_torch`` / ``bench_memory`` /
``bench_seeds``. Results: ``benchmarks/RESULTS.md`` (tables printed by
``python -m benchmarks.summarize``), raw records in ``benchmarks/results/``.

Modules:

* ``common``: options, machine info, tables, JSON output, interleaved timing.
* ``bench_overhead``: per-step cost of Part I, Part II and SGD + homogeneity vs Adam.
* ``bench_torch``: against ``tests/torch_reference.py`` (the published loop),
  which runs in a separate process (``torch_worker``).
* ``bench_memory``: the homogeneity update alone vs copy bandwidth.
* ``bench_seeds``: 32 vmapped paired seeds vs 32 sequential runs.
* ``summarize``: the markdown tables of RESULTS.md from the JSON records.
"""
