r"""The oracle's second look: Richardson extrapolation over a ladder of steps (S11).

A central-difference quotient at the step ``H`` errs by its truncation ``O(H²)`` and by its
round-off, at most ``u h / H`` where ``u`` is the oracle's resolution at the first step
``h``. One step cannot shrink both. Where the first look does not pass, the oracle looks
again at ``2h``, ``4h``, … up to :data:`WIDEST`: for each entry, each pair of neighbouring
steps ``(H, 2H)`` whose quotients agree — to :data:`AGREE`, or within their round-off —
gives Richardson's extrapolation ``(4 D(H) − D(2H)) / 3`` with the resolution

.. math::  u_H = 1.5\, u\, h / H + |D(H) − D(2H)| / 3,

its round-off plus the measured truncation of ``D(H)``, which bounds the extrapolation's.
The entry is judged at the pair with the smallest ``u_H``: at ``(h, 2h)`` the oracle's own
truncation is never reported as the gradient's error, at wider steps a gradient too small
for ``h`` is resolved. A pair whose step crosses a kink (its quotient NaN) or disagrees is
skipped; an entry with no usable pair keeps its first look.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import jax
import numpy as np

__all__ = ["AGREE", "WIDEST", "look_again", "richardson", "rungs"]

AGREE = 1e-2
"""A pair of quotients ``D(H)``, ``D(2H)`` is extrapolated where they agree to this fraction
(or within their round-off).

That is a smooth ``O(H²)`` truncation; a kink between ``H`` and ``2H`` leaves the pair out.
"""

WIDEST = 1e-2
"""The widest step of the second look, relative like the first: ``1 %`` of ``max(1, |θ_i|)``.

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


def richardson(quotients, u: float):
    """The best estimate of every entry from ``quotients`` at the steps ``h, 2h, 4h, …``
    (:func:`rungs`; pytrees of one structure, NaN where a step crosses a kink) and the
    resolution the oracle has there (S11): per entry, of the pairs ``(H, 2H)`` that agree,
    the one with the smallest ``u_H = 1.5 u h/H + |D(H) − D(2H)| / 3`` and its
    ``(4 D(H) − D(2H)) / 3``; ``D(h)`` and ``u`` where no pair agrees.

    >>> d = [{"w": np.array([1.0003])}, {"w": np.array([1.0012])}]
    >>> better, resolution = richardson(d, 1e-9)
    >>> float(better["w"][0]), round(float(resolution["w"][0]), 6)
    (1.0, 0.0003)
    """

    def look(*steps):
        steps = [np.asarray(d, np.float64) for d in steps]
        best, blind = steps[0], np.full(steps[0].shape, np.inf)
        for j, (d1, d2) in enumerate(itertools.pairwise(steps)):
            noise = 1.5 * u / 2.0**j
            diff = np.where(np.isfinite(d1) & np.isfinite(d2), np.abs(d1 - d2), np.inf)
            u_j = noise + diff / 3
            take = (diff <= np.maximum(AGREE * np.abs(d1), noise)) & (u_j < blind)
            best, blind = np.where(take, (4 * d1 - d2) / 3, best), np.where(take, u_j, blind)
        return best, np.where(np.isfinite(blind), blind, u)

    pairs = jax.tree.map(look, *quotients)
    pick = lambda i: jax.tree.map(lambda _, p: p[i], quotients[0], pairs)  # noqa: E731
    return pick(0), pick(1)


def look_again(first, quotient_at: Callable, eps: float, u: float, judge: Callable):
    """The second look (S11): ``judge(numerical, resolutions, looks)`` — a
    :class:`fnn.oracle.GradCheck` — of :func:`richardson` over the quotients ``first`` (at
    ``eps``) and ``quotient_at(step)`` at the wider :func:`rungs`, one step at a time until
    the widest or a FAIL (a wider step only lowers the resolution: it cannot mend an entry
    that failed beyond it). ``looks``: how many sets of quotients were taken."""
    quotients, result = [first], None
    for step in rungs(eps)[1:]:
        quotients.append(quotient_at(step))
        result = judge(*richardson(quotients, u), len(quotients))
        if result.verdict == "FAIL":
            break
    return result
