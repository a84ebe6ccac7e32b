r"""Curvature of the batch loss: Hessian-vector products, Gauss–Newton products, Hessian
diagonals and blocks, K-FAC factors, dense Hessians (S27–S29).

Everything here is about ``L(θ) = (1/B) Σ_b L(nn_θ(x_b), y_b)`` as a function of the
parameters θ (the input x stays fixed), and is a fold of one layer's second-order rules
(:mod:`fnn.layer`, section "Second order") over the layers, as the first-order engines are:

* :func:`hvp` — ``∇²θ L · v`` by Pearlmutter's R-operator (Bishop 5.4.6): the forward pass
  pushes ``R{a}, R{z}`` (:func:`fnn.layer.r_forward`), the backward pass ``R{δ}``
  (:func:`fnn.layer.r_backward`), seeded at the loss with ``R{∂L/∂ŷ} = H_L R{ŷ}``. One
  forward and one backward pass, batch-first.
* :func:`ggn_vp` — the Gauss–Newton product ``G v = Jᵀ H_L J v`` split at the output ŷ
  (``J = ∂ŷ/∂θ``, ``H_L = ∂²L/∂ŷ²``): the same forward pass gives ``J v = R{ŷ}``, and the
  plain backward pass (:func:`fnn.layer.vjp_batch`) pulls ``H_L J v`` back.
* :func:`hessian_diagonal`, :func:`hessian_blocks`, :func:`ggn_diagonal`, :func:`ggn_blocks`,
  :func:`kfac_factors` — Hessian backpropagation (Bishop 5.4.1–5.4.2), per example::

      H_z⁽ᴺ⁾ = H_L,   H_a⁽ⁱ⁾ = J_f⁽ⁱ⁾ᵀ H_z⁽ⁱ⁾ J_f⁽ⁱ⁾ + Σₖ gₖ ∇²fₖ(a⁽ⁱ⁾),
      H_z⁽ⁱ⁻¹⁾ = W⁽ⁱ⁾ᵀ H_a⁽ⁱ⁾ W⁽ⁱ⁾

  (:func:`fnn.layer.hessian_backward`; the residual ``Σ gₖ ∇²fₖ`` is ``diag(f″ ⊙ ∂L/∂z)`` for
  an elementwise f). Since ``a = W z + b`` is linear in the layer's own ``W, b``, its block
  of ``∇²θ L`` is ``H_a ⊗ z zᵀ`` (plus PReLU's α), and the diagonal of the whole Hessian is
  the diagonals of these blocks: ``(H_a)_jj z_k²`` for ``W_jk``, summed over the examples.
  Without the residual terms the same recursion gives the Gauss–Newton matrix.
* :func:`hessian` — the dense ``(P, P)`` Hessian by four compositions of forward and
  reverse mode over fnn's OWN first-order engines: the outer derivative is JAX's
  (``jax.linearize`` for forward, ``jax.vjp`` for reverse), the inner gradient is fnn's
  hand-written reverse engine (:func:`fnn.backprop.reverse`) or forward engine
  (:func:`fnn.forward_mode.gradient`). ``"fwd_over_rev"`` is thus ``jax.jacfwd`` of fnn's
  backprop; ``"rev_over_fwd"`` ``jax.jacrev`` of fnn's forward-mode gradient, and so on.
  The same compositions give :func:`hvp` other ``method`` values; the R-operator is
  forward-over-reverse written out by hand.

Hessian backpropagation holds dense ``(M, M)`` matrices per example and layer: it runs over
the batch in chunks that fit ``max_bytes`` (:func:`hessian_backprop_bytes`) and refuses when
one example does not; :func:`hessian` refuses a ``(P, P)`` result above ``max_bytes``. Both
refusals name :func:`hvp`, which never builds a matrix. The public functions check their
input once (:func:`fnn.derivatives.value_and_grad`'s checks; ``v`` like ``params``); the
engines check nothing. All are pure and ``jax.jit`` accepts them.

The module is longer than fnn's ~300-line guide (about 430 lines, 160 of them docstrings)
because it holds the three folds the design puts under one name — the R-operator, Hessian
backpropagation and the dense compositions; each is a few dozen lines, and the rules they
fold live in :mod:`fnn.layer`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnn import _checks, _scan, backprop, derivatives, forward_mode, layer, losses, network
from fnn.network import MLP, Params

__all__ = [
    "CURVATURE_MAX_BYTES",
    "HESSIAN_MODES",
    "HVP_METHODS",
    "ggn_blocks",
    "ggn_diagonal",
    "ggn_vp",
    "hessian",
    "hessian_backprop_bytes",
    "hessian_blocks",
    "hessian_diagonal",
    "hvp",
    "kfac_factors",
]

# Above this many bytes (dense per-example matrices, or a dense Hessian) a call is refused.
CURVATURE_MAX_BYTES = 2**28  # 256 MiB
HESSIAN_MODES = ("fwd_over_rev", "rev_over_fwd", "rev_over_rev", "fwd_over_fwd")
HVP_METHODS = ("r_operator", *HESSIAN_MODES)


def _check(net, params, x, y, loss, v=None):
    """The checks of :func:`fnn.value_and_grad` (and ``v`` like ``params``); returns the
    :class:`~fnn.losses.Loss` and ``x``, ``y`` as a batch."""
    loss_fn, x, y = derivatives._check_loss_problem(net, params, x, y, loss)
    if v is not None:
        _checks.check_params(net, v, "v")
    return (loss_fn, x, y) if x.ndim == 2 else (loss_fn, x[None], y[None])


def _like(tree, params):
    """``tree`` in the dtypes of ``params``, leaf by leaf (as ``jax.grad`` returns them)."""
    return jax.tree.map(lambda t, p: jnp.asarray(t, jnp.result_type(p)), tree, params)


# ---------------------------------------------------------------------------------------
# S27: the R-operator and the Gauss–Newton product, one forward and one backward pass.
# ---------------------------------------------------------------------------------------


def _r_forward_step(carry, p, f, v):
    Z, R_Z, cache, r_cache = layer.r_forward(p, f, v, *carry)
    return (Z, R_Z), (cache, r_cache)


def _r_backward_step(carry, p, f, xs):
    R_grads, G, R_G = layer.r_backward(p, f, *xs, *carry)
    return (G, R_G), R_grads


def _vjp_step(G, p, f, cache):
    grads, G = layer.vjp_batch(p, f, cache, G)
    return G, grads


def _r_forward(net: MLP, params, v, X):
    """``Ŷ``, ``R{Ŷ} = J v`` and every layer's caches, batch-first (S27)."""
    segs = _scan.segments(net, per_layer_results=True)
    grouped, grouped_v = _scan.group(segs, params), _scan.group(segs, v)
    R_X = jnp.zeros_like(X) if segs[0].scan else None  # a scan's carry needs an array
    (Y_hat, R_Y), caches = _scan.run_layers(segs, grouped, _r_forward_step, (X, R_X), grouped_v)
    return segs, grouped, grouped_v, Y_hat, R_Y, caches


def r_operator(net: MLP, params: Params, X, Y, v, loss: losses.Loss):
    """``∇²θ L · v`` by the R-operator (S27): :func:`fnn.layer.r_forward` up, then from
    ``G = J_L(Ŷ)/B``, ``R{G} = H_L(Ŷ) R{Ŷ}/B`` :func:`fnn.layer.r_backward` down. ``X`` a
    batch ``(B, D)``; unchecked."""
    segs, grouped, grouped_v, Y_hat, R_Y, caches = _r_forward(net, params, v, X)
    G = jax.vmap(loss.jacobian)(Y_hat, Y) / X.shape[0]
    R_G = jax.vmap(loss.hessian_vp)(Y_hat, Y, R_Y) / X.shape[0]
    xs = [(gv, *c) for gv, c in zip(grouped_v, caches)]
    _, Hv = _scan.run_layers(segs, grouped, _r_backward_step, (G, R_G), xs, reverse=True)
    return _scan.ungroup(segs, Hv)


def gauss_newton(net: MLP, params: Params, X, Y, v, loss: losses.Loss):
    """``Jᵀ H_L J v`` (S27): ``J v = R{Ŷ}`` by the R-forward pass, then ``H_L J v / B`` pulled
    back by the plain VJP. Unchecked."""
    segs, grouped, _, Y_hat, R_Y, caches = _r_forward(net, params, v, X)
    G = jax.vmap(loss.hessian_vp)(Y_hat, Y, R_Y) / X.shape[0]
    cache_only = [c for c, _ in caches]
    return _scan.ungroup(
        segs, _scan.run_layers(segs, grouped, _vjp_step, G, cache_only, reverse=True)[1]
    )


def _composition(net: MLP, params: Params, X, Y, loss: losses.Loss, mode: str):
    """``v ↦ ∇²θ L · v`` as ``mode`` composes JAX's outer derivative with fnn's inner
    gradient (S29). Reverse outer gives ``vᵀ ∇²L``, the same vector (the Hessian is
    symmetric)."""
    outer, inner = mode.split("_over_")
    engine = backprop.reverse if inner == "rev" else forward_mode.gradient

    def gradient(params):
        return engine(net, params, X, Y, loss)[1]["params"]

    if outer == "fwd":
        return jax.linearize(gradient, params)[1]
    pullback = jax.vjp(gradient, params)[1]
    return lambda v: pullback(v)[0]


def _refuse_forward_inner(net: MLP, batch: int, mode: str) -> None:
    if mode.endswith("_fwd"):  # the inner gradient pushes one tangent per parameter
        derivatives._refuse_forward(net, batch, None)


def hvp(net: MLP, params: Params, x, y, v, loss="l2", method: str = "r_operator"):
    r"""The Hessian-vector product ``∇²θ L · v`` of the batch loss (S27, Bishop 5.4.6).

    .. math::  ∇²_θ L \, v = \frac{d}{dr} ∇_θ L(θ + r v) \Big|_{r=0} = R\{∇_θ L\}

    Args:
      net, params, x, y, loss: as in :func:`fnn.value_and_grad`.
      v: the direction, a pytree like ``params``.
      method: ``"r_operator"`` (default; by hand, one forward and one backward pass), or a
        composition of :data:`HESSIAN_MODES` (``"fwd_over_rev"``: ``jax.jvp`` of fnn's
        backprop; ``"rev_over_rev"``: ``jax.vjp`` of it; ``"*_over_fwd"``: of fnn's
        forward-mode gradient, one tangent per parameter).

    Returns:
      ``∇²θ L · v``, like ``params``.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`; an array is not real floating point.
      ValueError: ``params``/``v`` not matching ``net``, bad ``x``/``y``, an unknown loss or
        method, a loss that does not suit the output activation, a forward-mode inner
        gradient over its limit.

    >>> import fnn
    >>> net = fnn.MLP((1, 1), ("identity",))  # L = (w x + b − y)²: ∂²L/∂w² = 2x²
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> v = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> hvp(net, params, jnp.array([3.0]), jnp.zeros(1), v)[0]["W"]
    Array([[18.]], dtype=float32)
    """
    loss_fn, X, Y = _check(net, params, x, y, loss, v)
    _checks.check_choice(method, HVP_METHODS, "method")
    if method == "r_operator":
        return _like(r_operator(net, params, X, Y, v, loss_fn), params)
    _refuse_forward_inner(net, X.shape[0], method)
    return _like(_composition(net, params, X, Y, loss_fn, method)(v), params)


def ggn_vp(net: MLP, params: Params, x, y, v, loss="l2"):
    r"""The Gauss–Newton-vector product ``G v = (1/B) Σ_b J_bᵀ H_L J_b v`` (S27, Bishop 5.4.2),
    split at the network output: ``J_b = ∂ŷ_b/∂θ``, ``H_L = ∂²L/∂ŷ²`` (for
    ``softmax_cross_entropy`` ŷ are the logits). One R-forward pass and one VJP. Arguments,
    returns and errors as :func:`hvp`. ``G`` is positive semi-definite for a convex loss."""
    loss_fn, X, Y = _check(net, params, x, y, loss, v)
    return _like(gauss_newton(net, params, X, Y, v, loss_fn), params)


# ---------------------------------------------------------------------------------------
# S28: Hessian backpropagation, per example, over the batch in chunks.
# ---------------------------------------------------------------------------------------


def hessian_backprop_bytes(net: MLP, batch: int, dtype) -> int:
    """Memory of Hessian backpropagation for ``batch`` examples: ``B · (Σᵢ Mᵢ² + Σ_{i≥2} Dᵢ²)``
    numbers — every example's ``H_a⁽ⁱ⁾`` ``(Mᵢ, Mᵢ)`` and ``H_z⁽ⁱ⁻¹⁾`` ``(Dᵢ, Dᵢ)`` (none for
    the input).

    >>> net = MLP((784, 512, 512, 10), ("tanh", "tanh", "identity"))
    >>> hessian_backprop_bytes(net, 1, "float32")  # 4 · (512² + 512² + 10² + 512² + 512²)
    4194704
    """
    per_example = sum(M * M for M in net.sizes[1:]) + sum(D * D for D in net.sizes[1:-1])
    return batch * per_example * np.dtype(dtype).itemsize


def _hessian_backprop(net, params, loss, residual, collect, X, Y, w):
    """Fold :func:`fnn.layer.hessian_backward` from the loss down for the examples ``X``
    weighted by ``w`` (``1/B``; 0 for padding); ``collect(p, cache, lh, w)`` per layer."""
    Y_hat, caches = backprop.forward_batch(net, params, X)
    G = w[:, None] * jax.vmap(loss.jacobian)(Y_hat, Y)
    H = w[:, None, None] * jax.vmap(loss.hessian)(Y_hat, Y)
    out = [None] * net.num_layers
    for i in reversed(range(net.num_layers)):  # unrolled: the first layer needs no H_z of x
        p, cache = params[i], caches[i]
        lh, G, H = layer.hessian_backward(
            p, net.activations[i], cache, G, H, residual=residual, input_hessian=i > 0
        )
        out[i] = collect(p, cache, lh, w)
    return out


def _over_batch(net, params, x, y, loss, residual, collect, max_bytes, what, extra=0):
    """Check, then sum ``_hessian_backprop`` over chunks of the batch that fit ``max_bytes``
    (``extra``: bytes per example besides :func:`hessian_backprop_bytes`)."""
    loss_fn, X, Y = _check(net, params, x, y, loss)
    max_bytes = CURVATURE_MAX_BYTES if max_bytes is None else max_bytes
    _checks.check_positive_int(max_bytes, "max_bytes")
    dtype = jnp.result_type(X, *jax.tree.leaves(params))
    per_example = hessian_backprop_bytes(net, 1, dtype) + extra
    if per_example > max_bytes:
        raise ValueError(
            f"{what} holds the dense ∂²L/∂a∂a of every layer per example: about "
            f"{per_example / 2**20:.1f} MiB per example for sizes {net.sizes}, over the limit "
            f"max_bytes={max_bytes / 2**20:.1f} MiB. Use fnn.hvp or fnn.ggn_vp (matrix-free, "
            f"one forward and one backward pass), or raise max_bytes."
        )
    B = X.shape[0]
    chunk = min(B, max_bytes // per_example)
    run = functools.partial(_hessian_backprop, net, params, loss_fn, residual, collect)
    if chunk == B:
        return run(X, Y, jnp.full(B, 1 / B, dtype))
    n = -(-B // chunk)
    rows = jnp.arange(n * chunk)
    idx = (rows % B).reshape(n, chunk)  # the last chunk padded with weight 0
    w = jnp.where(rows < B, 1 / B, 0).astype(dtype).reshape(n, chunk)
    parts = jax.lax.map(lambda iw: run(X[iw[0]], Y[iw[0]], iw[1]), (idx, w))
    return jax.tree.map(lambda t: jnp.sum(t, axis=0), parts)


def _diagonal(p, cache, lh, w):
    return layer.param_hessian_diagonal(cache, lh)


def _block(p, cache, lh, w):
    return layer.param_hessian_block(p, cache, lh)


def _kfac(p, cache, lh, w):
    z_bar = jnp.concatenate([jnp.ones_like(cache.z_prev[:, :1]), cache.z_prev], axis=1)
    return {"A": (w[:, None] * z_bar).T @ z_bar, "G": jnp.sum(lh.a, axis=0)}


def _block_bytes(net: MLP, params, dtype) -> tuple[int, int]:
    """Bytes per example of the local Jacobians ``U``, and of the blocks themselves."""
    sizes = [(p["b"].shape[0] + len(p) - 2, sum(np.size(t) for t in p.values())) for p in params]
    itemsize = np.dtype(dtype).itemsize
    return sum(u * P for u, P in sizes) * itemsize, sum(P * P for _, P in sizes) * itemsize


def hessian_diagonal(net: MLP, params: Params, x, y, loss="l2", *, max_bytes: int | None = None):
    r"""The exact diagonal of ``∇²θ L`` (S28), like ``params``, by Hessian backpropagation:

    .. math::  \frac{∂^2 L}{∂W_{jk}^2} = \frac1B \sum_b (H_a)_{b,jj}\, z_{b,k}^2, \qquad
               \frac{∂^2 L}{∂b_j^2} = \frac1B \sum_b (H_a)_{b,jj}

    with the full ``H_a`` of every example and layer carried down (the diagonal of
    ``Wᵀ H_a W`` needs all of ``H_a``). PReLU's α: ``∂f/∂αᵀ H_z ∂f/∂α``.

    Args:
      net, params, x, y, loss: as in :func:`fnn.value_and_grad`.
      max_bytes: the memory limit (default :data:`CURVATURE_MAX_BYTES`): the batch runs in
        chunks of :func:`hessian_backprop_bytes`; a call whose one example exceeds it is
        refused.

    Raises:
      As :func:`fnn.value_and_grad`; ``ValueError`` over the memory limit (naming
      :func:`hvp`) or a ``max_bytes`` that is not a positive integer.
    """
    d = _over_batch(net, params, x, y, loss, True, _diagonal, max_bytes, "hessian_diagonal")
    return _like(d, params)


def ggn_diagonal(net: MLP, params: Params, x, y, loss="l2", *, max_bytes: int | None = None):
    """The exact diagonal of the Gauss–Newton matrix ``(1/B) Σ_b J_bᵀ H_L J_b`` (S28):
    :func:`hessian_diagonal` without the residual terms ``Σₖ gₖ ∇²fₖ``. Like ``params``;
    arguments and errors as :func:`hessian_diagonal`."""
    d = _over_batch(net, params, x, y, loss, False, _diagonal, max_bytes, "ggn_diagonal")
    return _like(d, params)


def _blocks(net, params, x, y, loss, residual, max_bytes, what):
    network.check_net(net)
    _checks.check_params(net, params)
    max_bytes = CURVATURE_MAX_BYTES if max_bytes is None else max_bytes
    _checks.check_positive_int(max_bytes, "max_bytes")
    dtype = jnp.result_type(*jax.tree.leaves(params), jnp.asarray(x))
    per_example, result = _block_bytes(net, params, dtype)
    if result >= max_bytes:
        raise ValueError(
            f"{what}: the dense per-layer blocks need {result / 2**20:.1f} MiB for sizes "
            f"{net.sizes}, over max_bytes={max_bytes / 2**20:.1f} MiB. Use "
            f"fnn.hessian_diagonal / fnn.ggn_diagonal, or fnn.hvp (matrix-free)."
        )
    args = (residual, _block, max_bytes - result, what, per_example)
    return _over_batch(net, params, x, y, loss, *args)


def hessian_blocks(net: MLP, params: Params, x, y, loss="l2", *, max_bytes: int | None = None):
    """The exact diagonal blocks of ``∇²θ L``, one ``(P_i, P_i)`` matrix per layer in
    ``ravel_pytree(params[i])`` order (``W`` row-major, then ``alpha``, then ``b``) (S28):
    ``Σ_b Uᵀ H_u U`` (:func:`fnn.layer.param_hessian_block`). The blocks count against
    ``max_bytes`` too; errors as :func:`hessian_diagonal`."""
    return _blocks(net, params, x, y, loss, True, max_bytes, "hessian_blocks")


def ggn_blocks(net: MLP, params: Params, x, y, loss="l2", *, max_bytes: int | None = None):
    """The diagonal blocks of the Gauss–Newton matrix (S28), as :func:`hessian_blocks`."""
    return _blocks(net, params, x, y, loss, False, max_bytes, "ggn_blocks")


def kfac_factors(net: MLP, params: Params, x, y, loss="l2", *, max_bytes: int | None = None):
    r"""The Kronecker factors of K-FAC for every layer (S28; Martens & Grosse 2015)::

        A = (1/B) Σ_b z̄_b z̄_bᵀ,   z̄ = [1, z_prev]     ((D+1, D+1): the bias is column 0 of
                                                        Ŵ = [b, W], as fnn.network.augment)
        G = (1/B) Σ_b J_bᵀ H_L J_b,   J_b = ∂ŷ_b/∂a     ((M, M): E[δ δᵀ] for δ = Jᵀ S e_c
                                                        summed over c, H_L = S Sᵀ)

    so that the Gauss–Newton block of ``vec(Ŵ)`` (row-major) is approximated by
    ``kron(G, A)`` — exactly for one example (or equal inputs), where
    ``E[H_a ⊗ z̄ z̄ᵀ] = E[H_a] ⊗ E[z̄ z̄ᵀ]``. PReLU's α is not part of K-FAC. ``G`` is the
    Gauss–Newton ``H_a`` of :func:`fnn.layer.hessian_backward` averaged over the batch.

    Returns:
      A list, per layer, of ``{"A": (D+1, D+1), "G": (M, M)}``.

    Raises:
      As :func:`hessian_diagonal`.
    """
    return _over_batch(net, params, x, y, loss, False, _kfac, max_bytes, "kfac_factors")


# ---------------------------------------------------------------------------------------
# S29: the dense Hessian by four compositions of forward and reverse mode.
# ---------------------------------------------------------------------------------------


def hessian(
    net: MLP,
    params: Params,
    x,
    y,
    loss="l2",
    mode: str = "fwd_over_rev",
    *,
    max_bytes: int | None = None,
) -> jax.Array:
    r"""The dense Hessian ``∇²θ L`` ``(P, P)``, rows and columns in
    ``jax.flatten_util.ravel_pytree(params)`` order (S29).

    ``mode`` composes an outer derivative (JAX's) with an inner gradient (fnn's engine):
    ``"fwd_over_rev"`` (default: ``jax.linearize`` of :func:`fnn.backprop.reverse`, one
    tangent per column), ``"rev_over_rev"`` (``jax.vjp`` of it, one cotangent per row),
    ``"rev_over_fwd"``, ``"fwd_over_fwd"`` (of :func:`fnn.forward_mode.gradient`). The P
    products run in chunks (``jax.lax.map``) whose working set is near 2²² numbers;
    :func:`fnn.cost_model.hessian_macs` counts each composition.

    Raises:
      As :func:`hvp`; ``ValueError`` when the ``(P, P)`` result exceeds ``max_bytes``
      (default :data:`CURVATURE_MAX_BYTES`), naming :func:`hvp` and
      :func:`hessian_diagonal`.

    >>> import fnn
    >>> net = fnn.MLP((1, 1), ("identity",))  # L = (w x + b − y)²
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> hessian(net, params, jnp.array([3.0]), jnp.zeros(1))  # [[2x², 2x], [2x, 2]]
    Array([[18.,  6.],
           [ 6.,  2.]], dtype=float32)
    """
    loss_fn, X, Y = _check(net, params, x, y, loss)
    _checks.check_choice(mode, HESSIAN_MODES, "mode")
    max_bytes = CURVATURE_MAX_BYTES if max_bytes is None else max_bytes
    _checks.check_positive_int(max_bytes, "max_bytes")
    theta, unravel = ravel_pytree(params)
    P, B = theta.size, X.shape[0]
    if P * P * theta.dtype.itemsize > max_bytes:
        raise ValueError(
            f"hessian: the dense (P, P) matrix for P = {P} parameters needs "
            f"{P * P * theta.dtype.itemsize / 2**20:.1f} MiB, over max_bytes="
            f"{max_bytes / 2**20:.1f} MiB. Use fnn.hvp (a product, matrix-free) or "
            f"fnn.hessian_diagonal, or raise max_bytes."
        )
    _refuse_forward_inner(net, B, mode)
    product = _composition(net, params, X, Y, loss_fn, mode)
    per_column = B * sum(net.sizes) * (P if mode.endswith("_fwd") else 1)
    chunk = max(1, min(P, 2**22 // per_column))

    def row(i):  # H e_i (forward outer: a column) or e_iᵀ H (reverse outer: a row)
        e_i = (jnp.arange(P) == i).astype(theta.dtype)
        return ravel_pytree(product(unravel(e_i)))[0]

    H = jax.lax.map(row, jnp.arange(P), batch_size=chunk)
    return H.T if mode.startswith("fwd") else H
