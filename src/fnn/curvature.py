r"""Curvature of the batch loss: Hessian-vector products, Gauss–Newton products, dense
Hessians (S27, S29), and the diagonals, blocks and K-FAC factors of :mod:`fnn.hessian_backprop`
and :mod:`fnn.gauss_newton` (S28) under one name.

Everything here is about ``L(θ) = (1/B) Σ_b L(nn_θ(x_b), y_b)`` as a function of the
parameters θ (the input x stays fixed), and is a fold of one layer's second-order rules
(:mod:`fnn.layer_curvature`, section "Second order") over the layers, as the first-order
engines are:

* :func:`hvp` — ``∇²θ L · v`` by Pearlmutter's R-operator (Bishop 5.4.6): the forward pass
  pushes ``R{a}, R{z}`` (:func:`fnn.layer_curvature.r_forward`), the backward pass ``R{δ}``
  (:func:`fnn.layer_curvature.r_backward`), seeded at the loss with ``R{∂L/∂ŷ} = H_L R{ŷ}``. One
  forward and one backward pass, batch-first.
* :func:`ggn_vp` — the Gauss–Newton product ``G v = Jᵀ H_L J v`` split at the output ŷ
  (``J = ∂ŷ/∂θ``, ``H_L = ∂²L/∂ŷ²``): the same forward pass gives ``J v = R{ŷ}``, and the
  plain backward pass (:func:`fnn.layer.vjp_batch`) pulls ``H_L J v`` back.
* :func:`hessian` — the dense ``(P, P)`` Hessian by four compositions of forward and
  reverse mode over fnn's OWN first-order engines: the outer derivative is JAX's
  (``jax.linearize`` for forward, ``jax.vjp`` for reverse), the inner gradient is fnn's
  hand-written reverse engine (:func:`fnn.backprop.reverse`) or forward engine
  (:func:`fnn.forward_mode.gradient`). ``"fwd_over_rev"`` is thus ``jax.jacfwd`` of fnn's
  backprop; ``"rev_over_fwd"`` ``jax.jacrev`` of fnn's forward-mode gradient, and so on.
  The same compositions give :func:`hvp` other ``method`` values; the R-operator is
  forward-over-reverse written out by hand.
* :func:`hessian_diagonal`, :func:`hessian_blocks`, :func:`per_example_hessian_diagonal`
  (Hessian backpropagation) and :func:`ggn_diagonal`, :func:`ggn_blocks`,
  :func:`kfac_factors`, :func:`per_example_ggn_diagonal` (backpropagation of a factor of
  ``H_L``), re-exported from their modules.

:func:`hessian` refuses a ``(P, P)`` result above ``max_bytes``, and a forward-mode inner
gradient (one tangent per parameter) above ``max_tangents``, before allocating; both name
:func:`hvp`, which never builds a matrix. The public functions check their input once
(:func:`fnn.value_and_grad`'s checks; ``v`` like ``params``, cast to its dtypes); the
engines check nothing. All are pure and ``jax.jit`` accepts them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fnn import (
    _checks,
    _curvature,
    _scan,
    backprop,
    forward_mode,
    layer,
    layer_curvature,
    losses,
    network,
)
from fnn._curvature import CURVATURE_MAX_BYTES
from fnn.gauss_newton import (
    gauss_newton_bytes,
    ggn_blocks,
    ggn_diagonal,
    kfac_factors,
    per_example_ggn_diagonal,
)
from fnn.hessian_backprop import (
    hessian_backprop_bytes,
    hessian_blocks,
    hessian_diagonal,
    per_example_hessian_diagonal,
)
from fnn.network import MLP, Params

__all__ = [
    "CURVATURE_MAX_BYTES",
    "HESSIAN_METHODS",
    "HVP_METHODS",
    "gauss_newton_bytes",
    "ggn_blocks",
    "ggn_diagonal",
    "ggn_vp",
    "hessian",
    "hessian_backprop_bytes",
    "hessian_blocks",
    "hessian_diagonal",
    "hvp",
    "kfac_factors",
    "per_example_ggn_diagonal",
    "per_example_hessian_diagonal",
]

HESSIAN_METHODS = ("fwd_over_rev", "rev_over_fwd", "rev_over_rev", "fwd_over_fwd")
"""The compositions of forward and reverse mode :func:`hessian` accepts, outer over inner (S29)."""
HVP_METHODS = ("r_operator", *HESSIAN_METHODS)
"""The methods :func:`hvp` accepts: the R-operator by hand, or a composition (S27, S29)."""


# ---------------------------------------------------------------------------------------
# S27: the R-operator and the Gauss–Newton product, one forward and one backward pass.
# ---------------------------------------------------------------------------------------


def _r_forward_pair(p, f, carry, v):
    """:func:`fnn.layer_curvature.r_forward` on the fold's carry ``(Z, R{Z})``; both caches kept."""
    Z, R_Z, cache, r_cache = layer_curvature.r_forward(p, f, v, *carry)
    return (Z, R_Z), (cache, r_cache)


def _r_backward_pair(p, f, xs, carry):
    """:func:`fnn.layer_curvature.r_backward` on the fold's carry ``(G, R{G})``."""
    R_grads, G, R_G = layer_curvature.r_backward(p, f, *xs, *carry)
    return R_grads, (G, R_G)


def _r_forward(net: MLP, params, v, X):
    """``Ŷ``, ``R{Ŷ} = J v`` and every layer's caches, batch-first (S27)."""
    fold, fold_v = (_scan.layers(net, t, per_layer_results=True) for t in (params, v))
    R_X = jnp.zeros_like(X) if fold.segs[0].scan else None  # a scan's carry needs an array
    (Y_hat, R_Y), caches = fold.forward(_r_forward_pair, (X, R_X), fold_v.params)
    return fold, fold_v.params, Y_hat, R_Y, caches


def r_operator(net: MLP, params: Params, X, Y, v, loss: losses.Loss):
    """``∇²θ L · v`` by the R-operator (S27): :func:`fnn.layer_curvature.r_forward` up, then from
    ``G = J_L(Ŷ)/B``, ``R{G} = H_L(Ŷ) R{Ŷ}/B`` :func:`fnn.layer_curvature.r_backward` down. ``X`` a
    batch ``(B, D)``; unchecked."""
    fold, grouped_v, Y_hat, R_Y, caches = _r_forward(net, params, v, X)
    G = jax.vmap(loss.jacobian)(Y_hat, Y) / X.shape[0]
    R_G = jax.vmap(loss.hessian_vp)(Y_hat, Y, R_Y) / X.shape[0]
    xs = [(gv, *c) for gv, c in zip(grouped_v, caches)]
    return fold.per_layer(fold.backward(_r_backward_pair, (G, R_G), xs)[1])


def gauss_newton(net: MLP, params: Params, X, Y, v, loss: losses.Loss):
    """``Jᵀ H_L J v`` (S27): ``J v = R{Ŷ}`` by the R-forward pass, then ``H_L J v / B`` pulled
    back by the plain VJP. Unchecked."""
    fold, _, Y_hat, R_Y, caches = _r_forward(net, params, v, X)
    G = jax.vmap(loss.hessian_vp)(Y_hat, Y, R_Y) / X.shape[0]
    cache_only = [c for c, _ in caches]
    return fold.per_layer(fold.backward(layer.vjp_batch, G, cache_only)[1])


def _composition(net: MLP, params: Params, X, Y, loss: losses.Loss, method: str):
    """``v ↦ ∇²θ L · v`` as ``method`` composes JAX's outer derivative with fnn's inner
    gradient (S29). Reverse outer gives ``vᵀ ∇²L``, the same vector (the Hessian is
    symmetric)."""
    outer, inner = method.split("_over_")
    engine = backprop.reverse if inner == "rev" else forward_mode.gradient

    def gradient(params):  # in the parameters' dtypes, as the outer tangents/cotangents are
        return _curvature.like(engine(net, params, X, Y, loss)[1]["params"], params)

    if outer == "fwd":
        return jax.linearize(gradient, params)[1]
    pullback = jax.vjp(gradient, params)[1]
    return lambda v: pullback(v)[0]


def _check_tangents(net: MLP, batch: int, method: str, max_tangents, products: int, what: str):
    """Refuse a forward-mode inner gradient (one tangent per parameter and example, for each
    of ``products`` products) above ``max_tangents`` (default 2²²), before it runs."""
    limit = forward_mode.FORWARD_MAX_TANGENTS if max_tangents is None else max_tangents
    limit = _checks.check_positive_int(limit, "max_tangents")
    if not method.endswith("_fwd"):
        return
    P = network.summary(net).num_params
    _checks.check_limit(
        products * P * batch, limit, name="max_tangents", unit="tangents",
        what=f"{what}(method={method!r}) pushes one tangent per parameter through every "
        f"example: {products} × P · B = {products} × {P} · {batch}",
        instead=f"Use method={'r_operator' if what == 'hvp' else 'fwd_over_rev'!r} or "
        "'rev_over_rev' (fnn's backprop inside: one backward pass per product).",
    )  # fmt: skip


def hvp(
    net: MLP,
    params: Params,
    x,
    y,
    v,
    *,
    loss="l2",
    method: str = "r_operator",
    max_tangents: int | None = None,
):
    r"""The Hessian-vector product ``∇²θ L · v`` of the batch loss (S27, Bishop 5.4.6).

    .. math::  ∇²_θ L \, v = \frac{d}{dr} ∇_θ L(θ + r v) \Big|_{r=0} = R\{∇_θ L\}

    Args:
      net, params, x, y, loss: as in :func:`fnn.value_and_grad`.
      v: the direction, a pytree like ``params`` (arrays or nested lists; cast to the dtype
        of each parameter).
      method: ``"r_operator"`` (default; by hand, one forward and one backward pass), or a
        composition of :data:`HESSIAN_METHODS` (``"fwd_over_rev"``: ``jax.jvp`` of fnn's
        backprop; ``"rev_over_rev"``: ``jax.vjp`` of it; ``"*_over_fwd"``: of fnn's
        forward-mode gradient, one tangent per parameter).
      max_tangents: ``"*_over_fwd"`` only: refuse above this many tangent passes ``P · B``
        (default :data:`fnn.forward_mode.FORWARD_MAX_TANGENTS`).

    Returns:
      ``∇²θ L · v``, like ``params``.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`; ``v`` is ``None``; an array is not real
        floating point.
      ValueError: ``params``/``v`` not matching ``net``, bad ``x``/``y``, an unknown loss or
        method, a loss that does not suit the output activation, a forward-mode inner
        gradient over ``max_tangents``.

    >>> import fnn
    >>> net = fnn.MLP((1, 1), ("identity",))  # L = (w x + b − y)²: ∂²L/∂w² = 2x²
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> v = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> hvp(net, params, jnp.array([3.0]), jnp.zeros(1), v)[0]["W"]
    Array([[18.]], dtype=float32)
    """
    loss_fn, params, X, Y = _curvature.check_problem(net, params, x, y, loss)
    v = _curvature.check_direction(net, params, v)
    _checks.check_choice(method, HVP_METHODS, "method")
    _check_tangents(net, X.shape[0], method, max_tangents, 1, "hvp")
    if method == "r_operator":
        return _curvature.like(r_operator(net, params, X, Y, v, loss_fn), params)
    return _curvature.like(_composition(net, params, X, Y, loss_fn, method)(v), params)


def ggn_vp(net: MLP, params: Params, x, y, v, *, loss="l2"):
    r"""The Gauss–Newton-vector product ``G v = (1/B) Σ_b J_bᵀ H_L J_b v`` (S27, Bishop 5.4.2),
    split at the network output: ``J_b = ∂ŷ_b/∂θ``, ``H_L = ∂²L/∂ŷ²`` (for a loss on logits
    ŷ are the logits). One R-forward pass and one VJP. Arguments, returns and errors as
    :func:`hvp`. ``G`` is positive semi-definite for a convex loss."""
    loss_fn, params, X, Y = _curvature.check_problem(net, params, x, y, loss)
    v = _curvature.check_direction(net, params, v)
    return _curvature.like(gauss_newton(net, params, X, Y, v, loss_fn), params)


# ---------------------------------------------------------------------------------------
# S29: the dense Hessian by four compositions of forward and reverse mode.
# ---------------------------------------------------------------------------------------


def hessian(
    net: MLP,
    params: Params,
    x,
    y,
    *,
    loss="l2",
    method: str = "fwd_over_rev",
    max_bytes: int | None = None,
    max_tangents: int | None = None,
) -> jax.Array:
    r"""The dense Hessian ``∇²θ L`` ``(P, P)``, rows and columns in
    ``jax.flatten_util.ravel_pytree(params)`` order (S29).

    ``method`` composes an outer derivative (JAX's) with an inner gradient (fnn's engine):
    ``"fwd_over_rev"`` (default: ``jax.linearize`` of :func:`fnn.backprop.reverse`, one
    tangent per column), ``"rev_over_rev"`` (``jax.vjp`` of it, one cotangent per row),
    ``"rev_over_fwd"``, ``"fwd_over_fwd"`` (of :func:`fnn.forward_mode.gradient`, ``P``
    tangents for each of the ``P`` columns: ``P² · B`` tangent passes in all, capped by
    ``max_tangents``). The P products run in chunks (``jax.lax.map``) whose working set is
    near 2²² numbers; :func:`fnn.cost_model.hessian_macs` counts each composition.

    Raises:
      As :func:`hvp`; ``ValueError`` when the ``(P, P)`` result exceeds ``max_bytes``
      (default ``CURVATURE_MAX_BYTES``, 256 MiB), naming :func:`hvp` and
      :func:`hessian_diagonal`.

    >>> import fnn
    >>> net = fnn.MLP((1, 1), ("identity",))  # L = (w x + b − y)²
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> hessian(net, params, jnp.array([3.0]), jnp.zeros(1))  # [[2x², 2x], [2x, 2]]
    Array([[18.,  6.],
           [ 6.,  2.]], dtype=float32)
    """
    loss_fn, params, X, Y = _curvature.check_problem(net, params, x, y, loss)
    _checks.check_choice(method, HESSIAN_METHODS, "method")
    max_bytes = _curvature.check_max_bytes(max_bytes)
    theta, unravel = ravel_pytree(params)
    P, B = theta.size, X.shape[0]
    _checks.check_limit(
        P * P * theta.dtype.itemsize, max_bytes, name="max_bytes",
        what=f"hessian: the dense (P, P) matrix for P = {P} parameters",
        instead="Use fnn.hvp (a product, matrix-free) or fnn.hessian_diagonal.",
    )  # fmt: skip
    _check_tangents(net, B, method, max_tangents, P, "hessian")
    product = _composition(net, params, X, Y, loss_fn, method)
    per_column = B * sum(net.sizes) * (P if method.endswith("_fwd") else 1)
    chunk = max(1, min(P, 2**22 // per_column))

    def row(i):  # H e_i (forward outer: a column) or e_iᵀ H (reverse outer: a row)
        e_i = (jnp.arange(P) == i).astype(theta.dtype)
        return ravel_pytree(product(unravel(e_i)))[0]

    H = jax.lax.map(row, jnp.arange(P), batch_size=chunk)
    return H.T if method.startswith("fwd") else H
