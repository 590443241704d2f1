"""The examples in homax's docstrings run and print what they show."""

import doctest
import importlib

MODULES = ("homax._src.derivative", "homax._src.transform", "homax._src.paper",
           "homax._src.schedules", "homax._src.forward", "homax.lambda_schedules")


def test_every_docstring_example_runs():
  attempted = 0
  for name in MODULES:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS,
                             verbose=False, report=True)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
    attempted += result.attempted
  assert attempted >= 16  # the examples of similarity, the derivative, homogeneity and metrics

