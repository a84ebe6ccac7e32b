r"""Numerical differentiation by central differences: the formula, its error, its cost (S11).

The lecture's naive way to a gradient:

.. math::  \frac{∂L}{∂θ_i} = \frac{L(θ + h_i e_i) − L(θ − h_i e_i)}{2 h_i} + O(h_i^2)

* :func:`central_difference` — the formula for every entry of any pytree (parameters, an
  input ``x``, or both), the ``2P`` evaluations batched by ``jax.vmap``; the step is
  ``h_i = ε · max(1, |θ_i|)`` with ``ε = ε_mach^{1/3}`` of the dtype unless given.
* :func:`error_vs_eps` — the V-curve: truncation ``O(ε²)`` for large ε, round-off
  ``≈ ε_mach |L| / ε`` for small ε, in any dtype.
* :func:`compare_cost` — ``2P`` loss evaluations, counted, against one backward pass.
* :func:`precision` and :func:`upcast` evaluate the oracle in float64,
  :func:`check_finite_tree` refuses a NaN or inf among its inputs; the oracle's second look
  at wider steps is :mod:`fnn.extrapolation`.

The gradient checks built on this live in :mod:`fnn.gradcheck`. Nothing here calls
``jax.grad`` or the backprop engines: this module is the oracle they are checked against.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnn._checks import check_positive_int

__all__ = [
    "EPS_SWEEP",
    "Cost",
    "Sweep",
    "central_difference",
    "check_eps",
    "check_finite_tree",
    "check_same_structure",
    "check_scalar",
    "check_tree",
    "compare_cost",
    "default_eps",
    "error_vs_eps",
    "first_nonfinite",
    "oracle_dtype",
    "precision",
    "relative_error",
    "resolution",
    "upcast",
]

EPS_SWEEP = tuple(float(e) for e in np.logspace(-1, -12, 34))
"""The V-curve's ε: 1e-1 … 1e-12, three points per decade."""


def default_eps(dtype) -> float:
    """The base step ``ε = ε_mach^{1/3}`` of ``dtype`` (S11): it balances the truncation
    error ``ε² |L‴| / 6`` against the round-off ``ε_mach |L| / ε``.

    >>> round(default_eps(jnp.float32), 4)
    0.0049
    """
    return float(jnp.finfo(dtype).eps) ** (1 / 3)


def resolution(dtype, value) -> float:
    """The smallest derivative central differences at the default ε resolve, for a function
    whose value is ``value``: ``10 ε_mach^{2/3} max(1, |value|)`` (S11).

    At ``ε = ε_mach^{1/3}`` the round-off ``κ ε_mach |f| / ε`` and the truncation error are
    both of order ``ε_mach^{2/3}``; κ = 10 allows for the rounding accumulated over the
    operations of one evaluation of ``f`` (each is accurate to a few ε_mach |f|, not one).
    """
    return 10 * float(jnp.finfo(dtype).eps) ** (2 / 3) * max(1.0, abs(float(value)))


def relative_error(a, b, tiny: float | None = None) -> np.ndarray:
    """Element-wise ``|a − b| / max(|a| + |b|, tiny)`` (S11, S19), computed in float64.

    ``tiny`` (default: the smallest normal float64) keeps ``0 / 0`` at 0.

    >>> relative_error(np.array([1.0, 0.0]), np.array([1.1, 0.0])).round(4)
    array([0.0476, 0.    ])
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    tiny = np.finfo(np.float64).tiny if tiny is None else tiny
    return np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), tiny)


def check_same_structure(grad, tree, name: str = "grad") -> None:
    """Raise ``ValueError`` unless ``grad`` has the pytree structure and leaf shapes of
    ``tree``, naming the first leaf that differs (S11, S19)."""
    if jax.tree.structure(grad) != jax.tree.structure(tree):
        raise ValueError(
            f"{name} must have the pytree structure of the point θ, "
            f"{jax.tree.structure(tree)}; got {jax.tree.structure(grad)}."
        )
    for (path, g), t in zip(jax.tree_util.tree_flatten_with_path(grad)[0], jax.tree.leaves(tree)):
        if np.shape(g) != np.shape(t):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must have shape {np.shape(t)}; "
                f"got {np.shape(g)}."
            )


def check_tree(tree, name: str = "tree") -> str:
    """Raise unless ``tree`` holds floating arrays of one dtype; return that dtype's name
    (S11: central differences need a floating point to perturb).

    Raises:
      ValueError: no arrays. TypeError: a leaf that is not floating, or mixed dtypes.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got {tree!r}.")
    for path, leaf in leaves:
        if not jnp.issubdtype(_dtype(leaf), jnp.floating):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} must be a floating array; "
                f"got dtype {_dtype(leaf)}."
            )
    dtypes = sorted({_dtype(leaf).name for _, leaf in leaves})
    if len(dtypes) > 1:
        raise TypeError(f"{name} must hold arrays of one floating dtype; got {dtypes}.")
    return dtypes[0]


def _dtype(leaf) -> np.dtype:
    """An array's own dtype (a NumPy float64 array stays float64 where x64 is off); JAX's
    for a Python number."""
    dtype = getattr(leaf, "dtype", None)
    return np.dtype(dtype) if dtype is not None else jnp.dtype(jnp.result_type(leaf))


def check_eps(eps, dtype) -> float:
    """``eps``, or :func:`default_eps` of ``dtype`` for ``None`` (S11).

    Raises:
      ValueError: ``eps`` is not a positive finite number.
    """
    if eps is None:
        return default_eps(dtype)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)):
        raise ValueError(f"eps must be a positive finite number or None; got {eps!r}.")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number; got {eps!r}.")
    return float(eps)


def steps(theta: jax.Array, eps, relative: bool = True) -> jax.Array:
    """The steps ``h_i = ε · max(1, |θ_i|)``, or ``h_i = ε`` if not ``relative`` (S11)."""
    scale = jnp.maximum(1, jnp.abs(theta)) if relative else jnp.ones_like(theta)
    return (eps * scale).astype(theta.dtype)


def at_plus_minus(fn: Callable, theta, h, unravel, chunk_size: int = 256):
    """``fn`` at ``θ ± h_i e_i`` for every i: an array ``(P, 2, *fn's shape)`` — its leading
    axes count the evaluations — and the steps taken, ``(θ_i + h_i) − (θ_i − h_i)``: exact
    in floating point, unlike ``2h_i``, except where ``h_i`` is below the spacing of
    ``θ_i`` and ``θ ± h == θ``; there ``2h_i`` (and a quotient of 0, not 0/0).

    ``jax.vmap`` over ``chunk_size`` directions at a time (memory ``chunk_size × P``),
    ``jax.lax.map`` over the chunks. Called inside ``jax.jit`` (S11).
    """
    plus, minus = theta + h, theta - h

    def at(i):
        e_i = jnp.arange(theta.size) == i
        # θ + hᵢeᵢ and θ − hᵢeᵢ as a batch of two: one copy of fn in the compiled program.
        pair = jnp.stack([jnp.where(e_i, plus, theta), jnp.where(e_i, minus, theta)])
        return jax.vmap(lambda t: fn(unravel(t)))(pair)

    P = theta.size
    n = max(1, min(chunk_size, P))
    if n == P:  # one chunk: no loop
        values = jax.vmap(at)(jnp.arange(P))
    else:
        chunks = (jnp.arange(-(-P // n) * n) % P).reshape(-1, n)  # the last one padded
        values = jax.lax.map(jax.vmap(at), chunks)
        values = values.reshape(-1, *values.shape[2:])[:P]
    taken = plus - minus
    return values, jnp.where(taken > 0, taken, 2 * h)


def check_scalar(shape, name: str = "f") -> None:
    """Raise ``ValueError`` unless ``shape``, that of ``f``'s value, is a scalar's (S11);
    called while tracing, so the message comes before XLA sees a wrong reshape."""
    if tuple(shape) != ():
        raise ValueError(f"{name} must return a scalar loss, shape (); got shape {tuple(shape)}.")


@functools.partial(jax.jit, static_argnames=("f", "relative", "chunk_size"))
def _central_difference(f, tree, eps, relative, chunk_size):
    theta, unravel = ravel_pytree(tree)
    values, taken = at_plus_minus(f, theta, steps(theta, eps, relative), unravel, chunk_size)
    check_scalar(values.shape[2:])
    return unravel((values[:, 0] - values[:, 1]) / taken)


def central_difference(
    f: Callable, tree, eps: float | None = None, *, relative: bool = True, chunk_size: int = 256
):
    r"""The gradient of a scalar ``f`` at ``tree`` by central differences (S11).

    .. math::  \hat g_i = \frac{f(θ + h_i e_i) − f(θ − h_i e_i)}{(θ_i + h_i) − (θ_i − h_i)},
               \qquad h_i = ε \max(1, |θ_i|)

    ``2P`` evaluations of ``f`` for the ``P`` entries of ``tree``, vectorised by ``jax.vmap``
    over ``chunk_size`` basis directions at a time, compiled once per ``f`` (``eps`` is not
    static: a sweep over ε reuses the compilation). ``jax.jit`` and ``jax.vmap`` accept it.

    Args:
      f: a scalar function of one pytree of floating arrays (all of one dtype); hashable.
      tree: where to differentiate (parameters, an input, or a dict of both).
      eps: the base step ε (default :func:`default_eps` of the tree's dtype).
      relative: scale the step by ``max(1, |θ_i|)``; ``False`` uses ``h_i = ε``.
      chunk_size: basis directions evaluated per vectorised batch.

    Returns:
      A pytree like ``tree``: the numerical gradient.

    Raises:
      ValueError: ``eps`` is not positive and finite, ``tree`` is empty, ``chunk_size`` is
        not a positive integer, or ``f`` does not return a scalar.
      TypeError: a leaf of ``tree`` is not floating, or the leaves' dtypes differ.

    >>> g = central_difference(lambda t: jnp.sum(t["w"] ** 3), {"w": jnp.array([1.0, 2.0])})
    >>> [round(float(v), 2) for v in g["w"]]
    [3.0, 12.0]
    """
    eps = check_eps(eps, check_tree(tree))
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    return _central_difference(f, tree, eps, relative, chunk_size)


# ---------------------------------------------------------------------------------------
# The error against ε (the V-curve) and the cost.
# ---------------------------------------------------------------------------------------


class Sweep(NamedTuple):
    """:func:`error_vs_eps`: for each ε, the median and the worst relative error (S11)."""

    eps: tuple[float, ...]
    """The steps ε swept, in the order given."""
    median_error: tuple[float, ...]
    """The median relative error over the parameters, one per ε."""
    max_error: tuple[float, ...]
    """The worst relative error over the parameters, one per ε."""
    dtype: str
    """The dtype the sweep ran in (that of ``tree``)."""


def error_vs_eps(
    f: Callable, tree, reference, epsilons=EPS_SWEEP, *, relative: bool = False
) -> Sweep:
    """Central differences at every ε of ``epsilons`` against a ``reference`` gradient
    (S11): the error falls as ``O(ε²)`` (truncation) until the round-off
    ``≈ ε_mach |f| / ε`` takes over — a V in log-log axes, its bottom near ``ε_mach^{1/3}``.

    The sweep runs in the dtype of ``tree`` (compiled once); give ``reference`` in float64.
    ``relative=False`` by default: the plain step ``h = ε`` of the lecture's formula.

    Raises:
      ValueError: ``reference`` does not match ``tree``, or an ε is not positive and finite.
    """
    check_same_structure(reference, tree, "reference")
    dtype = check_tree(tree)
    ref = ravel_pytree(jax.tree.map(lambda r: np.asarray(r, np.float64), reference))[0]
    medians, maxima = [], []
    for eps in epsilons:
        numerical = central_difference(f, tree, check_eps(eps, dtype), relative=relative)
        err = relative_error(ref, ravel_pytree(numerical)[0])
        medians.append(float(np.median(err)))
        maxima.append(float(err.max()))
    return Sweep(tuple(float(e) for e in epsilons), tuple(medians), tuple(maxima), dtype)


class Cost(NamedTuple):
    """:func:`compare_cost`: central differences against one forward + backward pass (S11)."""

    num_params: int
    """The number of parameters ``P``."""
    fd_evaluations: int
    """The loss evaluations central differences took (two per parameter)."""
    fd_seconds: float
    """The best time of central differences over ``repeats`` runs, in seconds."""
    backward_seconds: float
    """The best time of one forward and backward pass over ``repeats`` runs, in seconds."""

    @property
    def ratio(self) -> float:
        """How many times faster the backward pass was: ``fd_seconds / backward_seconds``."""
        return self.fd_seconds / self.backward_seconds

    def __str__(self) -> str:
        return (
            f"P = {self.num_params}: central differences {self.fd_evaluations} loss "
            f"evaluations in {self.fd_seconds * 1e3:.2f} ms; one backward pass "
            f"{self.backward_seconds * 1e3:.2f} ms ({self.ratio:.0f}× faster)"
        )


def _best_time(fn: Callable, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile first, then time
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def compare_cost(f: Callable, tree, grad_fn: Callable, *, repeats: int = 3) -> Cost:
    """Count and time central differences of ``f`` against one backward pass
    ``grad_fn(tree)`` (S11), both compiled; the best of ``repeats`` runs.

    The evaluations are counted from the batch that central differences evaluate (its
    shape, ``(P, 2)``), not assumed.

    Raises:
      ValueError: ``repeats`` is not a positive integer; as :func:`central_difference`.
    """
    repeats = check_positive_int(repeats, "repeats")
    eps = check_eps(None, check_tree(tree))
    theta, unravel = ravel_pytree(tree)
    batch = jax.eval_shape(lambda: at_plus_minus(f, theta, steps(theta, eps), unravel)[0])
    backward = jax.jit(grad_fn)
    return Cost(
        int(theta.size),
        math.prod(batch.shape),
        _best_time(lambda: central_difference(f, tree), repeats),
        _best_time(lambda: backward(tree), repeats),
    )


# ---------------------------------------------------------------------------------------
# The oracle's arithmetic: finite inputs and float64 evaluation.
# ---------------------------------------------------------------------------------------


def first_nonfinite(tree) -> tuple[str, tuple[int, ...], float] | None:
    """The first NaN or inf entry of ``tree`` in flattening order — ``(path, index,
    value)`` — or ``None`` (S11: a check never passes what it cannot compare)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        values = np.asarray(leaf)
        if values.dtype.kind not in "fc" or np.all(np.isfinite(values)):
            continue
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        return jax.tree_util.keystr(path), index, values[index].item()
    return None


def check_finite_tree(tree, name: str) -> None:
    """``ValueError`` naming the first NaN or inf entry of an input of a check (S11).

    >>> check_finite_tree({"w": np.array([1.0, np.nan])}, "params")
    Traceback (most recent call last):
    ValueError: params['w'] must be finite; got nan at index (1,).
    """
    bad = first_nonfinite(tree)
    if bad is not None:
        path, index, value = bad
        raise ValueError(f"{name}{path} must be finite; got {value} at index {index}.")


def oracle_dtype(oracle, dtype: str) -> str:
    """The oracle's dtype: ``oracle`` (at least as wide as ``dtype``), or ``dtype`` itself
    for ``None``.

    Raises:
      ValueError: ``oracle`` is not a floating dtype name, or narrower than ``dtype``.
    """
    if oracle is None:
        return dtype
    try:
        wanted = jnp.dtype(oracle)
    except TypeError:
        wanted = None
    if wanted is None or not jnp.issubdtype(wanted, jnp.floating):
        raise ValueError(f"oracle must be a floating dtype name such as 'float64', or None; "
                         f"got {oracle!r}.")  # fmt: skip
    if wanted.itemsize < jnp.dtype(dtype).itemsize:
        raise ValueError(
            f"oracle must be at least as precise as the point's dtype {dtype}; got {oracle!r}."
        )
    return wanted.name


@contextlib.contextmanager
def precision(dtype: str):
    """Arrays of ``dtype`` inside: ``jax.enable_x64(True)`` for float64 (a no-op where x64 is
    already on); every result must leave as NumPy, since outside the context JAX would
    truncate it to float32 again."""
    if jnp.dtype(dtype).itemsize >= 8:
        with jax.enable_x64(True):
            yield
    else:
        yield


def upcast(tree, dtype: str):
    """Every floating leaf of ``tree`` as ``dtype`` (exactly: a wider dtype holds every
    narrower value); integer leaves (labels) unchanged. Call it inside :func:`precision`."""

    def cast(leaf):
        leaf = np.asarray(leaf)
        return jnp.asarray(leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf)

    return jax.tree.map(cast, tree)
