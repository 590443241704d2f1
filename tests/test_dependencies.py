"""``import homax`` needs jax, optax and numpy only (the design card): the heavier
libraries are extras of the experiments, tests and benchmarks."""

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("flax", "sklearn", "scipy", "matplotlib", "tensorflow_datasets", "tensorflow",
               "palmerpenguins", "orbax", "tqdm", "torch", "chex", "hypothesis", "pandas")


def test_import_homax_loads_no_extra():
  """In a fresh interpreter, importing homax and using it imports none of the extras."""
  code = (
      "import sys, jax.numpy as jnp, optax, homax\n"
      "tx = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))\n"
      "p = {'w': jnp.ones(3)}\n"
      "tx.update(p, tx.init(p), p)\n"
      f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({EXTRAS_ONLY!r})))\n"
  )
  child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
  assert child.returncode == 0, child.stderr[-2000:]
  assert child.stdout.strip() == "[]"


def test_the_package_requires_jax_optax_and_numpy_only():
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  names = {req.split(">")[0].split("=")[0].split("<")[0].strip() for req in project["dependencies"]}
  assert names == {"jax", "optax", "numpy"}
  extras = project["optional-dependencies"]["experiments"]
  for heavy in ("flax", "scikit-learn", "matplotlib", "tensorflow-datasets", "orbax-checkpoint"):
    assert any(req.startswith(heavy) for req in extras), heavy
