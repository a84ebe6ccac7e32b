r"""Gradient checks: a hand-written gradient against central differences (S11, S19).

* :func:`check_gradient` — any scalar JAX function of any pytree and any gradient of it,
  entry by entry. The oracle, central differences, runs in float64 by default (the point θ
  upcast, under ``jax.enable_x64`` where x64 is off), so a float32 gradient is judged
  against a reference some 10⁴ times more accurate than itself. Each entry ``a`` (hand)
  against ``b`` (oracle) passes when

  .. math::  |a − b| ≤ τ = t\,(|a| + |b|) + r + u,

  ``t`` the relative threshold of the gradient's dtype (``THRESHOLDS``), ``r`` the rounding
  the gradient's own dtype allows (``ROUNDING · ε_mach · max |b|``), ``u`` the oracle's
  resolution (:func:`fnn.numerical.resolution` of the oracle's dtype at ``f(θ)``). An entry
  that the oracle cannot tell from 0 (``|a| + |b| ≤ 4u``) while ``u`` exceeds what the
  gradient itself is granted (``t (|a| + |b|) + r < u``) is *unresolved*, never a pass.
  A :class:`GradCheck` report prints itself; its relative errors are those of the numbers it
  prints.
* :func:`check_directional` — the cheap check, ``2k`` evaluations instead of ``2P``:
  ``(L(θ + hv) − L(θ − hv)) / 2h`` against ``⟨∇L, v⟩`` for k random unit directions v.
* :func:`kink_crossings`, :func:`check_network` — a network's ``grads = {"params", "x"}``
  checked with its batch loss; where ``θ ± h`` moves a pre-activation across a kink of
  ReLU, leaky/parametric ReLU or hard tanh, or an L1 residual across 0, the entry is
  reported as "kink crossed" instead of as a false failure.

Split from :mod:`fnn.numerical` (the formula, its error and its cost) to keep both short.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnn import activations, losses
from fnn._checks import check_input, check_key, check_positive_int
from fnn.network import MLP, forward
from fnn.numerical import (
    at_plus_minus,
    central_difference,
    check_eps,
    check_same_structure,
    check_scalar,
    check_tree,
    relative_error,
    steps,
)
from fnn.numerical import resolution as _resolution  # `resolution` is an argument here

__all__ = [
    "DIRECTIONS",
    "ORACLE",
    "ROUNDING",
    "THRESHOLDS",
    "DirectionalCheck",
    "GradCheck",
    "HVPCheck",
    "LeafError",
    "NetworkDifference",
    "check_directional",
    "check_gradient",
    "check_hvp",
    "check_network",
    "compare",
    "kink_crossings",
    "network_central_difference",
    "network_loss",
]

# The relative threshold t, by the dtype of the gradient under test. A float32 gradient
# judged by a float64 oracle must agree to 0.1 %: a 1 % error (×1.01) in one entry fails.
THRESHOLDS = {"float64": 1e-6, "float32": 1e-3, "float16": 1e-1, "bfloat16": 1e-1}
# r = ROUNDING · ε_mach(gradient) · max|b|: the rounding a correct gradient carries.
# Measured on 300 random float32 networks (every activation, loss and method, against the
# float64 gradient): the worst entry was 3.5 ε_mach · max|b|, the 99th percentile 2.9.
ROUNDING = 6.0
# The oracle's dtype by default: float64, whatever the gradient's dtype.
ORACLE = "float64"
# The default number of directions of check_directional, from a measurement (see there).
DIRECTIONS = 16
# The oracle tells an entry from 0 when |a| + |b| > RESOLVED · u: then ×2, 0 and −1 on it
# all exceed τ (as long as r is below u, which is when it matters).
RESOLVED = 4.0


class LeafError(NamedTuple):
    """One leaf of a :class:`GradCheck` (S11, S19): the relative error of its worst entry
    (the one furthest past, or closest to, its tolerance), the median relative error of its
    resolved entries, and how many entries failed, were unresolved or crossed a kink."""

    path: str
    max_error: float
    median_error: float
    worst_index: tuple[int, ...]
    kinks: int
    failed: int = 0
    unresolved: int = 0
    size: int = 0


class GradCheck(NamedTuple):
    """The report of a gradient check (S11, S19).

    ``passed`` only if no entry failed and none was unresolved (kinks are left out).
    The worst entry is the one with the largest ``|a − b| / τ`` (``worst_ratio``; above 1
    it failed); ``max_error`` is ITS relative error ``|a − b| / (|a| + |b|)``, the error of
    the two printed numbers ``worst_hand`` and ``worst_numerical``. ``median_error`` is the
    median relative error over the resolved entries. Every tolerance is
    ``τ = threshold (|a| + |b|) + atol + resolution`` (``r`` and ``u`` of the module);
    ``dtype`` is the gradient's dtype and ``oracle_dtype`` the dtype the central
    differences were computed in.
    """

    passed: bool
    max_error: float
    median_error: float
    threshold: float
    worst_path: str
    worst_index: tuple[int, ...]
    worst_hand: float
    worst_numerical: float
    leaves: tuple[LeafError, ...]
    num_kinks: int
    num_evaluations: int
    dtype: str
    atol: float = 0.0
    num_failed: int = 0
    num_unresolved: int = 0
    oracle_dtype: str = ""
    worst_ratio: float = 0.0
    resolution: float = 0.0

    @property
    def verdict(self) -> str:
        """``"PASS"``, ``"FAIL"`` (some entry failed) or ``"UNRESOLVED"`` (none failed, some
        entry is below the oracle's resolution)."""
        if self.num_failed:
            return "FAIL"
        return "UNRESOLVED" if self.num_unresolved else "PASS"

    def __str__(self) -> str:
        judged = sum(leaf.size for leaf in self.leaves) - self.num_kinks
        lines = [
            f"gradient check {self.verdict} ({self.dtype} gradient against {self.oracle_dtype} "
            f"central differences): {self.num_failed} of {judged} entries failed, "
            f"{self.num_unresolved} unresolved; {self.num_evaluations} loss evaluations",
            f"  tolerance per entry: |hand − numerical| ≤ {self.threshold:.0e} (|hand| + "
            f"|numerical|) + {self.atol:.2e} (rounding of the gradient) + {self.resolution:.2e} "
            f"(resolution of the oracle)",
        ]
        if self.worst_path or self.worst_index:
            diff = abs(self.worst_hand - self.worst_numerical)
            lines.append(
                f"  worst entry {self.worst_path}{list(self.worst_index)}: hand "
                f"{self.worst_hand:.10g}, numerical {self.worst_numerical:.10g}: relative "
                f"error {self.max_error:.2e}, |difference| {diff:.2e} = "
                f"{self.worst_ratio:.2g} × its tolerance"
            )
        if self.num_unresolved:
            lines.append(
                f"  unresolved: {self.num_unresolved} entries with |hand| + |numerical| ≤ "
                f"{RESOLVED:g} × {self.resolution:.1e}, the oracle's resolution, and a tolerance "
                f"below it: not passed"
            )
        if self.num_kinks:
            lines.append(f"  kink crossed at {self.num_kinks} entries: left out of the verdict")
        lines.append(f"  {'leaf':<22} {'worst rel. error':>16} {'median':>9}")
        for leaf in self.leaves:
            notes = [
                f"{n} {what}"
                for n, what in (
                    (leaf.failed, "failed"),
                    (leaf.unresolved, "unresolved"),
                    (leaf.kinks, "kink crossed"),
                )
                if n
            ]
            lines.append(
                f"  {leaf.path:<22} {leaf.max_error:16.2e} {leaf.median_error:9.2e}"
                + (f"  {', '.join(notes)}" if notes else "")
            )
        return "\n".join(lines)


def _threshold(dtype: str, threshold: float | None) -> float:
    """``threshold``, or the default of ``dtype`` (``THRESHOLDS``, 1e-2 for any other)."""
    return THRESHOLDS.get(dtype, 1e-2) if threshold is None else threshold


def _check_tolerance(value, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"{name} must be a non-negative finite number or None; got {value!r}.")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number; got {value!r}.")


def _hand_dtype(grad) -> str:
    """The dtype of the gradient under test (``TypeError`` unless floating)."""
    return check_tree(grad, "grad")


class _Verdicts(NamedTuple):
    """Entry by entry: relative error, failed, unresolved, ``|a − b| / τ`` (−1 at kinks)."""

    relative: np.ndarray
    failed: np.ndarray
    unresolved: np.ndarray
    ratio: np.ndarray


def _judge(a, b, kinks, threshold: float, atol: float, u: float) -> _Verdicts:
    """Every entry's verdict: failed if ``|a − b| > τ = t (|a| + |b|) + r + u``; unresolved
    if not failed, ``|a| + |b| ≤ 4u`` and ``t (|a| + |b|) + r < u`` (unless both are exactly
    0: the function did not move at all, and the hand gradient says so)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff, size = np.abs(a - b), np.abs(a) + np.abs(b)
    granted = threshold * size + atol
    tolerance = granted + u
    relative = relative_error(a, b)
    failed = ~kinks & (diff > tolerance)
    unresolved = ~kinks & ~failed & (size <= RESOLVED * u) & (granted < u) & (size > 0)
    ratio = np.divide(diff, tolerance, out=np.where(diff > 0, np.inf, 0.0), where=tolerance > 0)
    return _Verdicts(relative, failed, unresolved, np.where(kinks, -1.0, ratio))


def compare(
    grad,
    numerical,
    *,
    kinks=None,
    value: float = 0.0,
    threshold: float | None = None,
    atol: float | None = None,
    resolution: float | None = None,
    num_evaluations: int = 0,
) -> GradCheck:
    """Compare ``grad`` with a ``numerical`` gradient leaf by leaf, leaving out the entries
    marked in ``kinks`` — the verdict of :func:`check_gradient`, for a numerical gradient
    computed once and compared with several hand-written ones (S19).

    Args:
      grad, numerical: pytrees of one structure; ``numerical``'s dtype is the oracle's
        (it sets the resolution ``u``), ``grad``'s sets ``t`` and ``r``.
      kinks: optional bool pytree like them, True where a kink is crossed.
      value: the function's value at θ, for the oracle's resolution ``u``.
      threshold: the relative threshold ``t`` (default ``THRESHOLDS`` of ``grad``'s dtype).
      atol: ``r``, the rounding granted to the gradient (default
        ``ROUNDING · ε_mach(grad) · max|numerical|``).
      resolution: ``u``, the oracle's resolution (default
        :func:`fnn.numerical.resolution` of ``numerical``'s dtype at ``value``).
      num_evaluations: how many evaluations ``numerical`` cost, for the report.

    Raises:
      ValueError: the pytrees do not match, a negative or non-finite ``threshold``,
        ``atol`` or ``resolution``.
      TypeError: a leaf of ``grad`` or ``numerical`` that is not floating.
    """
    check_same_structure(grad, numerical)
    if kinks is not None:
        check_same_structure(kinks, numerical, "kinks")
    _check_tolerance(threshold, "threshold")
    _check_tolerance(atol, "atol")
    _check_tolerance(resolution, "resolution")
    dtype = _hand_dtype(grad)
    oracle_dtype = check_tree(numerical, "numerical")
    threshold = _threshold(dtype, threshold)
    u = _resolution(oracle_dtype, value) if resolution is None else float(resolution)
    if kinks is None:
        kinks = jax.tree.map(lambda g: np.zeros(np.shape(g), bool), grad)
    flat = jax.tree_util.tree_flatten_with_path(grad)[0]
    hand = [np.asarray(a, np.float64) for _, a in flat]
    oracle = [np.asarray(b, np.float64) for b in jax.tree.leaves(numerical)]
    crossed = [np.asarray(k, bool) for k in jax.tree.leaves(kinks)]
    if atol is None:
        scale = max((float(np.abs(b[~k]).max(initial=0.0)) for b, k in zip(oracle, crossed)))
        atol = ROUNDING * float(jnp.finfo(dtype).eps) * scale
    leaves, kept, worst = [], [], (-1.0, "", (), math.nan, math.nan, math.nan)
    failed = unresolved = 0
    for (path, _), a, b, k in zip(flat, hand, oracle, crossed):
        v = _judge(a, b, k, threshold, atol, u)
        resolved = ~k & ~v.unresolved
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(v.ratio), v.ratio.shape))
        leaf = LeafError(
            jax.tree_util.keystr(path),
            float(v.relative[idx]) if not k[idx] else 0.0,
            float(np.median(v.relative[resolved])) if np.any(resolved) else 0.0,
            idx,
            int(k.sum()),
            int(v.failed.sum()),
            int(v.unresolved.sum()),
            int(k.size),
        )
        leaves.append(leaf)
        kept.append(v.relative[resolved])
        failed, unresolved = failed + leaf.failed, unresolved + leaf.unresolved
        if v.ratio[idx] > worst[0]:
            worst = (float(v.ratio[idx]), leaf.path, idx, float(a[idx]), float(b[idx]),
                     leaf.max_error)  # fmt: skip
    errors = np.concatenate(kept)
    median = float(np.median(errors)) if errors.size else 0.0
    num_kinks = sum(leaf.kinks for leaf in leaves)
    ratio, path, idx, a, b, max_error = worst
    return GradCheck(
        failed == 0 and unresolved == 0, max_error if ratio >= 0 else 0.0, median, threshold,
        path, idx, a, b, tuple(leaves), num_kinks, num_evaluations, dtype, float(atol),
        failed, unresolved, oracle_dtype, max(ratio, 0.0), u,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# The oracle's precision: float64 even where jax_enable_x64 is off.
# ---------------------------------------------------------------------------------------


def _check_oracle(oracle, dtype: str) -> str:
    """The oracle's dtype: ``oracle`` (at least as wide as ``dtype``), or ``dtype`` itself
    for ``None``."""
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
def _precision(dtype: str):
    """Arrays of ``dtype`` inside: ``jax.enable_x64(True)`` for float64 (a no-op where x64 is
    already on); every result must leave as NumPy, since outside the context JAX would
    truncate it to float32 again."""
    if jnp.dtype(dtype).itemsize >= 8:
        with jax.enable_x64(True):
            yield
    else:
        yield


def _upcast(tree, dtype: str):
    """Every floating leaf of ``tree`` as ``dtype`` (exactly: a wider dtype holds every
    narrower value); integer leaves (labels) unchanged. Call it inside :func:`_precision`."""

    def cast(leaf):
        leaf = np.asarray(leaf)
        return jnp.asarray(leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf)

    return jax.tree.map(cast, tree)


def _to_numpy(tree):
    return jax.tree.map(np.asarray, tree)


def check_gradient(
    f: Callable,
    tree,
    grad,
    *,
    eps: float | None = None,
    relative: bool = True,
    threshold: float | None = None,
    atol: float | None = None,
    kinks=None,
    oracle: str | None = ORACLE,
) -> GradCheck:
    """Check a hand-written gradient ``grad`` of ``f`` at ``tree`` against central
    differences, entry by entry (S11, S19).

    Args:
      f: a scalar JAX function of one pytree (it is traced, in the oracle's dtype).
      tree: the point θ.
      grad: the gradient to check, a pytree like ``tree``.
      eps, relative: the step, as in :func:`fnn.numerical.central_difference` (default
        ``ε_mach^{1/3}`` of the oracle's dtype).
      threshold: the relative threshold ``t`` (default ``THRESHOLDS`` of ``grad``'s dtype).
      atol: ``r``, the rounding granted to ``grad`` (default ``ROUNDING · ε_mach · max|b|``).
      kinks: optional bool pytree like ``tree``, True where a kink is crossed
        (:func:`kink_crossings`): those entries are reported, not judged.
      oracle: the dtype of the central differences: ``"float64"`` (default: ``tree`` is
        upcast, exactly, and ``f`` traced in float64 even where ``jax_enable_x64`` is off),
        or ``None`` for ``tree``'s own dtype. An ``f`` that computes in a narrower dtype
        whatever its input gets the oracle of ``tree``'s dtype; the report says which.

    Returns:
      A :class:`GradCheck`; ``print`` it for a readable report.

    Raises:
      ValueError: ``grad`` or ``kinks`` does not match ``tree``, ``eps`` is not positive
        and finite, a bad ``threshold``, ``atol`` or ``oracle``.
      TypeError: a leaf of ``tree`` or ``grad`` that is not floating.

    >>> f = lambda t: jnp.sum(jnp.sin(t["w"]))
    >>> t = {"w": jnp.array([0.5, 1.0])}
    >>> check_gradient(f, t, {"w": jnp.cos(t["w"])}).passed
    True
    >>> check_gradient(f, t, {"w": jnp.cos(t["w"]) * jnp.array([1.0, 1.01])}).passed
    False
    """
    check_same_structure(grad, tree)
    _hand_dtype(grad)
    if kinks is not None:
        check_same_structure(kinks, tree, "kinks")
    dtype = check_tree(tree)
    target = _check_oracle(oracle, dtype)
    numerical, value = _oracle_differences(f, tree, eps, relative, target, dtype)
    return compare(
        grad,
        numerical,
        kinks=kinks,
        value=value,
        threshold=threshold,
        atol=atol,
        num_evaluations=2 * _num_entries(tree),
    )


def _oracle_differences(f, tree, eps, relative, target: str, dtype: str):
    """Central differences of ``f`` in ``target`` (NumPy leaves) and ``f(θ)``; in ``dtype``
    instead where ``f`` does not compute in ``target``."""
    with _precision(target):
        upcast = _upcast(tree, target)
        value = np.asarray(f(upcast))
        if value.dtype == np.dtype(target) or target == dtype:
            numerical = central_difference(f, upcast, eps, relative=relative)
            return _to_numpy(numerical), value
    numerical = central_difference(f, tree, eps, relative=relative)  # f stays narrower
    return _to_numpy(numerical), np.asarray(f(tree))


class DirectionalCheck(NamedTuple):
    """:func:`check_directional`: ``⟨∇L, v⟩`` against ``(L(θ+hv) − L(θ−hv)) / 2h`` per v
    (S11). ``errors`` are the relative errors of the printed pairs ``hand``/``numerical``;
    ``min_detectable`` the smallest relative error of the whole gradient (``a = (1 + ρ) b``)
    that some direction would have failed."""

    passed: bool
    errors: tuple[float, ...]
    hand: tuple[float, ...]
    numerical: tuple[float, ...]
    threshold: float
    min_detectable: float = math.nan
    unresolved: int = 0
    oracle_dtype: str = ""

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else ("FAIL" if not self.unresolved else "UNRESOLVED")
        return (
            f"directional check {verdict} ({self.oracle_dtype} oracle): {len(self.errors)} "
            f"directions, worst relative error {max(self.errors):.2e} (threshold "
            f"{self.threshold:.0e}); {self.unresolved} unresolved; the smallest relative "
            f"error of the whole gradient it detects: {self.min_detectable:.1e}"
        )


def check_directional(
    f: Callable,
    tree,
    grad,
    key: jax.Array,
    k: int = DIRECTIONS,
    *,
    eps: float | None = None,
    threshold: float | None = None,
    atol: float | None = None,
    oracle: str | None = ORACLE,
) -> DirectionalCheck:
    r"""Check ``grad`` along ``k`` random unit directions ``v`` (S11): ``2k`` evaluations
    of ``f`` instead of ``2P``.

    .. math::  \frac{f(θ + h v) − f(θ − h v)}{2h} \quad\text{vs}\quad ⟨∇f, v⟩,
               \qquad h = ε \max(1, \max_i |θ_i|)

    judged like one entry of :func:`check_gradient` (the same ``t``, ``r``, ``u`` and
    float64 oracle). What it can see: an error ``e`` of the gradient only through
    ``⟨e, v⟩``. The smallest error it detects: a relative error ρ of the whole gradient
    (``a = (1 + ρ) b``) fails once ``ρ > min_detectable = min_k (2t|b_k| + r + u) /
    ((1 − t)|b_k|)``, reported, about ``2t`` (2e-3 for a float32 gradient, 2e-6 for
    float64). An error in ONE of P entries reaches ``⟨e, v⟩`` diluted by ``v_j ~ 1/√P``
    and can be missed; measured on 200 random 1 → 2 → 1 tanh networks in float32 (7
    parameters), one entry 10 % wrong (``scripts/gradcheck_power.py --directional``):

    =====  ===========  =====================================
    k      missed       missed, entry ≥ 0.1 × the largest (148)
    =====  ===========  =====================================
    1      18.5 %       6.1 %
    2      10.5 %       0 %
    4      5.5 %        0 %
    8      2.5 %        0 %
    16     0.5 %        0 %
    =====  ===========  =====================================

    (against float32 central differences, as before the float64 oracle: 47, 35, 24, 18 and
    15 % missed). ``k = 16`` by default (``DIRECTIONS``), the smallest of these to miss at
    most 1 %. It is a smoke test: only :func:`check_gradient` localises an error and
    bounds it entry by entry.

    Args:
      f, tree, grad: as in :func:`check_gradient`.
      key: a PRNG key for the directions.
      k: the number of directions (default ``DIRECTIONS``).
      eps: the base step (default ``ε_mach^{1/3}`` of the oracle's dtype).
      threshold, atol, oracle: as in :func:`check_gradient`; ``r`` uses ``‖b‖₂``.

    Raises:
      ValueError: ``grad`` does not match ``tree``, ``k < 1``, a bad ``eps``, ``threshold``,
        ``atol`` or ``oracle``, or an ``f`` that does not return a scalar.
      TypeError: ``key`` is not a PRNG key.
    """
    check_key(key)
    check_same_structure(grad, tree)
    k = check_positive_int(k, "k")
    _check_tolerance(threshold, "threshold")
    _check_tolerance(atol, "atol")
    grad_dtype = _hand_dtype(grad)
    dtype = check_tree(tree)
    target = _check_oracle(oracle, dtype)
    with _precision(target):
        upcast, grad64 = _upcast(tree, target), _upcast(grad, target)
        if np.asarray(f(upcast)).dtype != np.dtype(target):
            target, upcast, grad64 = dtype, tree, grad  # f computes narrower: its own dtype
        eps = check_eps(eps, target)
        out = _directional(f, k, upcast, grad64, key, eps)
        numerical, hand, value, norm = (np.asarray(a, np.float64) for a in out)
    threshold = _threshold(grad_dtype, threshold)
    u = _resolution(target, value)
    if atol is None:
        atol = ROUNDING * float(jnp.finfo(grad_dtype).eps) * float(norm)
    kinks = np.zeros(k, bool)
    v = _judge(hand, numerical, kinks, threshold, atol, u)
    size = np.abs(numerical)
    rho = np.divide(2 * threshold * size + atol + u, (1 - threshold) * size,
                    out=np.full_like(size, np.inf), where=size > 0)  # fmt: skip
    return DirectionalCheck(
        not (v.failed.any() or v.unresolved.any()), tuple(v.relative.tolist()),
        tuple(hand.tolist()), tuple(numerical.tolist()), threshold, float(rho.min()),
        int(v.unresolved.sum()), target,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("f", "k"))
def _directional(f, k, tree, grad, key, eps):
    """The k quotients along random unit directions v, the k products ⟨grad, v⟩, f(θ),
    ‖grad‖₂."""
    theta, unravel = ravel_pytree(tree)
    v = jax.random.normal(key, (k, theta.size), theta.dtype)
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    value = f(tree)
    check_scalar(jnp.shape(value))
    h = steps(jnp.max(jnp.abs(theta)), eps)
    plus = jax.vmap(lambda d: f(unravel(theta + h * d)))(v)
    minus = jax.vmap(lambda d: f(unravel(theta - h * d)))(v)
    g = ravel_pytree(grad)[0].astype(theta.dtype)
    return (plus - minus) / (2 * h), v @ g, value, jnp.linalg.norm(g)


# ---------------------------------------------------------------------------------------
# Networks: the loss as a function of {"params", "x"}, and where θ ± h crosses a kink.
# ---------------------------------------------------------------------------------------


def network_loss(net: MLP, params, x, y, loss: str = "l2") -> jax.Array:
    """The loss ``L(nn_θ(x), y)`` of one example, or the batch loss
    ``(1/B) Σ_b L(nn_θ(x_b), y_b)`` — as ``fnn.value_and_grad`` defines it (S11, S19).

    Raises:
      ValueError: unknown ``loss``; ``params``/``x`` that do not fit ``net``; a ``y`` that is
        not a target for the outputs (:func:`fnn.losses.check_target`: its shape always,
        labels and probabilities where ``y`` is concrete).
    """
    y_hat, _ = forward(net, params, x)
    return _batch_loss(losses.get(loss), y_hat, y)


def _batch_loss(loss_fn: losses.Loss, y_hat: jax.Array, y) -> jax.Array:
    losses.check_target(loss_fn, y_hat.shape, y)
    fn = loss_fn.fn
    return fn(y_hat, y) if y_hat.ndim == 1 else jnp.mean(jax.vmap(fn)(y_hat, y))


def _kink_sides(net: MLP, loss: str, y_hat: jax.Array, cache, y) -> jax.Array:
    """One code per pre-activation and L1 residual: ``Σ_k sign(a − k)`` over its kinks k.
    Equal codes mean the same smooth piece (or the same kink point)."""
    sides = [jnp.zeros((0,), y_hat.dtype)]
    for layer_cache, f in zip(cache, net.activations):
        sides += [jnp.sign(layer_cache.a - k).ravel() for k in activations.get(f).kinks]
    sides += [jnp.sign(y_hat - y - k).ravel() for k in losses.get(loss).kinks]
    return jnp.concatenate(sides)


def kink_crossings(
    net: MLP,
    params,
    x,
    y,
    loss: str = "l2",
    *,
    eps: float | None = None,
    oracle: str | None = ORACLE,
):
    """For each entry of ``{"params": params, "x": x}``: does ``θ ± h`` move any
    pre-activation across a kink of its activation (``Activation.kinks``), or an L1 residual
    ``ŷ − y`` across 0? (S11) Where it does, the central difference straddles a jump of the
    derivative and agrees with neither one-sided derivative — a kink, not a bug.

    Returns:
      A bool pytree ``{"params": …, "x": …}``, True where a kink is crossed.

    Raises:
      ValueError: as :func:`network_central_difference`.
    """
    return network_central_difference(net, params, x, y, loss, eps=eps, oracle=oracle).kinks


class NetworkDifference(NamedTuple):
    """:func:`network_central_difference`: the numerical ``{"params", "x"}`` gradient of a
    network's loss (NumPy arrays of ``oracle_dtype``), where a kink was crossed, the loss,
    and the evaluations counted (S11)."""

    numerical: dict
    kinks: dict
    value: float
    num_evaluations: int
    oracle_dtype: str = ""


def network_central_difference(
    net: MLP,
    params,
    x,
    y,
    loss: str = "l2",
    *,
    eps: float | None = None,
    oracle: str | None = ORACLE,
) -> NetworkDifference:
    """Central differences of :func:`network_loss` w.r.t. ``{"params": params, "x": x}``,
    and :func:`kink_crossings` from the same batch of ``2P`` evaluations (S11) — in float64
    by default (``oracle``, as in :func:`check_gradient`; ``params``, ``x`` and a vector
    ``y`` upcast exactly), so that a float32 gradient meets a float64 reference.

    Raises:
      ValueError: unknown ``loss``; an output activation the loss does not take
        (:func:`fnn.losses.check_output_activation`); bad ``eps`` or ``oracle``;
        ``params``/``x`` that do not fit ``net``; a ``y`` that is not a target for the
        outputs.
      TypeError: ``params`` or ``x`` not floating, or of different dtypes.
    """
    loss_fn = losses.get(loss)
    losses.check_output_activation(loss_fn, net.activations[-1])
    check_input(net, x)
    # Here, where y is still concrete: its labels' range as well (inside jit, shape only).
    losses.check_target(loss_fn, (*np.shape(x)[:-1], net.out_features), y)
    tree = {"params": params, "x": x}
    target = _check_oracle(oracle, check_tree(tree))
    with _precision(target):
        params, x, y = _upcast((params, x, y), target)
        eps = check_eps(eps, target)
        numerical, crossed, value = _network_differences(net, loss, params, x, y, eps)
        numerical, crossed, value = np.asarray(numerical), np.asarray(crossed), float(value)
    numerical = _unravel_like(tree, numerical, np.asarray)
    kinks = _unravel_like(tree, crossed, np.asarray)
    return NetworkDifference(numerical, kinks, value, 2 * _num_entries(tree), target)


def _num_entries(tree) -> int:
    """P, the number of entries of a pytree of arrays."""
    return sum(np.size(leaf) for leaf in jax.tree.leaves(tree))


def _unravel_like(tree, flat: np.ndarray, to_array: Callable):
    """``flat``, of ``tree``'s P entries in ``ravel_pytree`` order, as a pytree like ``tree``;
    split on the host, so that the compiled program need not slice every leaf out."""
    leaves, treedef = jax.tree.flatten(tree)
    ends = np.cumsum([np.size(leaf) for leaf in leaves])[:-1]
    parts = np.split(flat, ends)
    return jax.tree.unflatten(
        treedef, [to_array(p.reshape(np.shape(leaf))) for p, leaf in zip(parts, leaves)]
    )


@functools.partial(jax.jit, static_argnames=("net", "loss"))
def _network_differences(net, loss, params, x, y, eps):
    """The P quotients of the loss and the P kink crossings, flat, and the loss at θ."""
    tree = {"params": params, "x": x}
    theta, unravel = ravel_pytree(tree)
    loss_fn = losses.get(loss)

    def loss_and_sides(t):  # one forward pass for both
        y_hat, cache = forward(net, t["params"], t["x"])
        value = _batch_loss(loss_fn, y_hat, y)
        return jnp.concatenate([value[None], _kink_sides(net, loss, y_hat, cache, y)])

    values, taken = at_plus_minus(loss_and_sides, theta, steps(theta, eps), unravel)
    at_theta = loss_and_sides(tree)
    numerical = (values[:, 0, 0] - values[:, 1, 0]) / taken
    crossed = jnp.any(values[:, :, 1:] != at_theta[1:], axis=(1, 2))
    return numerical, crossed, at_theta[0]


def check_network(
    net: MLP,
    params,
    x,
    y,
    grads,
    loss: str = "l2",
    *,
    eps: float | None = None,
    threshold: float | None = None,
    atol: float | None = None,
    oracle: str | None = ORACLE,
) -> GradCheck:
    """:func:`check_gradient` for a network's ``grads = {"params": …, "x": …}`` (the output
    format of ``fnn.value_and_grad``) with the loss of :func:`network_loss`; the entries whose
    ``θ ± h`` crosses a kink (:func:`kink_crossings`) are reported, not failed (S11, S19).
    The oracle is float64 central differences by default (``oracle``).

    Raises:
      ValueError: ``grads`` does not match ``{"params", "x"}``, unknown ``loss``, an output
        activation the loss does not take (``cross_entropy`` after ``identity``), bad
        ``eps``, ``threshold``, ``atol`` or ``oracle``, ``params``/``x`` that do not fit
        ``net``, a ``y`` that does not fit.
      TypeError: ``params``, ``x`` or ``grads`` not floating.

    >>> net = MLP((1, 1), ("identity",))  # L = (W x + b − y)², at W = 2, b = 0, x = 1, y = 0
    >>> params, x, y = [{"W": jnp.array([[2.0]]), "b": jnp.zeros(1)}], jnp.ones(1), jnp.zeros(1)
    >>> grads = {"params": [{"W": jnp.array([[4.0]]), "b": jnp.array([4.0])}],
    ...          "x": jnp.array([8.0])}
    >>> check_network(net, params, x, y, grads).passed
    True
    """
    check_same_structure(grads, {"params": params, "x": x}, "grads")
    _hand_dtype(grads)
    fd = network_central_difference(net, params, x, y, loss, eps=eps, oracle=oracle)
    return compare(
        grads,
        fd.numerical,
        kinks=fd.kinks,
        value=fd.value,
        threshold=threshold,
        atol=atol,
        num_evaluations=fd.num_evaluations,
    )


# ---------------------------------------------------------------------------------------
# Hessian-vector products (S27, S29; Bishop 5.4.4): against central differences of ∇L.
# ---------------------------------------------------------------------------------------


class HVPCheck(NamedTuple):
    """The report of :func:`check_hvp` (S29): as :class:`GradCheck`, with the step ``h``
    along ``v`` and how many pre-activations (or L1 residuals) ``θ ± h v`` moves across a
    kink (then the quotient is no derivative and the check fails)."""

    passed: bool
    max_error: float
    median_error: float
    threshold: float
    worst_path: str
    worst_index: tuple[int, ...]
    worst_hand: float
    worst_numerical: float
    leaves: tuple[LeafError, ...]
    kinks_crossed: int
    step: float
    dtype: str

    def __str__(self) -> str:
        lines = [
            f"HVP check {'PASS' if self.passed else 'FAIL'} ({self.dtype}): worst relative "
            f"error {self.max_error:.2e} (threshold {self.threshold:.0e}), median "
            f"{self.median_error:.2e}, 2 gradient evaluations at θ ± h v, h = {self.step:.2e}",
            f"  worst entry {self.worst_path}{list(self.worst_index)}: hand "
            f"{self.worst_hand:.10g}, numerical {self.worst_numerical:.10g}",
        ]
        if self.kinks_crossed:
            lines.append(
                f"  θ ± h v crosses a kink at {self.kinks_crossed} pre-activations or residuals: "
                "∇L jumps there, the quotient is no derivative (FAIL; a smaller eps or another v)"
            )
        for leaf in self.leaves:
            lines.append(
                f"  {leaf.path:<22} max {leaf.max_error:.2e}  median {leaf.median_error:.2e}"
            )
        return "\n".join(lines)


@functools.partial(jax.jit, static_argnames=("net", "loss"))
def _gradient_quotient(net, loss, params, x, y, v, eps):
    """``(∇L(θ + h v) − ∇L(θ − h v)) / 2h`` by fnn's backprop, ``h = ε max(1, |θ|∞) / |v|∞``;
    the kink codes at θ and θ ± h v; ``|∇L(θ)|∞``, ``h``."""
    from fnn import backprop  # here, to keep this addition to the module self-contained

    loss_fn = losses.get(loss)
    theta, unravel = ravel_pytree(params)
    direction = ravel_pytree(v)[0].astype(theta.dtype)
    h = eps * jnp.maximum(1, jnp.max(jnp.abs(theta))) / jnp.max(jnp.abs(direction))

    def gradient_and_sides(t):
        p = unravel(t)
        grads = backprop.reverse(net, p, x, y, loss_fn)[1]["params"]
        y_hat, cache = forward(net, p, x)
        return ravel_pytree(grads)[0], _kink_sides(net, loss, y_hat, cache, y)

    g_plus, s_plus = gradient_and_sides(theta + h * direction)
    g_minus, s_minus = gradient_and_sides(theta - h * direction)
    g, sides = gradient_and_sides(theta)
    crossed = jnp.sum((s_plus != sides) | (s_minus != sides))
    quotient = (g_plus - g_minus) / (2 * h)
    return unravel(quotient), crossed, jnp.max(jnp.abs(g)), h


def check_hvp(
    net: MLP,
    params,
    x,
    y,
    v,
    Hv,
    loss: str = "l2",
    *,
    eps: float | None = None,
    threshold: float | None = None,
) -> HVPCheck:
    r"""Check a Hessian-vector product ``Hv`` against central differences of the gradient
    (S27, S29; Bishop 5.4.4), entry by entry as :func:`check_gradient`:

    .. math::  ∇²L\, v ≈ \frac{∇L(θ + h v) − ∇L(θ − h v)}{2h}, \qquad
               h = ε \max(1, \max_i |θ_i|) / \max_i |v_i|

    ``∇L`` is fnn's backpropagation of the batch loss (proven against ``jax.grad``); two
    gradient evaluations, O(h²) truncation error. Where ``θ ± h v`` moves a pre-activation
    across a kink (``Activation.kinks``) or an L1 residual across 0, ``∇L`` jumps and the quotient
    is no derivative: the report counts them and fails.

    Args:
      net, params, x, y, loss: the network and its batch loss, as in ``fnn.value_and_grad``.
      v: the direction, like ``params``.
      Hv: the product to check (``fnn.hvp``'s), like ``params``.
      eps: the base step (default ``ε_mach^{1/3}`` of the dtype).
      threshold: the worst relative error that passes (default :data:`THRESHOLDS`).

    Returns:
      An :class:`HVPCheck`; ``print`` it for the report.

    Raises:
      TypeError: ``net`` is not an ``fnn.MLP``, or an array is not real floating point.
      ValueError: ``params``/``v``/``Hv`` not matching ``net``, bad ``x``/``y``/``eps``, an
        unknown loss, a loss that does not suit the output activation, or ``v = 0``.

    >>> import fnn
    >>> net = MLP((1, 1), ("identity",))  # L = (w x + b − y)²: ∇²L v = [2x², 2x; 2x, 2] v
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> v = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> x, y = jnp.array([3.0]), jnp.zeros(1)
    >>> check_hvp(net, params, x, y, v, fnn.hvp(net, params, x, y, v)).passed
    True
    """
    from fnn import _checks, derivatives  # as in _gradient_quotient

    loss_fn, x, y = derivatives._check_loss_problem(net, params, x, y, loss)
    _checks.check_params(net, v, "v")
    check_same_structure(Hv, params, "Hv")
    dtype = check_tree(params, "params")
    eps = check_eps(eps, dtype)
    if not np.any([np.any(np.asarray(t) != 0) for t in jax.tree.leaves(v)]):
        raise ValueError("v must be a nonzero direction; got all zeros.")
    numerical, crossed, g_max, h = _gradient_quotient(net, loss_fn.name, params, x, y, v, eps)
    v_max = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(v))
    theta_max = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(params))
    # round-off of the quotient: ε_mach |∇L| / h ≈ ε_mach^{2/3} |∇L| |v|∞ / max(1, |θ|∞)
    report = compare(
        Hv, numerical, value=float(g_max) * v_max / max(1.0, theta_max), threshold=threshold
    )
    return HVPCheck(
        report.passed and int(crossed) == 0, report.max_error, report.median_error,
        report.threshold, report.worst_path, report.worst_index, report.worst_hand,
        report.worst_numerical, report.leaves, int(crossed), float(h), report.dtype,
    )  # fmt: skip
