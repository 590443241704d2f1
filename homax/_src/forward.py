r"""Forward gradients (Baydin et al., 2022): a gradient estimate from ``jax.jvp`` alone."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from homax._src import schedules

PyTree = Any


def forward_gradient(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    key: jax.Array,
    *args,
    num_directions: int = 1,
    **kwargs,
) -> tuple[jax.Array, PyTree]:
  r"""Returns ``(loss, g)`` with :math:`g = \frac1K\sum_k (\nabla L\cdot v_k)\, v_k`.

  Each tangent :math:`v_k` is standard normal in every scalar of ``params``;
  :math:`\nabla L \cdot v_k` comes from one forward-mode ``jax.jvp`` (no
  reverse-mode work), so :math:`\mathbb E[g] = \nabla L`. The estimate can be
  fed to any optax optimizer in place of ``jax.grad``.

  Args:
    loss_fn: ``loss_fn(params, *args, **kwargs) -> scalar``.
    params: a pytree of floating-point arrays.
    key: a ``jax.random`` key for the tangents.
    *args, **kwargs: passed to ``loss_fn`` (e.g. a batch).
    num_directions: :math:`K \ge 1`, the number of tangents averaged (default 1).
  """
  num_directions = schedules._check_int(num_directions, "num_directions")
  leaves, treedef = jax.tree_util.tree_flatten(params)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      # A Gaussian tangent has no integer counterpart; say which leaf it is.
      raise TypeError(
          f"forward_gradient: params{jax.tree_util.keystr(path)} has dtype"
          f" {jnp.result_type(leaf)}; every leaf must be floating point."
      )
  f = lambda p: loss_fn(p, *args, **kwargs)

  def one(k):
    keys = jax.random.split(k, len(leaves))
    tangent = treedef.unflatten(
        [jax.random.normal(kk, jnp.shape(l), jnp.result_type(l)) for kk, l in zip(keys, leaves)]
    )
    loss, directional = jax.jvp(f, (params,), (tangent,))
    if jnp.ndim(loss) != 0 or not jnp.issubdtype(jnp.result_type(loss), jnp.floating):
      # (∇L·v)·v needs a scalar L: a vector loss would broadcast into a wrong "gradient".
      raise TypeError(
          "forward_gradient: loss_fn must return a floating-point scalar, got"
          f" shape {jnp.shape(loss)} and dtype {jnp.result_type(loss)}."
      )
    grad = jax.tree.map(lambda v: directional.astype(v.dtype) * v, tangent)
    return loss, grad

  keys = jax.random.split(key, num_directions)
  losses, grads = jax.lax.map(one, keys)
  grad = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
  return losses[0], grad
