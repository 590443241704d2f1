r"""The homogeneity step as an ``optax.GradientTransformation``."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax._src import base as optax_base

from homax._src import derivative as derivative_lib
from homax._src import schedules as schedules_lib

PyTree = Any
ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]

DIRECTIONS = ("descend", "ascend")
STEPS = ("adam", "sgd")


class HomogeneityState(NamedTuple):
  """State of :func:`homogeneity`.

  Attributes:
    count: :math:`k`, the number of homogeneity steps taken so far (int32).
    running_average: :math:`\\bar a`, the running average of past
      :math:`\\theta'` (a pytree like params, in the params' dtypes).
    history: :math:`g_{k-1}`, the history gradient (a pytree like params in at
      least float32) when ``history=True``; ``()`` otherwise.
    homogeneity: :math:`H_{k-1}`, the homogeneity value after the last step
      (:math:`H_{-1} = 1`), float32. Reported only; no update uses it.
    similarity: :math:`S` of the last step (ADS of :math:`\\theta'` to
      :math:`\\bar a`), float32; 1 before the first step.
    lam: :math:`\\lambda` of the last step, float32; 0 before the first step.
    step_state: the state of the step optimizer (``"adam"``, ``"sgd"`` or the
      transformation given as ``step``), which runs on params and gradients
      in at least float32.
  """

  count: jax.Array
  running_average: PyTree
  history: PyTree
  homogeneity: jax.Array
  similarity: jax.Array
  lam: jax.Array
  step_state: optax.OptState


def _check_learning_rate(learning_rate, name: str = "learning_rate") -> None:
  """Validates a learning rate: a float > 0, or a schedule.

  A JAX array may also be 0: it is how ``optax.inject_hyperparams`` passes an
  injected (e.g. warm-up) learning rate. Traced values pass unchecked.
  """
  if learning_rate is None:
    raise ValueError(f"{name} is required: a float > 0 or a schedule.")
  if callable(learning_rate):
    return
  value = derivative_lib._concrete_scalar(learning_rate, name, "a finite float > 0 or a schedule")
  if value is None:
    return
  minimum_ok = value >= 0.0 if isinstance(learning_rate, jax.Array) else value > 0.0
  if math.isnan(value) or math.isinf(value) or not minimum_ok:
    raise ValueError(f"{name} must be a finite float > 0, got {learning_rate!r}.")


def _leaf_dtype(leaf):
  dtype = getattr(leaf, "dtype", None)
  return jnp.dtype(dtype) if dtype is not None else jnp.result_type(leaf)


def _as_array(leaf):
  if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
    return leaf
  return jnp.asarray(leaf)


def _check_params(params) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    dtype = _leaf_dtype(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"homax.homogeneity: params{jax.tree_util.keystr(path)} has dtype"
          f" {dtype}; only floating-point leaves can take a homogeneity step."
          " Wrap the transformation in `optax.masked` to skip such leaves."
      )


def _accumulation_tree(tree):
  """``tree`` cast leafwise to the accumulation dtype (ShapeDtypeStructs too)."""

  def cast(leaf):
    dtype = derivative_lib._accumulation_dtype(_leaf_dtype(leaf))
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(leaf.shape, dtype, sharding=leaf.sharding)
    if hasattr(leaf, "astype"):
      return leaf.astype(dtype)  # astype keeps the leaf's sharding.
    return jnp.asarray(leaf, dtype)

  return jax.tree.map(cast, tree)


def _check_average(params, average) -> None:
  p_struct = jax.tree_util.tree_structure(params)
  a_struct = jax.tree_util.tree_structure(average)
  if p_struct != a_struct:
    hint = ""
    if isinstance(average, jax.Array) and average.ndim == 0:
      # What optax.inject_hyperparams passes after calling a callable
      # initial_average as a schedule of the step count.
      hint = (" Inside optax.inject_hyperparams, pass"
              " static_args=('lambda_schedule', 'initial_average').")
    raise ValueError(
        "initial_average must have the tree structure of params; got"
        f" {a_struct}, expected {p_struct}.{hint}"
    )
  for (path, p), a in zip(
      jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(average)
  ):
    if tuple(jnp.shape(a)) != tuple(p.shape):
      raise ValueError(
          f"initial_average{jax.tree_util.keystr(path)} has shape"
          f" {tuple(jnp.shape(a))}, expected {tuple(p.shape)} (as params)."
      )
    if _leaf_dtype(a) != _leaf_dtype(p):
      raise ValueError(
          f"initial_average{jax.tree_util.keystr(path)} has dtype"
          f" {_leaf_dtype(a)}, expected {_leaf_dtype(p)} (as params)."
      )


def _state_copy(a, p):
  """``a`` as the state's own array: ``p``'s dtype and, under an explicit mesh,
  its sharding.

  A copy, never the caller's buffer: a training step that donates its params
  and state would otherwise delete the caller's ``initial_average`` (or
  donate one buffer twice when it is the params themselves), as
  ``optax.contrib.schedule_free`` copies its params for the same reason.
  """
  if isinstance(p, jax.ShapeDtypeStruct):  # abstract init: no buffer to share
    return jnp.asarray(a, p.dtype)
  a = jnp.array(a, dtype=p.dtype, copy=True)
  sharding = getattr(jax.typeof(p), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if (spec is not None and any(axis is not None for axis in spec)
      and getattr(jax.typeof(a), "sharding", None) != sharding):
    # Explicitly sharded params (sharding in the type): the average must be
    # sharded alike, or the first update's selects refuse the mix. Concrete
    # params carry their devices (no mesh context needed); traced ones do not.
    if isinstance(p, jax.core.Tracer):
      a = jax.sharding.reshard(a, sharding)
    else:
      a = jax.device_put(a, p.sharding)
  return a


# Passing one of these uncalled (``linear`` for ``linear(T)``) is an error.
_SCHEDULE_FACTORIES = (
    schedules_lib.fixed, schedules_lib.linear, schedules_lib.dynamic, schedules_lib.hybrid,
)


def _check_lambda(lam) -> None:
  """λ from a schedule must be a real number (not a bool, string or complex)."""
  try:
    dtype = None if lam is None or isinstance(lam, (str, bytes)) else jnp.result_type(lam)
  except TypeError:
    dtype = None
  if dtype is None or not (
      jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
  ):
    raise ValueError(
        "lambda_schedule must return a real number λ (a float or an int scalar);"
        f" got {lam!r}."
    )


# Leaves up to this many elements (4 MiB in float32: cache-sized) have the
# step optimizer's input written once to memory; larger ones recompute it.
_MATERIALIZE_MAX_SIZE = 1 << 20


def _materialized(x, everywhere: bool = False):
  """``x`` itself (same bits), computed once into memory when it is small.

  Performance only, on the CPU. XLA's CPU backend gives each output of the
  step its own kernel and recomputes a cheap shared input in each: Table 1 (a
  chain of selects over every element) would be evaluated once for Adam's
  first moment and again for its second. Writing one element of ``x`` back
  into ``x`` (a no-op ``dynamic_update_slice``, done in place) makes ``x`` a
  buffer, so it is computed once and read twice: cheaper while the leaf is
  cache-sized, dearer (one more pass over memory) beyond, where it is left to
  be recomputed.

  On the CPU only (through ``jax.lax.platform_dependent``), unless
  ``everywhere``. Elsewhere ``x`` is returned as is: XLA's
  GPU backend fuses the shared input into one multi-output kernel by itself,
  and there the write-back added kernels to every step (benchmarks/RESULTS.md
  §6, the ``part1-materialize`` arm of ``bench_overhead``).

  The values of ``x`` are unchanged. Under ``jit``, Adam's first moment can
  differ in its last bit from what the fused kernel gave before (XLA
  rearranged the fused arithmetic); it now equals the op-by-op (eager) value.
  """
  if x.ndim == 0 or x.size == 0 or x.size > _MATERIALIZE_MAX_SIZE:
    return x
  # Explicitly sharded leaves (sharding in the type) are left alone: slicing a
  # sharded dimension is not defined for them, and they are not the small,
  # single-device case this is for.
  spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
  if spec is not None and any(axis is not None for axis in spec):
    return x
  if everywhere:
    return _write_back_corner(x)
  return jax.lax.platform_dependent(x, cpu=_write_back_corner, default=lambda y: y)


def _write_back_corner(x):
  corner = (0,) * x.ndim
  return jax.lax.dynamic_update_slice(x, jax.lax.dynamic_slice(x, corner, (1,) * x.ndim), corner)


def _after(scalar, buffer):
  """``scalar`` itself (same bits), computed after ``buffer`` is written.

  ``scalar`` is the step count k as a float (a non-negative integer value);
  a subnormal would be flushed to zero by the addition on XLA:CPU.

  Performance only. The running average is updated in place; XLA lets it be
  overwritten only once every reader of the old average (the sums N and D,
  Table 1, recomputed inside the step optimizer's kernels) is known to have
  run, and otherwise copies the whole average first (a full pass over memory
  every step). The new average uses ``k``; adding to it a zero computed from
  one element of each buffer those readers produce (the step optimizer's new
  state, the new history: ``clip(bits, 0, 0)`` of the element's bit pattern,
  an integer 0 whatever the value, NaN included) gives XLA that order, and
  the copy goes away. Without such buffers (``step="sgd"`` without history)
  the copy stays.

  Skipped (``scalar`` returned as is) for empty and 0-d buffers.

  The value of ``scalar`` is unchanged, but under ``jit`` XLA fuses the
  neighbouring kernels differently, and the sums N and D (hence everything
  that depends on them) can differ in their last bit from before this was
  added; measured on the committed experiments, no reported accuracy changed.
  """
  if buffer.ndim == 0 or buffer.size == 0:
    return scalar
  first = buffer[(0,) * buffer.ndim].astype(jnp.float32)
  zero = jnp.clip(jax.lax.bitcast_convert_type(first, jnp.int32), 0, 0)
  return scalar + zero.astype(scalar.dtype)


def _after_all(scalar, buffers):
  """``_after`` for every buffer, on a single CPU device (where it was measured).

  Elsewhere ``scalar`` is returned as is: on several devices, reading one
  element of a sharded buffer would add a small collective per buffer and step.
  """
  if jax.device_count() > 1:
    return scalar

  def cpu(x):
    for buffer in buffers:
      # Floating-point buffers only: a custom step's state may hold PRNG keys
      # or integers, and one floating buffer per output orders the write.
      if jnp.issubdtype(buffer.dtype, jnp.floating):
        x = _after(x, buffer)
    return x

  return jax.lax.platform_dependent(scalar, cpu=cpu, default=lambda x: x)


def _step_transformation(step, learning_rate) -> optax.GradientTransformation:
  if isinstance(step, str):
    if step == "adam":
      # torch.optim.Adam's defaults, as in the seed's `optimizer_homogeneity`.
      return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    if step == "sgd":
      return optax.sgd(learning_rate)
    raise ValueError(
        f"step must be one of {STEPS} or an optax.GradientTransformation, got {step!r}."
    )
  if isinstance(step, optax.GradientTransformation):
    return optax.with_extra_args_support(step)
  raise ValueError(
      f"step must be one of {STEPS} or an optax.GradientTransformation, got {step!r}."
  )


def homogeneity(
    learning_rate: ScalarOrSchedule,
    lambda_schedule: Callable[[jax.Array], jax.Array] | None = None,
    *,
    rule: str = "paper",
    history: bool = False,
    step: str | optax.GradientTransformation = "adam",
    direction: str = "descend",
    initial_average: PyTree | Callable[[PyTree], PyTree] | None = None,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
  r"""The homogeneity-driven step of the article, to chain *after* an optimizer.

  ``update(updates, state, params)`` receives the base optimizer's updates and
  the current params, forms the backprop result :math:`\theta' = \theta + u`,
  and at step :math:`k` computes

  .. math::

    \lambda_k &= \mathrm{lambda\_schedule}(k) \\
    S &= 1 - N/D, \quad N = \textstyle\sum|\theta' - \bar a|,
        \quad D = \varepsilon + \sum(|\theta'| + |\bar a|) \\
    H_k &= (1 - \lambda_k) S + \lambda_k H_{k-1}, \quad H_{-1} = 1 \\
    d_k &= (1 - \lambda_k)\, c(\theta', \bar a) \quad
        \text{(see } \texttt{homogeneity\_derivative}\text{)} \\
    g_k &= d_k + \lambda_k g_{k-1} \ \text{(history)} \quad\text{or}\quad g_k = d_k \\
    \theta_{k+1} &= \theta' + \mathrm{step}(\pm\eta_h g_k) \\
    \bar a &\leftarrow (\theta' + k \bar a)/(k + 1)

  and returns :math:`u + \mathrm{step}(\pm\eta_h g_k)`, so that
  ``optax.apply_updates`` gives :math:`\theta_{k+1}`. The step optimizer is fed
  the seed's scaled gradient :math:`\eta_h g_k` (``+`` to descend, ``-`` to
  ascend): with ``step="adam"`` it is a separate Adam(:math:`\eta_h`), as in
  Part I of the article (:math:`\theta' - \mathrm{Adam}_{\eta_h}(\eta_h d_k)`);
  with ``step="sgd"`` it is :math:`\theta' \mp \eta_h^2 g_k`, Part II's step
  when ascending. With ``history=True`` and ``rule="paper-full"``, an element
  outside cases c1-c5 gets :math:`g_k = 0`, its history dropped, as in Part II.

  Non-finite values propagate: a NaN or Inf in ``params`` or ``updates`` makes
  :math:`N` and :math:`D` NaN and, since they are global sums, the derivative
  of every element, except where :math:`\theta' = \bar a` under the paper
  rules (case c5, an exact 0 whatever N and D) and, with ``"paper-full"``,
  outside cases c1-c5 (0, the NaN element itself included). Wrap the chain in
  ``optax.apply_if_finite`` to skip such a step; the skipped step leaves the
  running average, history and count as they were.

  Differentiating through ``update`` (e.g. to tune :math:`\eta_h`): where the
  step optimizer's input is exactly 0 (every element at step 0 with the
  default zero average, and any element in case c5, :math:`\theta' = \bar a`),
  ``step="adam"`` takes :math:`\sqrt{0}`, whose derivative is infinite, and
  the gradient is NaN, as for ``optax.adam`` itself. Pass
  ``step=optax.adam(learning_rate, eps_root=1e-16)`` (no longer bit-identical
  to the seed) or ``step="sgd"``.

  The step count enters the running average as a float32 :math:`k`, as in the
  seed's float32 arithmetic: from :math:`k = 2^{24}` (16.7 million steps)
  :math:`k + 1` rounds to :math:`k` and the average drifts even where
  :math:`\theta'` sits at it.

  Args:
    learning_rate: :math:`\eta_h > 0`, a float or a schedule ``count -> value``
      (a JAX array may be 0, as ``optax.inject_hyperparams`` passes a warm-up).
    lambda_schedule: ``count -> λ`` (see ``homax.lambda_schedules``); default
      ``homax.lambda_schedules.dynamic()``, i.e. :math:`(k+1)/(k+2)`.
    rule: ``"paper"`` (default; Table 1, Part I), ``"paper-full"`` (c1-c5 only, Part II)
      or ``"exact"`` (the subgradient of :math:`N/D`).
    history: keep the history gradient :math:`g` (Part II) or not (Part I,
      the default ``False``).
    step: ``"adam"`` (the default: a separate ``optax.adam(learning_rate)`` with torch's
      defaults, Part I), ``"sgd"`` (``optax.sgd(learning_rate)``, Part II) or
      any ``optax.GradientTransformation`` to turn :math:`\pm\eta_h g` into a step
      (it receives ``update``'s extra keyword arguments, as in ``optax.chain``).
    direction: ``"descend"`` (default; Part I) or ``"ascend"`` (Part II) along :math:`g`.
    initial_average: :math:`\bar a` before the first step: a pytree like params
      (same structure, shapes and dtypes; NumPy and Python leaves are converted
      as params are, float64 to float32 without x64), a callable
      ``params -> pytree``, or
      ``None`` for **zeros**. With zeros, :math:`N = D - \varepsilon` at step 0
      and the first derivative is :math:`\approx 0`; pass a second, independent
      initialisation of the model to reproduce the seed. The average only
      matters at step 0 (it is replaced by :math:`\theta'_0` after it).
    eps: :math:`\varepsilon \ge 0` in :math:`D` (default ``1e-8``, as the seed).

  With ``optax.inject_hyperparams(homax.homogeneity, static_args=("lambda_schedule",
  "initial_average"))`` the learning rate (and ``eps``) can be injected;
  without ``static_args``, inject_hyperparams would call those two callables
  as schedules of the step count.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires
    ``params``; its state is a :class:`HomogeneityState`.

  Example:
    >>> import jax.numpy as jnp, optax, homax
    >>> tx = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.full(3, 0.5)}
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
  """
  _check_learning_rate(learning_rate)
  derivative_lib._check_eps(eps)
  derivative_lib._check_rule(rule)
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
  if not isinstance(history, (bool, np.bool_)):
    raise ValueError(f"history must be True or False, got {history!r}.")
  history = bool(history)
  if lambda_schedule is None:
    lambda_schedule = schedules_lib.dynamic()
  if not callable(lambda_schedule):
    raise ValueError(
        "lambda_schedule must be a callable count -> λ (see"
        f" homax.lambda_schedules), got {lambda_schedule!r}. Inside"
        " optax.inject_hyperparams, which calls every callable argument as a"
        " schedule, pass static_args=('lambda_schedule', 'initial_average')."
    )
  if any(lambda_schedule is f for f in _SCHEDULE_FACTORIES):
    raise ValueError(
        f"lambda_schedule must be a schedule, got the factory"
        f" homax.lambda_schedules.{lambda_schedule.__name__} itself; call it"
        " (e.g. homax.lambda_schedules.linear(total_steps)) and pass the result."
    )
  step_tx = _step_transformation(step, learning_rate)
  sign = 1.0 if direction == "descend" else -1.0
  # Without history, the step optimizer's input η_h·g is read by several of
  # its kernels (Adam: the first and the second moment); see _materialized.
  materialize = not history and step != "sgd"

  def init_fn(params):
    # Python and NumPy scalars or arrays as leaves become jax arrays, as in
    # update; jax arrays and ShapeDtypeStructs (abstract init) stay as they are.
    params = jax.tree.map(_as_array, params)
    _check_params(params)
    if initial_average is None:
      # zeros_like keeps each leaf's sharding (explicit-mesh types), so the
      # state's types at init equal those after an update.
      average = jax.tree.map(jnp.zeros_like, params)
    else:
      average = initial_average(params) if callable(initial_average) else initial_average
      # As params: NumPy and Python leaves become jax arrays (float64 → float32
      # without x64), so that equal dtypes compare equal.
      if jax.tree_util.tree_structure(average) == jax.tree_util.tree_structure(params):
        average = jax.tree.map(_as_array, average)
      _check_average(params, average)
      average = jax.tree.map(_state_copy, average, params)
    if history:
      hist = jax.tree.map(
          lambda p: jnp.zeros_like(p, derivative_lib._accumulation_dtype(p.dtype)),
          params,
      )
    else:
      hist = ()
    return HomogeneityState(
        count=jnp.zeros([], jnp.int32),
        running_average=average,
        history=hist,
        homogeneity=jnp.ones([], jnp.float32),
        similarity=jnp.ones([], jnp.float32),
        lam=jnp.zeros([], jnp.float32),
        step_state=step_tx.init(_accumulation_tree(params)),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(optax_base.NO_PARAMS_MSG)
    # Python scalars as leaves (init accepts them) become arrays.
    params = jax.tree.map(_as_array, params)
    updates = jax.tree.map(_as_array, updates)
    k = state.count
    avg = state.running_average
    # θ': where the base optimizer's step lands (the seed's `status`).
    theta = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
    n, d = derivative_lib.sums(theta, avg, eps)
    lam = lambda_schedule(k)
    _check_lambda(lam)
    if jnp.ndim(lam) != 0:
      raise ValueError(
          "lambda_schedule must return a scalar λ for a scalar step count; got"
          f" shape {jnp.shape(lam)}."
      )
    lam = jnp.asarray(lam, n.dtype)
    s = 1.0 - n / d
    h = (1.0 - lam) * s + lam * state.homogeneity.astype(n.dtype)
    dk, mask = derivative_lib.derivative_and_mask(theta, avg, lam, n, d, rule)
    if history:
      if mask is None:
        g = jax.tree.map(lambda x, gp: x + lam * gp, dk, state.history)
      else:
        g = jax.tree.map(
            lambda x, gp, m: jnp.where(m, x + lam * gp, 0.0), dk, state.history, mask
        )
      new_history = g
    else:
      g = dk
      new_history = ()
    eta = learning_rate(k) if callable(learning_rate) else learning_rate
    # The step optimizer runs in the accumulation dtype: η_h·g is tiny by
    # design, and in float16 its square underflows and Adam's ε rounds to 0,
    # so a float16 step state turns the very first update into 0/0 = NaN.
    scaled = jax.tree.map(
        lambda gi, p: (sign * eta * gi).astype(
            derivative_lib._accumulation_dtype(p.dtype)
        ),
        g,
        params,
    )
    if materialize:
      scaled = jax.tree.map(_materialized, scaled)
    # Extra arguments (e.g. ``value=`` for optax.contrib.reduce_on_plateau)
    # reach the step optimizer, as optax.chain passes them on.
    step_updates, step_state = step_tx.update(
        scaled, state.step_state, _accumulation_tree(theta), **extra_args
    )
    # The new average is written over the old one, which the sums and Table 1
    # also read: it waits for the buffers computed from them (see _after).
    kf = _after_all(k.astype(jnp.float32), jax.tree.leaves((step_state, new_history)))
    # Computed in the accumulation dtype (at least float32) and stored in the
    # params' dtype: in bfloat16 or float16, k itself (and k + 1) would round,
    # so the average would drift, and k + 1 overflows float16 at k = 65519.
    def average_update(t, a):
      acc = derivative_lib._accumulation_dtype(a.dtype)
      t, a_acc = t.astype(acc), a.astype(acc)
      return ((t + kf.astype(acc) * a_acc) / (kf + 1.0).astype(acc)).astype(a.dtype)

    new_avg = jax.tree.map(average_update, theta, avg)
    new_updates = jax.tree.map(
        lambda u, su, p: (u + su).astype(p.dtype), updates, step_updates, params
    )
    new_state = HomogeneityState(
        count=optax.safe_increment(k),
        running_average=new_avg,
        history=new_history,
        homogeneity=h.astype(jnp.float32),
        similarity=s.astype(jnp.float32),
        lam=lam.astype(jnp.float32),
        step_state=step_state,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_state(opt_state) -> HomogeneityState:
  """Returns the (first) :class:`HomogeneityState` inside a nested optimizer state.

  Works on the state of ``optax.chain``, ``inject_hyperparams``,
  ``apply_if_finite``, ``MultiSteps`` and ``nnx.Optimizer.opt_state``.

  Args:
    opt_state: an optimizer state (any pytree) that holds a ``HomogeneityState``.

  Raises:
    ValueError: ``opt_state`` holds none.
  """
  found = []

  def visit(x):
    if isinstance(x, HomogeneityState):
      found.append(x)
    return x

  jax.tree_util.tree_map(
      visit, opt_state, is_leaf=lambda x: isinstance(x, HomogeneityState)
  )
  if not found:
    raise ValueError("opt_state contains no HomogeneityState (is homax.homogeneity in the chain?).")
  return found[0]


def _value(x):
  # nnx wraps optimizer state leaves in Variables; read their value with
  # `get_value()` (flax >= 0.12 deprecates `.value`), else `.value`.
  if isinstance(x, jax.Array):
    return x
  get_value = getattr(x, "get_value", None)
  if callable(get_value):
    return get_value()
  return getattr(x, "value", x)


def metrics(opt_state) -> dict[str, jax.Array]:
  r"""Reads the homogeneity metrics from an optimizer state.

  Returns a dict with ``"similarity"`` (:math:`S` of the last step),
  ``"homogeneity"`` (:math:`H`), ``"lambda"`` (:math:`\lambda` of the last
  step) and ``"count"`` (steps taken). Jit-able; use it inside a training step
  to log per-step values, e.g. as the output of a ``lax.scan``.

  Args:
    opt_state: an optimizer state holding a ``HomogeneityState`` (see
      :func:`find_state`).

  Example:
    >>> import jax.numpy as jnp, optax, homax
    >>> tx = optax.chain(optax.adam(1e-2), homax.homogeneity(1e-2))
    >>> state = tx.init({"w": jnp.ones(2)})
    >>> sorted(homax.metrics(state))
    ['count', 'homogeneity', 'lambda', 'similarity']
  """
  st = find_state(opt_state)
  return {
      "similarity": _value(st.similarity),
      "homogeneity": _value(st.homogeneity),
      "lambda": _value(st.lam),
      "count": _value(st.count),
  }
