r"""The oracle's second look: Richardson extrapolation over a ladder of steps (S11).

A central-difference quotient at the step ``H`` errs by its truncation ``O(H²)`` and by its
round-off, at most ``u h / H`` where ``u`` is the oracle's resolution at the first step
``h``. One step cannot shrink both. Where the first look does not pass, the oracle looks
again at ``2h``, ``4h``, … up to :data:`WIDEST`: for each entry, each pair of neighbouring
steps ``(H, 2H)`` whose quotients agree — to :data:`AGREE`, or within their round-off —
gives Richardson's extrapolation ``(4 D(H) − D(2H)) / 3`` with the resolution

.. math::  u_H = 1.5\, u\, h / H + |D(H) − D(2H)| / 3,

its round-off plus the measured truncation of ``D(H)``, which bounds the extrapolation's.
The entry is judged at the candidate with the smallest resolution: the first look ``D(h)``
with ``u`` plus its own measured truncation ``|D(h) − D(2h)| / 3`` (so that the oracle's
truncation is never reported as the gradient's error), or the pair with the smallest
``u_H`` (so that a gradient too small for ``h`` is resolved at a wider step). Where one
side of a step crosses a kink, a network's oracle gives the one-sided quotient of the other
side, and a pair of those is extrapolated to first order; a pair whose step crosses a kink
on both sides (NaN) or disagrees is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np

__all__ = ["AGREE", "WIDEST", "look_again", "per_step", "richardson", "rungs"]

AGREE = 1e-2
"""A pair of quotients ``D(H)``, ``D(2H)`` is extrapolated where they agree to this fraction
(or within their round-off).

That is a smooth ``O(H²)`` truncation; a kink between ``H`` and ``2H`` leaves the pair out.
"""

WIDEST = 1e-2
"""The widest step of the second look, on the first step's scale: ``1 %`` of ``max(1, |θ_i|)``
for relative steps.

In float64 (``ε = ε_mach^{1/3} ≈ 6e-6``) that is ten doublings; where ``2ε`` is wider
already, the second look takes ``ε`` and ``2ε`` alone.
"""


def rungs(eps: float) -> tuple[float, ...]:
    """The steps of the second look: ``ε, 2ε, 4ε, …`` up to :data:`WIDEST`, at least ``ε``
    and ``2ε``.

    >>> len(rungs(6e-6)), rungs(0.1)
    (11, (0.1, 0.2))
    """
    doublings = max(1, math.floor(math.log2(WIDEST / eps))) if eps < WIDEST else 1
    return tuple(eps * 2.0**j for j in range(doublings + 1))


def per_step(u: float, tree):
    """``u / max(1, |θ_i|)`` per entry of ``tree``: the round-off of a quotient is that of
    the function over its own step ``h_i = ε max(1, |θ_i|)``, and ``u`` is the one at
    ``h = ε`` (S11)."""
    return jax.tree.map(lambda t: u / np.maximum(1.0, np.abs(np.asarray(t, np.float64))), tree)


def richardson(quotients, u, sides=None):
    """The best estimate of every entry from ``quotients`` at the steps ``h, 2h, 4h, …``
    (:func:`rungs`; pytrees of one structure, NaN where a step crosses a kink) and the
    resolution the oracle has there (S11), ``u`` the first look's (a number, or a pytree
    like ``quotients``: per entry): per entry, the candidate with the smallest
    resolution. The first look ``D(h)`` has ``u``, plus its measured truncation
    ``|D(h) − D(2h)| / 3`` where those two agree; a central pair ``(H, 2H)`` that agrees
    (``O(H²)``) gives ``(4 D(H) − D(2H)) / 3`` with ``u_H = 1.5 u h/H + |D(H) − D(2H)| / 3``;
    a pair of one-sided quotients of the same side (``O(H)``; ``sides``, optional pytrees
    like ``quotients``: 0 central, +1 or −1 the side) gives ``2 D(H) − D(2H)`` with
    ``u_H = 5 u h/H + |D(H) − D(2H)|``; a pair of two kinds is not used.

    >>> d = [{"w": np.array([1.0003])}, {"w": np.array([1.0012])}, {"w": np.array([1.0048])}]
    >>> better, resolution = richardson(d, 1e-9)
    >>> float(better["w"][0]), round(float(resolution["w"][0]), 6)
    (1.0003, 0.0003)
    """
    central = jax.tree.map(lambda d: np.zeros(np.shape(d), int), quotients[0])
    sides = [central if s is None else s for s in (sides or [None] * len(quotients))]
    if isinstance(u, int | float | np.floating):
        u = jax.tree.map(lambda d: np.full(np.shape(d), float(u)), quotients[0])

    def look(*args):
        n = len(quotients)
        steps = [np.asarray(d, np.float64) for d in args[:n]]
        kinds, u = [np.asarray(k) for k in args[n : 2 * n]], np.asarray(args[-1], np.float64)
        best, blind = steps[0], u
        for j in range(len(steps) - 1):
            d1, d2, two = steps[j], steps[j + 1], kinds[j] == 0
            usable = np.isfinite(d1) & np.isfinite(d2) & (kinds[j] == kinds[j + 1])
            diff = np.where(usable, np.abs(d1 - d2), np.inf)
            noise = np.where(two, 1.5, 5.0) * u / 2.0**j
            agree = diff <= np.maximum(AGREE * np.abs(d1), noise)
            if j == 0:  # the first look's own truncation, measured
                blind = np.where(agree, u + diff / 3, u)
            u_j = noise + np.where(two, diff / 3, diff)
            take = agree & (u_j < blind)
            extrapolated = np.where(two, (4 * d1 - d2) / 3, 2 * d1 - d2)
            best, blind = np.where(take, extrapolated, best), np.where(take, u_j, blind)
        return best, blind

    pairs = jax.tree.map(look, *quotients, *sides, u)
    pick = lambda i: jax.tree.map(lambda _, p: p[i], quotients[0], pairs)  # noqa: E731
    return pick(0), pick(1)


def look_again(first, quotient_at: Callable, eps: float, u, judge: Callable):
    """The second look (S11): ``judge(numerical, resolutions, looks)`` — a
    :class:`fnn.oracle.GradCheck` — of :func:`richardson` over the quotients ``first`` (at
    ``eps``, central; ``u`` their resolution, a number or per entry) and
    ``quotient_at(step) = (quotients, sides or None)`` at the wider
    :func:`rungs`, one step at a time until the widest or a FAIL (a wider step only lowers
    the resolution: it cannot mend an entry that failed beyond it). ``looks``: how many
    sets of quotients were taken."""
    quotients, sides, result = [first], [None], None
    for step in rungs(eps)[1:]:
        numerical, side = quotient_at(step)
        quotients.append(numerical)
        sides.append(side)
        result = judge(*richardson(quotients, u, sides), len(quotients))
        if result.verdict == "FAIL":
            break
    return result
