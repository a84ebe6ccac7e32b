r"""The oracle's verdict: one tolerance, one pass/fail rule and one report for every check of
a derivative against central differences (S11, S19, S29).

Each entry ``a`` (the derivative under test) against ``b`` (the oracle, central differences
in float64 by default) passes when

.. math::  |a − b| ≤ τ = t\,(|a| + |b|) + r + u,

``t`` the relative threshold of the tested dtype (:data:`THRESHOLDS`), ``r`` the rounding
that dtype allows (``ROUNDING · ε_mach · max |b|``, and for a network's gradient below
float64 ``SPREAD · |g_low − g_64|`` more at each entry: the rounding a correct implementation
makes there, fnn's own reverse-mode gradient in the tested dtype against float64), ``u`` the
oracle's resolution (what its round-off and truncation can hide). Its rule for what it
cannot see, in one sentence:

    An entry is *unresolved* only when the oracle cannot tell it from 0
    (``|a| + |b| ≤ 4u``), the gradient's own tolerance is below ``u``, and ``u`` exceeds
    ``FLOOR = 1e-5`` times the largest ``|b|`` — an error the oracle cannot see could then
    matter next to the gradient's own scale; below that floor such an entry passes.

An entry with a NaN or inf on either side fails, and the report names the first one.
Before :func:`fnn.gradcheck.check_gradient` or :func:`fnn.gradcheck.check_network` fails
an entry or leaves it unresolved, the oracle takes a second look (:mod:`fnn.extrapolation`):
the quotients at ``2h``, ``4h``, … as well, and judges each entry by the candidate with the
smallest resolution: the first look with its own measured truncation, or Richardson's
extrapolation of two neighbouring quotients that agree, whose round-off shrinks as the step
grows — so that the oracle's own truncation error is never reported as the gradient's, nor
a gradient too small for the first step left unresolved.
Gradients, directional derivatives and Hessian-vector products are all judged here and all
reported as a :class:`GradCheck`; :mod:`fnn.gradcheck` computes the oracle's side.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn._checks import check_tolerances
from fnn._report import report_lines
from fnn.numerical import check_same_structure, check_tree, first_nonfinite, relative_error
from fnn.numerical import resolution as oracle_resolution

__all__ = [
    "FLOOR",
    "ORACLE",
    "RESOLVED",
    "ROUNDING",
    "SPREAD",
    "THRESHOLDS",
    "GradCheck",
    "LeafError",
    "compare",
]

THRESHOLDS = {"float64": 1e-6, "float32": 1e-3, "float16": 1e-1, "bfloat16": 1e-1}
"""The relative threshold ``t``, by the dtype of the derivative under test.

A float32 gradient judged by a float64 oracle must agree to 0.1 %: a 1 % error (×1.01) in
one entry fails.
"""
ROUNDING = 6.0
"""The factor of the rounding a correct gradient carries, ``r = ROUNDING · ε_mach · max|b|``.

Measured on 300 random float32 networks (every activation, loss and method, against the
float64 gradient): the worst entry was 3.5 ``ε_mach · max|b|``, the 99th percentile 2.9. It
cannot be larger: a 1 % error in an entry of ``1e-4 · max|b|`` is only
8.4 ``ε_mach · max|b|``.
"""
SPREAD = 2.0
"""Below float64 a network's ``r`` grows by ``SPREAD · |g_low − g_64|`` at each entry.

``|g_low − g_64|`` is fnn's own reverse-mode gradient in the tested dtype against float64:
up to ~17 ``ε_mach · max|b|`` in saturated or tiny-weight float32 networks, small where the
problem is well conditioned, so those entries keep the ``r`` above.
"""
ORACLE = "float64"
"""The oracle's dtype by default: float64, whatever the gradient's dtype."""
RESOLVED = 4.0
"""The oracle tells an entry from 0 when ``|a| + |b| > RESOLVED · u``.

Then ×2, 0 and −1 on it all exceed ``τ`` (as long as ``r`` is below ``u``, which is when it
matters).
"""
FLOOR = 1e-5
"""An error the oracle cannot see matters only above ``FLOOR · max|b|``.

That is ten times below the smallest entry whose ×2, ×0 or −1 the power experiment requires
caught (``1e-4 · max|b|``).
"""


class LeafError(NamedTuple):
    """One leaf of a :class:`GradCheck` (S11, S19): the relative error of its worst entry
    (the one furthest past, or closest to, its tolerance; 0 where both numbers are below the
    oracle's resolution), the median relative error of its resolved entries, and how many
    entries failed, were unresolved or crossed a kink."""

    path: str
    """The leaf's path in the pytree (``"['params'][0]['W']"``)."""
    max_error: float
    """The relative error of the leaf's worst entry (0 if below the oracle's resolution)."""
    median_error: float
    """The median relative error of the leaf's resolved entries."""
    worst_index: tuple[int, ...]
    """The index of the leaf's worst entry."""
    kinks: int
    """How many of the leaf's entries crossed a kink (left out)."""
    failed: int = 0
    """How many of the leaf's entries failed."""
    unresolved: int = 0
    """How many of the leaf's entries were unresolved."""
    size: int = 0
    """The number of the leaf's entries."""


class GradCheck(NamedTuple):
    """The report of every check (S11, S19, S29): a gradient, directional derivatives, a
    Hessian-vector product, a VJP or JVP (``kind`` says which).

    ``passed`` only if no entry failed and none was unresolved (kinks are left out). The
    worst entry is the one with the largest ``|a − b| / τ`` (``worst_ratio``; above 1 it
    failed); ``max_error`` is ITS relative error ``|a − b| / (|a| + |b|)`` — of the two
    printed numbers ``worst_hand`` and ``worst_numerical`` — or 0 where both are below the
    oracle's resolution. ``nonfinite`` names the first NaN or inf entry ("" if none).
    ``min_detectable`` (directional checks) is the smallest relative error of the whole
    gradient some direction fails; ``step`` and ``kinks_crossed`` (HVP checks) the step
    along ``v`` and how many pre-activations or residuals ``θ ± h v`` moves across a kink
    (then the quotient is no derivative: the check fails).
    """

    passed: bool
    """Whether no entry failed and none was unresolved (kinks left out)."""
    max_error: float
    """The worst entry's relative error ``|a − b| / (|a| + |b|)`` (0 below the resolution)."""
    median_error: float
    """The median relative error of the resolved entries."""
    threshold: float
    """The relative threshold ``t`` the entries were judged with."""
    worst_path: str
    """The path of the leaf that holds the worst entry."""
    worst_index: tuple[int, ...]
    """The worst entry's index within its leaf."""
    worst_hand: float
    """The worst entry's value under test, ``a``."""
    worst_numerical: float
    """The worst entry's oracle value, ``b``."""
    leaves: tuple[LeafError, ...]
    """One :class:`LeafError` per leaf."""
    num_kinks: int
    """How many entries crossed a kink (left out)."""
    num_evaluations: int
    """How many evaluations the oracle cost."""
    dtype: str
    """The dtype of the derivative under test."""
    atol: float = 0.0
    """The rounding ``r`` granted to the derivative under test."""
    num_failed: int = 0
    """How many entries failed."""
    num_unresolved: int = 0
    """How many entries were unresolved."""
    oracle_dtype: str = ""
    """The dtype the oracle computed in."""
    worst_ratio: float = 0.0
    """The worst entry's ``|a − b| / τ``: above 1 it failed."""
    resolution: float = 0.0
    """The oracle's resolution ``u``."""
    kind: str = "gradient"
    """What was checked: a gradient, directional derivatives, an HVP, a VJP or a JVP."""
    nonfinite: str = ""
    """The first NaN or inf entry, named (``""`` if none)."""
    min_detectable: float = math.nan
    """Directional checks: the smallest relative error of the gradient some direction fails."""
    step: float = math.nan
    """HVP checks: the step ``h`` along ``v``."""
    kinks_crossed: int = 0
    """HVP checks: how many pre-activations or residuals ``θ ± h v`` moves across a kink."""
    second_look: bool = False
    """Whether the oracle took a second look at wider steps before judging."""

    @property
    def verdict(self) -> str:
        """``"PASS"``, ``"FAIL"`` (an entry failed, or an HVP step crossed a kink) or
        ``"UNRESOLVED"`` (none failed, some entry is below the oracle's resolution where
        that matters)."""
        if self.num_failed or self.kinks_crossed:
            return "FAIL"
        return "UNRESOLVED" if self.num_unresolved else "PASS"

    def __str__(self) -> str:
        return "\n".join(report_lines(self, floor=FLOOR, resolved=RESOLVED))


def default_threshold(dtype: str, threshold: float | None) -> float:
    """``threshold``, or the default of ``dtype`` (``THRESHOLDS``, 1e-2 for any other)."""
    return THRESHOLDS.get(dtype, 1e-2) if threshold is None else threshold


class Verdicts(NamedTuple):
    """Entry by entry: relative error (0 below the resolution), failed, unresolved,
    ``|a − b| / τ`` (−1 at kinks, inf where not finite)."""

    relative: np.ndarray
    failed: np.ndarray
    unresolved: np.ndarray
    ratio: np.ndarray


def judge(a, b, kinks, threshold: float, atol: float, u: float, scale: float) -> Verdicts:
    """Every entry's verdict: failed if not finite or ``|a − b| > τ = t (|a| + |b|) + r + u``;
    unresolved if not failed, ``|a| + |b| ≤ 4u``, ``t (|a| + |b|) + r < u`` and
    ``u > FLOOR · scale`` (``scale`` = max |b|), unless both are exactly 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    a0, b0 = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
    diff, size = np.abs(a0 - b0), np.abs(a0) + np.abs(b0)
    granted = threshold * size + atol
    tolerance = granted + u
    below = size <= RESOLVED * u
    relative = np.where(finite, np.where(below, 0.0, relative_error(a0, b0)), np.nan)
    failed = ~finite | (~kinks & (diff > tolerance))
    blind = u > FLOOR * scale
    unresolved = ~kinks & ~failed & below & (granted < u) & (size > 0) & blind
    ratio = np.divide(diff, tolerance, out=np.where(diff > 0, np.inf, 0.0), where=tolerance > 0)
    ratio = np.where(finite, np.where(kinks, -1.0, ratio), np.inf)
    return Verdicts(relative, failed, unresolved, ratio)


class Entries(NamedTuple):
    """What :func:`report` judges: the leaves' paths, the tested and the oracle's numbers
    (float64 NumPy), where kinks are crossed, and the dtypes of both sides."""

    paths: list
    hand: list
    oracle: list
    kinks: list
    dtype: str
    oracle_dtype: str


def entries(grad, numerical, kinks=None, dtype: str | None = None) -> Entries:
    """The :class:`Entries` of two pytrees of one structure (``kinks`` optional)."""
    flat = jax.tree_util.tree_flatten_with_path(grad)[0]
    hand = [np.asarray(a, np.float64) for _, a in flat]
    oracle = [np.asarray(b, np.float64) for b in jax.tree.leaves(numerical)]
    crossed = (
        [np.zeros(h.shape, bool) for h in hand]
        if kinks is None
        else [np.asarray(k, bool) for k in jax.tree.leaves(kinks)]
    )
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    dtype = check_tree(grad, "grad") if dtype is None else dtype
    return Entries(paths, hand, oracle, crossed, dtype, check_tree(numerical, "numerical"))


def largest(e: Entries) -> float:
    """max |b| over the finite entries of the oracle that cross no kink."""
    return max(
        float(np.abs(np.where(np.isfinite(b) & ~k, b, 0.0)).max(initial=0.0))
        for b, k in zip(e.oracle, e.kinks)
    )


def report(
    e: Entries,
    *,
    threshold,
    atol,
    u: float,
    num_evaluations: int = 0,
    spread=None,
    second=None,
    **extra,
) -> GradCheck:
    """Judge every entry of ``e`` and gather the :class:`GradCheck` (``spread``: each leaf's
    finite ``|g_low − g_64|``, added ``SPREAD`` times to the default ``r``; ``second``: each
    leaf's numbers and resolutions after a second look, instead of ``e.oracle`` and ``u``;
    ``extra``: its ``kind``, ``min_detectable``, ``step``, ``kinks_crossed``)."""
    scale = largest(e)
    threshold = default_threshold(e.dtype, threshold)
    if atol is not None:
        spread = None  # an r given is the whole r
    atol = ROUNDING * float(jnp.finfo(e.dtype).eps) * scale if atol is None else atol
    allowed = [atol + SPREAD * d for d in spread] if spread else [atol] * len(e.hand)
    leaves, kept, worst = [], [], (-1.0, "", (), math.nan, math.nan, 0.0)
    for n, (path, a, b, k, r) in enumerate(zip(e.paths, e.hand, e.oracle, e.kinks, allowed)):
        w = u
        if second is not None:  # the second look's numbers, each with its own resolution
            b, w = second[0][n], second[1][n]
        v = judge(a, b, k, threshold, r, w, scale)
        resolved = ~k & ~v.unresolved
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(v.ratio), v.ratio.shape))
        leaf = LeafError(path, float(v.relative[idx]) if v.ratio[idx] >= 0 else 0.0,
                         _median(v.relative[resolved & np.isfinite(v.relative)]), idx,
                         int(k.sum()), int(v.failed.sum()), int(v.unresolved.sum()),
                         int(k.size))  # fmt: skip
        leaves.append(leaf)
        kept.append(v.relative[resolved & np.isfinite(v.relative)])
        if v.ratio[idx] > worst[0]:
            worst = (float(v.ratio[idx]), path, idx, float(a[idx]), float(b[idx]), leaf.max_error)
    failed = sum(leaf.failed for leaf in leaves)
    unresolved = sum(leaf.unresolved for leaf in leaves)
    ratio, path, idx, a, b, max_error = worst
    nonfinite = _describe(e)
    passed = failed == 0 and unresolved == 0 and not extra.get("kinks_crossed", 0)
    return GradCheck(
        passed, max_error if ratio >= 0 else 0.0, _median(np.concatenate(kept)), threshold,
        path, idx, a, b, tuple(leaves), sum(leaf.kinks for leaf in leaves), num_evaluations,
        e.dtype, float(atol), failed, unresolved, e.oracle_dtype, max(ratio, 0.0), u,
        nonfinite=nonfinite, **extra,
    )  # fmt: skip


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else 0.0


def _describe(e: Entries) -> str:
    """``hand ['w'][1] = nan``: the first non-finite entry, the hand side's first; or ""."""
    for side, leaves in (("hand", e.hand), ("numerical", e.oracle)):
        bad = first_nonfinite(dict(zip(range(len(leaves)), leaves)))
        if bad is not None:
            path, index, value = bad
            return f"{side} {e.paths[int(path.strip('[]'))]}{list(index)} = {value}"
    return ""


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
    spread=None,
    second=None,
) -> GradCheck:
    """Compare ``grad`` with a ``numerical`` gradient leaf by leaf, leaving out the entries
    marked in ``kinks`` — the verdict of :func:`fnn.gradcheck.check_gradient`, for a
    numerical gradient computed once and compared with several hand-written ones (S19).

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
      spread: optional pytree like ``grad``, a correct implementation's rounding per entry
        (``|g_low − g_64|``, finite): ``r`` grows by ``SPREAD`` times it unless ``atol`` is given.
      second: optional pair ``(numerical, resolutions)`` of pytrees like ``grad``: the
        oracle's numbers and resolutions per entry after a second look
        (:func:`fnn.extrapolation.richardson`), instead of ``numerical`` and ``u``.

    Returns:
      A :class:`GradCheck`; an entry that is NaN or inf on either side fails, named in
      ``nonfinite``.

    Raises:
      ValueError: the pytrees do not match, a negative or non-finite ``threshold``,
        ``atol`` or ``resolution``.
      TypeError: a leaf of ``grad`` or ``numerical`` that is not floating.

    >>> compare({"w": np.array([1.0, np.nan])}, {"w": np.array([1.0, 2.0])}).nonfinite
    "hand ['w'][1] = nan"
    """
    check_same_structure(grad, numerical)
    if kinks is not None:
        check_same_structure(kinks, numerical, "kinks")
    check_tolerances(threshold=threshold, atol=atol, resolution=resolution)
    e = entries(grad, numerical, kinks)
    if resolution is None:
        value = float(value)
        resolution = oracle_resolution(e.oracle_dtype, value if math.isfinite(value) else 0.0)
    if spread is not None:
        check_same_structure(spread, numerical, "spread")
        spread = [np.asarray(d, np.float64) for d in jax.tree.leaves(spread)]
    if second is not None:
        for tree, name in zip(second, ("second look's numerical", "second look's resolutions")):
            check_same_structure(tree, numerical, name)
        second = [[np.asarray(d, np.float64) for d in jax.tree.leaves(t)] for t in second]
    return report(e, threshold=threshold, atol=atol, u=float(resolution),
                  num_evaluations=num_evaluations, spread=spread, second=second,
                  second_look=second is not None)  # fmt: skip
