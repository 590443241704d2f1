r"""The homogeneity math: pure functions on parameter pytrees.

Symbols follow the article (see ``README.md``): :math:`\theta'` is the state of
the network after the backprop step (the seed's ``status``), :math:`\bar a` the
running average of past states, and

.. math::

  N = \sum |\theta' - \bar a|, \qquad
  D = \varepsilon + \sum (|\theta'| + |\bar a|), \qquad
  S = 1 - N / D,

where the sums run over **every scalar of every leaf** of the pytree (the seed
concatenates all tensors of the model), accumulated in at least float32.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PyTree = Any

RULES = ("paper", "paper-full", "exact")


def _check_rule(rule: str) -> None:
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")


def _accumulation_dtype(dtype) -> jnp.dtype:
  """At least float32, whatever the params' dtype (bfloat16 sums overflow)."""
  return jnp.promote_types(dtype, jnp.float32)


def _concrete_scalar(value, name: str, requirement: str):
  """``value`` as a Python float if it is a concrete real scalar, else ``None``.

  Python and NumPy numbers and concrete 0-d arrays are read; traced values
  (inside ``jit``) return ``None``. Strings, booleans, non-numeric objects and
  arrays with more than one element raise a ``ValueError`` naming ``name``.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, (bool, np.bool_, str, bytes)):
    raise ValueError(f"{name} must be {requirement}, got {value!r}.")
  try:
    array = np.asarray(value)
  except Exception:  # noqa: BLE001 - any object numpy cannot read is bad input
    raise ValueError(f"{name} must be {requirement}, got {value!r}.") from None
  if array.ndim != 0 or not (
      np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
  ):
    raise ValueError(f"{name} must be {requirement}, got {value!r}.")
  return float(array)


def _check_eps(eps) -> None:
  value = _concrete_scalar(eps, "eps", "a finite float >= 0")
  if value is not None and (math.isnan(value) or math.isinf(value) or value < 0.0):
    raise ValueError(f"eps must be a finite float >= 0, got {eps!r}.")


def _check_floating(tree: PyTree, name: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"{name}{jax.tree_util.keystr(path)} has dtype {dtype}; the homogeneity"
          " step is defined for floating-point leaves only. Train integer or"
          " boolean leaves with `optax.masked` around `homax.homogeneity`, or"
          " keep them out of the trained params."
      )


def _check_real(tree: PyTree, name: str) -> None:
  """Real numbers only (floats, ints): a complex or boolean average has no |ā|
  in the method's sense."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    dtype = jnp.result_type(leaf)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
      raise TypeError(
          f"{name}{jax.tree_util.keystr(path)} has dtype {dtype}; it must hold real"
          " numbers (floating-point or integer)."
      )


def _check_same_shapes(params: PyTree, average: PyTree) -> None:
  """Same tree structure and, leaf by leaf, the same shape (no broadcasting)."""
  p_struct = jax.tree_util.tree_structure(params)
  a_struct = jax.tree_util.tree_structure(average)
  if p_struct != a_struct:
    raise ValueError(
        f"params and average must have the same tree structure; got {p_struct}"
        f" and {a_struct}."
    )
  for (path, p), a in zip(
      jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(average)
  ):
    if jnp.shape(p) != jnp.shape(a):
      raise ValueError(
          f"average{jax.tree_util.keystr(path)} has shape {jnp.shape(a)}, but"
          f" params{jax.tree_util.keystr(path)} has shape {jnp.shape(p)}; they"
          " must be equal (no broadcasting)."
      )


def sums(params: PyTree, average: PyTree, eps: float = 1e-8) -> tuple[Array, Array]:
  r"""Returns the global sums ``(N, D)`` over all leaves of the two pytrees.

  :math:`N = \sum|\theta - \bar a|`, :math:`D = \varepsilon + \sum(|\theta| + |\bar a|)`,
  each accumulated in at least float32 (so bfloat16 and float16 params neither
  overflow nor lose the small terms). Both are scalars of the accumulation dtype.
  The summation order is XLA's and depends on the platform (each leaf on its
  own; on a single NVIDIA GPU one reduction over every leaf), so the last bits
  of N and D can differ between a CPU and a GPU.

  Args:
    params: :math:`\theta'`, any pytree of floating-point arrays.
    average: :math:`\bar a`, a pytree with the structure and shapes of ``params``
      (its dtypes may differ).
    eps: :math:`\varepsilon \ge 0` in :math:`D` (default ``1e-8``).
  """
  _check_eps(eps)
  _check_floating(params, "params")
  _check_real(average, "average")
  _check_same_shapes(params, average)
  leaves = jax.tree_util.tree_leaves(params)
  avg_leaves = jax.tree_util.tree_leaves(average)
  if not leaves:
    zero = jnp.zeros((), jnp.float32)
    return zero, zero + eps
  acc = _accumulation_dtype(jnp.result_type(*leaves))
  ps = [jnp.asarray(p).astype(acc) for p in leaves]
  avs = [jnp.asarray(a).astype(acc) for a in avg_leaves]
  if len(ps) > 1 and jax.device_count() == 1:
    n, d = jax.lax.platform_dependent(ps, avs, cuda=_concatenated_sums, default=_per_leaf_sums)
  else:
    n, d = _per_leaf_sums(ps, avs)
  return n, eps + d


def _per_leaf_sums(ps, avs) -> tuple[Array, Array]:
  """``(N, D - eps)`` as the sum of every leaf's own two sums."""
  n = jnp.zeros((), ps[0].dtype)
  d = jnp.zeros((), ps[0].dtype)
  for p, a in zip(ps, avs):
    leaf_n, leaf_d = _leaf_sums(p, a)
    n = n + leaf_n
    d = d + leaf_d
  return n, d


def _concatenated_sums(ps, avs) -> tuple[Array, Array]:
  """``(N, D - eps)`` by one reduction over every leaf's terms, concatenated.

  Performance only, on NVIDIA GPUs with a single device: there each
  reduction is a kernel or more (a large leaf's takes two or three), and the
  per-leaf form added kernels to every step. Measured on an H200 as the
  ``part1-onesum`` / ``part2-onesum`` arms of ``bench_overhead``, the same
  program: a Part I or Part II step 0.1-26.5 µs shorter than with per-leaf
  sums, 1.2-2.0 µs of ~52 at batch 128 (benchmarks/RESULTS.md §5 item 7, §6).
  On the CPU this layout is many times slower (a concatenate feeding a
  reduction, §1); with several devices the concatenation of sharded leaves
  would gather them. The summation order is XLA's, so N and D differ from the
  per-leaf form's in their last bits.
  """
  p = jnp.concatenate([jnp.ravel(x) for x in ps])
  a = jnp.concatenate([jnp.ravel(x) for x in avs])
  return _stacked_sums(p, a)


# Leaves up to this many elements (1 MiB in float32) have their two sums'
# terms stacked and reduced together; see _leaf_sums.
STACKED_SUMS_MAX_SIZE = 1 << 18


def _leaf_sums(p: Array, a: Array) -> tuple[Array, Array]:
  """``(Σ|p - a|, Σ(|p| + |a|))`` of one leaf.

  Performance only. For a leaf of at most ``STACKED_SUMS_MAX_SIZE`` elements
  the two terms are stacked into one ``(2, *shape)`` array and reduced
  together: XLA's CPU backend then writes the terms in one parallel
  elementwise pass and sums a plain buffer, instead of running two
  single-threaded reductions that each recompute their terms (inside a
  training step of the paper's MLP, the sums of its 784 × 128 leaf took
  ~45 % less time; ``python -m benchmarks.profile_step``). Larger leaves are
  summed directly: there the stacked array is one more round trip through
  memory (the update alone was 1.10–1.26× slower at 2·10^6 elements;
  ``python -m benchmarks.bench_memory --sums-forms``). On platforms other
  than the CPU, where this was not measured, every leaf is summed directly.
  The summation order is XLA's either way; it differs between the two forms,
  and for the stacked form also with the number of threads, in the last bits
  of N and D.
  """
  if p.size > STACKED_SUMS_MAX_SIZE:
    return _direct_sums(p, a)
  return jax.lax.platform_dependent(p, a, cpu=_stacked_sums, default=_direct_sums)


def _direct_sums(p: Array, a: Array) -> tuple[Array, Array]:
  return jnp.sum(jnp.abs(p - a)), jnp.sum(jnp.abs(p) + jnp.abs(a))


def _stacked_sums(p: Array, a: Array) -> tuple[Array, Array]:
  terms = jnp.stack([jnp.abs(p - a), jnp.abs(p) + jnp.abs(a)])
  both = jnp.sum(terms, axis=tuple(range(1, terms.ndim)))
  return both[0], both[1]


def similarity(params: PyTree, average: PyTree, eps: float = 1e-8) -> Array:
  r"""Absolute-difference similarity (ADS) of ``params`` to ``average``.

  .. math:: S = 1 - \frac{\sum |\theta - \bar a|}{\varepsilon + \sum(|\theta| + |\bar a|)}

  Args:
    params: the current parameters :math:`\theta'` (any pytree of float arrays).
    average: the running average :math:`\bar a`, a pytree like ``params``.
    eps: :math:`\varepsilon` in the denominator (the seed uses ``1e-8``).

  Returns:
    A scalar in :math:`[0, 1]` (:math:`N \le D` by the triangle inequality),
    in the accumulation dtype (at least float32); NaN if ``eps=0`` and both
    pytrees are all zeros (0/0).

  Example:
    >>> import jax.numpy as jnp, homax
    >>> float(homax.similarity(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0])))
    1.0
  """
  n, d = sums(params, average, eps)
  return 1.0 - n / d


def _case_constants(n: Array, d: Array) -> dict[str, Array]:
  """The scalars Table 1 is made of: c1 = (D - N)/D², c2 = (D + N)/D², c3, c4.

  Computed as the seed writes them, ``(1/D²)·(D ∓ N)``, ``-1/D`` and ``1/D``.
  """
  inv_d2 = 1.0 / (d * d)
  return dict(c1=inv_d2 * (d - n), c2=inv_d2 * (d + n), c3=-1.0 / d, c4=1.0 / d)


def _leaf_coefficient(p: Array, a: Array, n: Array, d: Array, rule: str, consts=None):
  """Elementwise c (Table 1 or the exact subgradient) and the 'defined' mask.

  The mask is False where ``paper-full`` (the Part II code) leaves an element
  outside cases c1-c5: there both the derivative and its history are dropped.

  For "paper" and "paper-full", every element is one of a few scalars, so c is
  a nested select among them (no per-element arithmetic). The "other" row,
  ``(D·sign(θ'-ā) - N·sign(θ'))/D²`` on the elements outside c1-c5, takes
  only four values: θ' ≠ 0 with ā = 0 gives ``±(D - N)/D²`` (the sign of θ'),
  and θ' strictly between 0 and ā gives ``∓(D + N)/D²``, i.e. ``±c1`` and
  ``∓c2`` — bit for bit, as XLA evaluates the formula: it turns the division
  by D² into a multiplication by 1/D², and the products with ±1, the
  negations and the commuted product are exact. Where θ' or ā is NaN, N and D
  are NaN and so is every scalar: the element is NaN ("paper") or outside the
  mask ("paper-full"), as before.
  """
  if rule == "exact":
    sign_diff = jnp.sign(p - a)
    sign_p = jnp.sign(p)
    # D = 0 (eps=0 with all-zero params and average) forces N = 0 and a zero
    # numerator: dividing by 1 there gives (signed) 0, not 0/0. For D > 0 the
    # values and their derivatives are the plain quotient's.
    d2 = d * d
    return (d * sign_diff - n * sign_p) / jnp.where(d == 0, jnp.ones_like(d2), d2), None
  k = _case_constants(n, d) if consts is None else consts
  zero = jnp.zeros((), k["c1"].dtype)
  if rule == "paper":
    # The same partition, in fewer operations: after θ' = ā (c5), ā = 0
    # ("other": ±c1 by the sign of θ') and θ' = 0 (c3/c4), both are nonzero
    # and distinct, and c1 is "θ' beyond ā" (> ā > 0 or < ā < 0); what is left
    # is c2 (opposite signs: +c2) and "other" between 0 and ā (∓c2 by the
    # sign of θ'), i.e. -c2 exactly where θ' > 0 and ā > 0.
    a_pos = a > 0
    p_pos = p > 0
    beyond = jnp.where(a_pos, p > a, p < a)
    c = jnp.where(
        p == a,
        zero,
        jnp.where(
            a == 0,
            jnp.where(p_pos, k["c1"], -k["c1"]),
            jnp.where(
                p == 0,
                jnp.where(a_pos, k["c3"], k["c4"]),
                jnp.where(beyond, k["c1"], jnp.where(p_pos & a_pos, -k["c2"], k["c2"])),
            ),
        ),
    )
    return c, None
  p_pos = p > 0
  p_neg = p < 0
  a_pos = a > 0
  a_neg = a < 0
  c5 = p == a
  c34 = (p == 0) & (a_pos | a_neg)  # c3 or c4
  c2 = (p_pos & a_neg) | (p_neg & a_pos)
  c1 = ((p > a) & a_pos) | ((p < a) & a_neg)
  # "paper-full" (the Part II code) writes the five cases into a zero tensor
  # and leaves every other element at 0 ("paper" returned above).
  c = jnp.where(
      c5,
      zero,
      jnp.where(
          c34,
          jnp.where(a_pos, k["c3"], k["c4"]),
          jnp.where(c2, k["c2"], jnp.where(c1, k["c1"], zero)),
      ),
  )
  return c, c1 | c2 | c34 | c5


def _coefficients(params, average, n, d, rule):
  """Returns (c tree, mask tree or None) in the accumulation dtype."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  avg_leaves = treedef.flatten_up_to(average)
  consts = None if rule == "exact" else _case_constants(n, d)
  cs, masks = [], []
  for p, a in zip(leaves, avg_leaves):
    acc = n.dtype
    c, m = _leaf_coefficient(
        jnp.asarray(p).astype(acc), jnp.asarray(a).astype(acc), n, d, rule, consts
    )
    cs.append(c)
    masks.append(m)
  c_tree = treedef.unflatten(cs)
  mask_tree = None if rule != "paper-full" else treedef.unflatten(masks)
  return c_tree, mask_tree


def homogeneity_derivative(
    params: PyTree,
    average: PyTree,
    lam: float | Array,
    *,
    rule: str = "paper",
    eps: float = 1e-8,
    dtype=None,
) -> PyTree:
  r"""The homogeneity derivative :math:`d = (1 - \lambda)\,c(\theta', \bar a)`.

  :math:`c` is chosen elementwise by ``rule``:

  ============  =======================================================
  ``"paper"``   Table 1 of the article with its "other" row (Part I code):
                c1 :math:`(D-N)/D^2`, c2 :math:`(D+N)/D^2`, c3 :math:`-1/D`,
                c4 :math:`+1/D`, c5 :math:`0`, other
                :math:`(D\,\mathrm{sign}(\theta'-\bar a) - N\,\mathrm{sign}(\theta'))/D^2`.
  ``"paper-full"``  cases c1-c5 only, every other element 0 (Part II code).
  ``"exact"``   the subgradient of :math:`N/D`,
                :math:`(D\,\mathrm{sign}(\theta'-\bar a) - N\,\mathrm{sign}(\theta'))/D^2`,
                everywhere (``sign(0) = 0``).
  ============  =======================================================

  with c1: :math:`(\theta'>\bar a>0)` or :math:`(\theta'<\bar a<0)`;
  c2: :math:`\theta'` and :math:`\bar a` of strictly opposite signs;
  c3: :math:`\theta'=0<\bar a`; c4: :math:`\theta'=0>\bar a`; c5: :math:`\theta'=\bar a`.
  "paper" agrees with "exact" on c3, c4, "other" and the first half of c1; it
  has the opposite sign on the second half of c1, uses :math:`D+N` on c2 and 0
  on c5 (where the exact value is :math:`-N\,\mathrm{sign}(\theta')/D^2`).

  Args:
    params: :math:`\theta'`, any pytree of floating-point arrays.
    average: :math:`\bar a`, a pytree with the structure and shapes of ``params``.
    lam: :math:`\lambda`, a scalar (float or traced array).
    rule: ``"paper"`` (default), ``"paper-full"`` or ``"exact"``.
    eps: :math:`\varepsilon \ge 0` in :math:`D` (default ``1e-8``).
    dtype: dtype of every leaf of the result; ``None`` (default) for each
      leaf's own dtype. The derivative is computed in at least float32 and
      then cast: in float16, whose largest value is 65504, :math:`|d|` of order
      :math:`1/D` overflows to ±inf once :math:`D \lesssim 1.5\cdot10^{-5}`
      (tiny params), and values below ~6e-8 flush to 0. Pass
      ``dtype=jnp.float32`` to keep the float32 values (``homax.homogeneity``
      does so internally).

  Returns:
    A pytree like ``params`` (same dtypes, or ``dtype``). :math:`N` and
    :math:`D` are global sums over all leaves, accumulated in at least float32.

  Example:
    >>> import jax.numpy as jnp, homax
    >>> d = homax.homogeneity_derivative(
    ...     {"w": jnp.array([0.5, -0.2])}, {"w": jnp.array([0.1, 0.3])}, 0.5)
    >>> d["w"].shape
    (2,)
  """
  _check_rule(rule)
  _check_floating(params, "params")
  if dtype is not None and not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
    raise ValueError(f"dtype must be a floating-point dtype or None, got {dtype!r}.")
  _concrete_scalar(lam, "lam", "a scalar (a float or a 0-d array)")
  if jnp.ndim(lam) != 0:
    raise ValueError(f"lam must be a scalar (a float or a 0-d array), got shape {jnp.shape(lam)}.")
  n, d = sums(params, average, eps)
  c_tree, _ = _coefficients(params, average, n, d, rule)
  scale = 1.0 - jnp.asarray(lam, n.dtype)
  return jax.tree.map(
      lambda c, p: (scale * c).astype(jnp.result_type(p) if dtype is None else dtype),
      c_tree, params,
  )


def derivative_and_mask(params, average, lam, n, d, rule):
  """Internal: (1-λ)·c in the accumulation dtype, and the paper-full mask."""
  c_tree, mask = _coefficients(params, average, n, d, rule)
  scale = 1.0 - jnp.asarray(lam, n.dtype)
  return jax.tree.map(lambda c: scale * c, c_tree), mask
