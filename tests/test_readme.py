"""The README's Python examples run as written, and do what the text around them says."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import homax

nnx = pytest.importorskip("flax.nnx")
from test_flax import MLP  # noqa: E402  (tests/ is on sys.path under pytest)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks() -> list[str]:
  text = open(README, encoding="utf-8").read()
  return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_has_its_three_examples():
  blocks = python_blocks()
  assert len(blocks) == 3
  assert "homax.homogeneity" in blocks[0] and "nnx.Optimizer" in blocks[1]
  assert "paper_optimizer" in blocks[2]


def test_the_optax_example():
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  grads = {"w": jnp.full((4, 3), 0.5), "b": jnp.full(3, -0.5)}
  scope = {"params": params, "grads": grads}
  exec(python_blocks()[0], scope)
  assert sorted(homax.metrics(scope["state"])) == ["count", "homogeneity", "lambda", "similarity"]
  assert int(homax.metrics(scope["state"])["count"]) == 1
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), scope["params"], params)
  assert min(jax.tree.leaves(moved)) > 0


def test_the_nnx_example_reports_lambda_after_200_steps():
  """The text after it: after k steps λ = k/(k + 1) for ``dynamic()``, 0.9950 after 200."""
  model = MLP(nnx.Rngs(0))
  scope = {"optax": optax, "homax": homax, "nnx": nnx, "model": model}
  exec(python_blocks()[1], scope)
  x = jax.random.normal(jax.random.key(0), (32, 4))
  y = jnp.arange(32) % 3
  for _ in range(200):
    loss, metrics = scope["train_step"](model, scope["optimizer"], x, y)
  assert float(metrics["lambda"]) == pytest.approx(200 / 201, abs=1e-6)
  assert round(float(metrics["lambda"]), 4) == 0.9950
  assert np.isfinite(float(loss))


def test_the_paper_optimizer_examples():
  params = {"w": jnp.ones((4, 10)), "b": jnp.zeros(10)}
  second_random_init = jax.tree.map(lambda p: p + 0.1, params)
  scope = {"homax": homax, "second_random_init": second_random_init}
  exec(python_blocks()[2], scope)
  state = scope["tx"].init(params)  # the COMPLETE one, defined last
  average = homax.find_state(state).running_average
  assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(average),
                                                    jax.tree.leaves(second_random_init)))
