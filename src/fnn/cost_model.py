r"""How many multiply-adds each mode of differentiation costs (S17, S18).

The matrix-chain view: the Jacobian of an MLP is the product

.. math::  J_{nn}(x) = J_{f^{out}} \cdot W^{(N)} \cdot J_{f^{(N-1)}} \cdot W^{(N-1)} \cdots
           J_{f^{(1)}} \cdot W^{(1)},

a chain of matrices whose widths, read from the right, are
``(n₀, n₁, n₁, n₂, n₂, …, n_N, n_N)`` (:func:`chain_dims`). Evaluated right to left
(forward accumulation) every partial product has ``n₀ = D_in`` columns; left to right
(reverse accumulation, backprop) it has ``n_N = M_out`` rows. Forward mode therefore pays
``D_in`` tangent passes and reverse mode ``M_out`` cotangent passes of the same cost each:
the two break even where ``M_out = D_in`` (:func:`crossover`).

The counts are multiply-adds (MACs) of the formulas as fnn evaluates them: ``W @ z`` costs
``M·D``; an elementwise ``J_f · t = f′(a) ⊙ t`` costs ``n`` (``2n`` for softmax, nothing for
the identity); a dense
``J_f`` costs ``n²``. Activation evaluations, transposes and memory traffic are not counted —
they are what the measured times in ``scripts/compare_modes.py`` add on top.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from fnn import activations
from fnn._checks import check_choice, check_net, check_positive_int
from fnn.network import MLP, summary

__all__ = [
    "CHAIN_ORDERS",
    "GRADIENT_METHODS",
    "HESSIAN_METHODS",
    "HVP_METHODS",
    "JACOBIAN_METHODS",
    "chain_dims",
    "chain_macs",
    "choose_method",
    "crossover",
    "gradient_macs",
    "hessian_macs",
    "hvp_macs",
    "jacobian_macs",
    "pass_macs",
]

CHAIN_ORDERS = ("right_to_left", "left_to_right", "optimal")
"""The orders :func:`chain_macs` multiplies a chain of matrices in (``"optimal"``: cheapest)."""
JACOBIAN_METHODS = ("forward", "reverse", "explicit")
"""The ways :func:`jacobian_macs` counts for computing a network's full Jacobian."""
GRADIENT_METHODS = ("forward", "reverse")
"""The ways :func:`gradient_macs` counts for computing the loss gradient."""


def _check_widths(name: str, widths: Sequence) -> None:
    if len(widths) < 2 or not all(w > 0 for w in widths):
        raise ValueError(f"{name} must hold at least two positive widths; got {tuple(widths)}.")


def chain_dims(sizes: Sequence[int]) -> tuple[int, ...]:
    """The widths of the chain ``J_out · Wᴺ · … · J¹ · W¹`` read from the right (S17):
    factor ``k`` maps ``dims[k]`` to ``dims[k+1]``, so ``W¹`` is ``(n₁, n₀)``, ``J¹`` is
    ``(n₁, n₁)``, …

    >>> chain_dims((784, 256, 10))
    (784, 256, 256, 10, 10)
    """
    _check_widths("sizes", sizes)
    dims = [sizes[0]]
    for n in sizes[1:]:
        dims += [n, n]
    return tuple(dims)


def chain_macs(dims: Sequence[float], order: str = "left_to_right") -> float:
    r"""Multiply-adds to multiply out a matrix chain whose factor ``k`` is
    ``(dims[k+1], dims[k])`` (S17, S18).

    ``"right_to_left"`` keeps ``dims[0]`` columns in every partial product (forward),
    ``"left_to_right"`` keeps ``dims[-1]`` rows (reverse, as S17 writes it), ``"optimal"``
    is the cheapest parenthesisation (the classic dynamic programme).

    >>> chain_macs((784, 256, 10), "left_to_right"), chain_macs((784, 256, 10), "right_to_left")
    (2007040, 2007040)
    >>> dims = chain_dims((10, 100, 1, 100, 10))  # a bottleneck: neither end order is best
    >>> [chain_macs(dims, order) for order in ("left_to_right", "right_to_left", "optimal")]
    [222010, 213010, 22210]
    """
    check_choice(order, CHAIN_ORDERS, "order")
    _check_widths("dims", dims)
    k = len(dims) - 1  # number of factors
    if order == "right_to_left":
        return sum(dims[i + 1] * dims[i] * dims[0] for i in range(1, k))
    if order == "left_to_right":
        return sum(dims[-1] * dims[i + 1] * dims[i] for i in range(k - 1))
    # best[i][j]: cheapest product of factors i … j (inclusive), a (dims[j+1], dims[i]) matrix.
    best = [[0] * k for _ in range(k)]
    for span in range(1, k):
        for i in range(k - span):
            j = i + span
            best[i][j] = min(
                best[i][s] + best[s + 1][j] + dims[j + 1] * dims[s + 1] * dims[i]
                for s in range(i, j)
            )
    return best[0][k - 1]


def _per_unit(name: str) -> int:
    # J_f · t: f′(a) ⊙ t for an elementwise f; s ⊙ (t − ⟨s, t⟩) for softmax; the identity's
    # f′ = 1 costs nothing (the compiler drops the multiplication by ones).
    if name == "identity":
        return 0
    return 1 if activations.get(name).elementwise else 2


def _primal(sizes) -> float:
    return sum(m * d for d, m in itertools.pairwise(sizes))


def _pass(sizes, acts) -> float:
    """One JVP (or VJP) through the network given the forward pass: ``W t`` and ``J_f t``."""
    return sum(m * d + _per_unit(f) * m for d, m, f in zip(sizes[:-1], sizes[1:], acts))


def _jacobian(sizes, acts, method) -> float:
    if method == "forward":
        return _primal(sizes) + sizes[0] * _pass(sizes, acts)
    if method == "reverse":
        return _primal(sizes) + sizes[-1] * _pass(sizes, acts)
    return _primal(sizes) + chain_macs(chain_dims(sizes), "left_to_right")


def pass_macs(net: MLP) -> int:
    """MACs of one tangent (or cotangent) pass through ``net`` (S18):
    ``Σᵢ (nᵢ nᵢ₋₁ + cᵢ nᵢ)``."""
    check_net(net)
    return int(_pass(net.sizes, net.activations))


def jacobian_macs(net: MLP, method: str) -> int:
    r"""MACs to compute the full Jacobian ``(M_out, D_in)`` of ``net`` at one example (S18).

    * ``"forward"``: the forward pass, then ``D_in`` tangent passes (a tangent matrix ``I_D``);
    * ``"reverse"``: the forward pass, then ``M_out`` cotangent passes (``I_M``);
    * ``"explicit"``: the forward pass, then the chain of dense ``J_f`` and ``W`` matrices
      multiplied left to right, as S17 writes it.

    Raises:
      TypeError: ``net`` is not an :class:`~fnn.MLP`.
      ValueError: an unknown ``method``.

    >>> net = MLP((784, 256, 256, 10), ("tanh", "tanh", "identity"))
    >>> jacobian_macs(net, "forward") // jacobian_macs(net, "reverse")
    71
    """
    check_net(net)
    check_choice(method, JACOBIAN_METHODS, "method")
    return int(_jacobian(net.sizes, net.activations, method))


def gradient_macs(net: MLP, method: str, batch: int = 1) -> int:
    r"""MACs of the loss gradient w.r.t. all parameters and inputs of a batch (S17, S18).

    * ``"reverse"``: per example the forward pass, one cotangent pass for ``δ`` and the outer
      products ``δ ⊗ z`` (one more ``Σ nᵢ nᵢ₋₁``): about three forward passes.
    * ``"forward"``: per example the forward pass and one tangent pass per parameter and
      per input component, ``(P + D)`` passes: the cost grows with the parameter count P.

    Raises:
      TypeError: ``net`` is not an :class:`~fnn.MLP`.
      ValueError: an unknown ``method``, or a ``batch``
        that is not a positive integer.
    """
    check_net(net)
    check_choice(method, GRADIENT_METHODS, "method")
    batch = check_positive_int(batch, "batch")
    sizes, acts = net.sizes, net.activations
    if method == "reverse":
        return batch * int(2 * _primal(sizes) + _pass(sizes, acts))
    passes = summary(net).num_params + sizes[0]
    return batch * int(_primal(sizes) + passes * _pass(sizes, acts))


def choose_method(net: MLP) -> str:
    """The cheaper method for the full Jacobian of ``net``: ``"forward"`` when
    ``D_in < M_out`` in the cost model, else ``"reverse"`` (S18)."""
    forward, reverse = jacobian_macs(net, "forward"), jacobian_macs(net, "reverse")
    return "forward" if forward < reverse else "reverse"


def crossover(
    hidden: Sequence[int],
    fixed: int,
    vary: str = "output",
    activations: Sequence[str] | None = None,
    methods: tuple[str, str] = ("forward", "reverse"),
    bounds: tuple[float, float] = (1.0, 1e7),
) -> float | None:
    r"""The width at which two modes cost the same full Jacobian (S18).

    The network is ``(fixed, *hidden, w)`` for ``vary="output"`` or ``(w, *hidden, fixed)``
    for ``vary="input"``; the varying width ``w`` where ``jacobian_macs`` of ``methods[0]`` and
    ``methods[1]`` are equal is found by bisection (on a log scale) within ``bounds``. For
    forward vs reverse it is ``w = fixed``: both pay one pass per column or row.

    Args:
      hidden: the hidden widths.
      fixed: the width that stays fixed.
      vary: ``"output"`` or ``"input"``.
      activations: one per layer (default ``tanh`` hidden, ``identity`` output).
      methods: two of ``"forward"``, ``"reverse"``, ``"explicit"``.
      bounds: the search interval for ``w``.

    Returns:
      The crossover width (a float), or ``None`` if the cheaper mode is the same at both ends.

    Raises:
      ValueError: an unknown ``vary`` or method, two equal methods, bad ``bounds`` or widths.

    >>> round(crossover((256, 256), 10, "output"), 6)
    10.0
    """
    if vary not in ("output", "input"):
        raise ValueError(f"vary must be 'output' or 'input'; got {vary!r}.")
    for method in methods:
        check_choice(method, JACOBIAN_METHODS, "method")
    if len(methods) != 2 or methods[0] == methods[1]:
        raise ValueError(f"methods must be two different methods to compare; got {tuple(methods)}.")
    if not (0 < bounds[0] < bounds[1] < math.inf):
        raise ValueError(f"bounds must be (lo, hi) with 0 < lo < hi < inf; got {bounds}.")
    acts = (
        tuple(activations) if activations is not None else ("tanh",) * len(hidden) + ("identity",)
    )
    MLP((fixed, *hidden, fixed), acts)  # validates widths and names

    def gap(w):
        sizes = (fixed, *hidden, w) if vary == "output" else (w, *hidden, fixed)
        return _jacobian(sizes, acts, methods[0]) - _jacobian(sizes, acts, methods[1])

    lo, hi = map(math.log, bounds)
    if gap(math.exp(lo)) * gap(math.exp(hi)) > 0:
        return None
    for _ in range(200):
        mid = (lo + hi) / 2
        if gap(math.exp(lo)) * gap(math.exp(mid)) <= 0:
            hi = mid
        else:
            lo = mid
    return math.exp((lo + hi) / 2)


# ---------------------------------------------------------------------------------------
# Second order (S27, S29): Hessian-vector products and dense Hessians.
# ---------------------------------------------------------------------------------------

HESSIAN_METHODS = ("fwd_over_rev", "rev_over_fwd", "rev_over_rev", "fwd_over_fwd")
"""The four compositions of forward and reverse mode :func:`hessian_macs` counts (S29)."""
HVP_METHODS = ("r_operator", *HESSIAN_METHODS)
"""The ways :func:`hvp_macs` counts: the R-operator and the four compositions (S27, S29)."""


def _over_reverse(sizes, acts) -> tuple[float, float]:
    """Per example: the primal MACs of fnn's reverse engine that a product along v needs, and
    the MACs of one direction v through it (= the R-operator's R-forward and R-backward).
    Layer i > 1 (whose input moves with θ): ``a = W z`` and ``g_prev = δ W`` in the primal;
    ``R{a} = W R{z} + V z`` (2), ``R{∂L/∂W} = R{δ}ᵀ z + δᵀ R{z}`` (2), ``R{g_prev} = R{δ} W +
    δ V`` (2); layer 1 has one term of each of the first two and no ``g_prev``. Per unit:
    ``J_f`` in the primal, ``J_f R{a}``, ``R{g} J_f`` and ``Σ gₖ ∇²fₖ R{a}`` along v."""
    primal = tangent = 0.0
    for i, (d, m, f) in enumerate(zip(sizes[:-1], sizes[1:], acts)):
        later, c = int(i > 0), _per_unit(f)
        primal += (1 + later) * m * d + c * m
        tangent += (2 + 4 * later) * m * d + 3 * c * m
    return primal, tangent


def _over_forward(sizes, acts, num_params: int) -> tuple[float, float]:
    """Per example: fnn's forward-mode gradient (the forward pass, then per parameter
    tangent ``ȧ = W ż + Ẇ z + ḃ``, ``ż = J_f ȧ`` and ``J_L ẏ``), and one direction v through
    it: the product rule doubles every term whose factors both move with θ (``Ẇ`` is a
    constant basis tensor; ``z⁽⁰⁾ = x`` is fixed), ``J_f ȧ`` gains ``f″``."""
    primal = float(_primal(sizes))
    tangent = 0.0
    for i, (d, m, f) in enumerate(zip(sizes[:-1], sizes[1:], acts)):
        later, c = int(i > 0), _per_unit(f)
        primal += num_params * ((1 + later) * m * d + c * m)
        tangent += (1 + later) * m * d + c * m  # the primal's own tangent: R{a}, J_f R{a}
        tangent += num_params * (3 * later * m * d + 3 * c * m)
    primal += num_params * sizes[-1]
    tangent += 2 * num_params * sizes[-1]
    return primal, tangent


def _second_order(net: MLP, composition: str) -> tuple[float, float]:
    if composition in ("r_operator", "fwd_over_rev", "rev_over_rev"):
        return _over_reverse(net.sizes, net.activations)
    return _over_forward(net.sizes, net.activations, summary(net).num_params)


def hvp_macs(net: MLP, method: str = "r_operator", batch: int = 1) -> int:
    r"""MACs of one Hessian-vector product ``∇²θ L · v`` of a batch (S27, S29).

    The product along v of a gradient engine costs its primal pass plus one tangent pass
    through it, where every multiply-add whose two factors both move with θ becomes two
    (product rule). A reverse outer derivative (``rev_over_*``) runs the same linear map
    transposed: the same MACs (it differs in memory, which the count does not see).

    * ``"r_operator"``, ``"fwd_over_rev"``, ``"rev_over_rev"`` — over backprop: per example
      ``3 M₁D₁ + Σ_{i>1} 8 MᵢDᵢ`` plus the units (:func:`_over_reverse`), between 1 and 8/3
      times the gradient's ``3 Σ MᵢDᵢ`` (:func:`gradient_macs`, the input's gradient
      included), depending on how much of the work the first layer holds;
    * ``"fwd_over_fwd"``, ``"rev_over_fwd"`` — over forward mode, one tangent per parameter:
      P times more.

    Raises:
      TypeError: ``net`` is not an :class:`~fnn.MLP`.
      ValueError: an unknown ``method``, or a ``batch``
        that is not a positive integer.

    >>> net = MLP((784, 512, 512, 10), ("tanh", "tanh", "identity"))
    >>> hvp_macs(net, "r_operator") / gradient_macs(net, "reverse")
    1.667...
    """
    check_net(net)
    check_choice(method, HVP_METHODS, "method")
    batch = check_positive_int(batch, "batch")
    primal, tangent = _second_order(net, method)
    return batch * int(primal + tangent)


def hessian_macs(net: MLP, method: str = "fwd_over_rev", batch: int = 1) -> int:
    r"""MACs of the dense ``(P, P)`` Hessian of a batch by one of the four compositions (S29):
    the inner gradient's primal pass once, then one tangent (forward outer) or cotangent
    (reverse outer) pass per parameter, :func:`hvp_macs` without its primal, P times.

    Over backprop that is about ``P`` HVPs; over forward mode ``P²`` passes of one tangent
    per parameter, a factor ~P more.

    Raises:
      ValueError: as :func:`hvp_macs`.

    >>> net = MLP((4, 8, 3), ("tanh", "identity"))
    >>> hessian_macs(net, "fwd_over_fwd") // hessian_macs(net, "fwd_over_rev")  # P = 67
    30
    """
    check_net(net)
    check_choice(method, HESSIAN_METHODS, "method")
    batch = check_positive_int(batch, "batch")
    primal, tangent = _second_order(net, method)
    return batch * int(primal + summary(net).num_params * tangent)
