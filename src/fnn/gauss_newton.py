r"""The Gauss–Newton matrix by backpropagating a factor of ``H_L`` (S28): its diagonal, blocks,
K-FAC factors and their damped inverse, per-example diagonals, and their Monte-Carlo estimates.

For the batch loss ``L = (1/B) Σ_b L(ŷ_b, y_b)`` the Gauss–Newton matrix is

.. math::  G = \frac1B \sum_b J_b^T H_L(ŷ_b) J_b = \frac1B \sum_b (J_b^T S_b)(J_b^T S_b)^T,
           \qquad H_L = S S^T,

with ``J_b = ∂ŷ_b/∂θ`` and ``S_b`` (``M × C``) the factor :attr:`fnn.losses.Loss.hessian_sqrt`
gives by hand. ``J_bᵀ S_b`` is ``C`` vector-Jacobian products: the columns of ``S`` pulled
back through the network by the plain VJP with a leading column axis
(:func:`fnn.layer_curvature.vjp_columns`, ``δ`` of shape ``(B, C, M)``) — about ``C``
backward passes, where Hessian backpropagation (:mod:`fnn.hessian_backprop`) carries
``(M, M)`` per example and layer. At each layer the pulled-back columns ``Δ`` give
(:mod:`fnn.layer_curvature`, section "Columns")::

    diagonal  G_{W_jk} = Σ_b Σ_c (Δ_bcj z_bk)²            (BackPACK's DiagGGNExact)
    K-FAC     G = Σ_b Σ_c Δ_bc Δ_bcᵀ,  A = (1/B) Σ_b z̄_b z̄_bᵀ   (KFLR)
    blocks    Σ_b Σ_c u_bc u_bcᵀ,  u_bc = (Δ_bc ⊗ z_b, α_bc, Δ_bc)

**Monte-Carlo** (``mc_samples=k, key=...``): ``k`` random columns per example instead of
``C``, with ``E[g gᵀ] = H_L``: the gradient at a target drawn from the model's own
distribution where the loss has one (:attr:`fnn.losses.Loss.sample_gradient`: L2, softmax
and sigmoid cross-entropy; BackPACK's ``DiagGGNMC``, K-FAC's sampled ``G``), else ``S ε``
with Rademacher ``ε``. Each pulled-back column is linear in ``g``, each estimate a sum of
``u uᵀ``: unbiased, at about ``k`` backward passes.

**K-FAC's inverse**: :func:`kfac_decompose` and :func:`kfac_precondition` apply
``((G + s I) ⊗ (A + s I))⁻¹`` to a gradient as two small solves per layer, never forming the
Kronecker product — the step of :func:`fnn.optim.kfac`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnn import _checks, _curvature, layer_curvature, network
from fnn.network import MLP, Params

__all__ = [
    "gauss_newton_bytes",
    "ggn_blocks",
    "ggn_diagonal",
    "kfac_decompose",
    "kfac_factors",
    "kfac_precondition",
    "per_example_ggn_diagonal",
]


def gauss_newton_bytes(net: MLP, columns: int, dtype) -> int:
    """Memory per example of backpropagating ``C`` columns: ``C · (M_out + Σᵢ Mᵢ + Σ_{i≥2} Dᵢ)``
    numbers — the columns at the output, every layer's ``Δ`` ``(C, Mᵢ)`` and the columns
    ``(C, Dᵢ)`` handed to the layer below (none below the first).

    >>> net = MLP((784, 512, 512, 10), ("tanh", "tanh", "identity"))
    >>> gauss_newton_bytes(net, 10, "float32")  # 4 · 10 · (10 + 512 + 512 + 10 + 512 + 512)
    82720
    """
    sizes = net.out_features + sum(net.sizes[1:]) + sum(net.sizes[1:-1])
    return columns * sizes * np.dtype(dtype).itemsize


def _sampled(loss, y_hat, y, key, k: int):
    """``k`` columns ``g`` with ``E[g gᵀ] = H_L``, scaled by ``1/√k``: ``(k, M)``."""
    keys = jax.random.split(key, k)
    if loss.sample_gradient is not None:
        g = jax.vmap(loss.sample_gradient, (None, 0))(y_hat, keys)
    else:
        eps = jax.random.rademacher(keys[0], (y_hat.shape[-1], k), y_hat.dtype)
        g = (loss.hessian_sqrt(y_hat, y) @ eps).T
    return g / jnp.sqrt(jnp.asarray(k, g.dtype))


def _backprop(net, params, loss, collect, mc_samples, X, Y, w, keys=None):
    """Pull the columns of ``S_b`` (or ``k`` sampled ones), weighted by ``√w_b``, back
    through every layer; ``collect(p, cache, Δ, α-columns, w)`` per layer."""
    Y_hat, caches = network.run_with_cache(net, params, X)
    if mc_samples is None:
        G = jnp.swapaxes(jax.vmap(loss.hessian_sqrt)(Y_hat, Y), -1, -2)  # (B, C, M): Sᵀ
    else:
        G = jax.vmap(functools.partial(_sampled, loss, k=mc_samples))(Y_hat, Y, keys)
    G = jnp.sqrt(w)[:, None, None].astype(G.dtype) * G
    out = [None] * net.num_layers
    for i in reversed(range(net.num_layers)):
        Delta, alpha, G = layer_curvature.vjp_columns(params[i], net.activations[i], caches[i], G)
        out[i] = collect(params[i], caches[i], Delta, alpha, w)
    return out


def _diagonal(p, cache, Delta, alpha, w):
    return layer_curvature.param_ggn_diagonal(cache, Delta, alpha)


def _per_example_diagonal(p, cache, Delta, alpha, w):
    return layer_curvature.param_ggn_diagonal(cache, Delta, alpha, per_example=True)


def _block(p, cache, Delta, alpha, w):
    U = layer_curvature.param_columns(p, cache, Delta, alpha)
    return U.T @ U


def _kfac(p, cache, Delta, alpha, w):
    z_bar = jnp.concatenate([jnp.ones_like(cache.z_prev[:, :1]), cache.z_prev], axis=1)
    return {"A": (w[:, None] * z_bar).T @ z_bar, "G": layer_curvature.ggn_kfac_g(Delta)}


def _diagonal_sizes(net, dtype, B, C):  # nothing per example but the columns; P numbers
    return 0, _curvature.param_bytes(net, dtype)


def _per_example_sizes(net, dtype, B, C):  # one diagonal per example, B of them kept
    P = _curvature.param_bytes(net, dtype)
    return P, B * P


def _check_sampling(mc_samples, key):
    if mc_samples is None:
        if key is not None:
            raise ValueError("key applies to Monte-Carlo estimates only; give mc_samples=k too.")
        return
    _checks.check_positive_int(mc_samples, "mc_samples")
    _checks.check_key(key)


def _run(net, params, x, y, loss, collect, sizes, what, instead, **options):
    """Check, plan the chunks (``sizes(net, dtype, B)``: bytes per example besides the
    columns, and bytes of the result; the refusal says ``what`` and names ``instead``), then
    fold. ``options``: ``max_bytes``, and ``mc_samples``, ``key`` or ``each`` (per-example
    results). Returns the per-layer results and the checked ``params``."""
    loss_fn, params, X, Y = _curvature.check_problem(net, params, x, y, loss)
    max_bytes = _curvature.check_max_bytes(options.get("max_bytes"))
    mc_samples, key, each = (options.get(k) for k in ("mc_samples", "key", "each"))
    _check_sampling(mc_samples, key)
    dtype = jnp.result_type(X, *jax.tree.leaves(params))
    B = X.shape[0]
    C = net.out_features if mc_samples is None else mc_samples
    extra, result = sizes(net, dtype, B, C)
    per_example = gauss_newton_bytes(net, C, dtype) + extra
    chunk = _curvature.plan_chunks(
        B, per_example, result, max_bytes, what=what, instead=instead, stacked=each
    )
    run = functools.partial(_backprop, net, params, loss_fn, collect, mc_samples)
    w = jnp.full(B, 1 if each else 1 / B, dtype)
    keys = None if key is None else jax.random.split(key, B)
    return _curvature.in_chunks(run, X, Y, chunk, w, keys=keys, stacked=each), params


def ggn_diagonal(
    net: MLP,
    params: Params,
    x,
    y,
    *,
    loss="l2",
    mc_samples: int | None = None,
    key=None,
    max_bytes: int | None = None,
):
    r"""The diagonal of the Gauss–Newton matrix ``(1/B) Σ_b J_bᵀ H_L J_b`` (S28), like
    ``params``: ``Σ_b Σ_c (Δ_bcj z_bk)²`` for ``W_jk`` from the ``C`` columns of ``S_b``
    pulled back (BackPACK's ``DiagGGNExact``), or from ``mc_samples`` sampled columns (its
    ``DiagGGNMC``: unbiased, about ``mc_samples`` backward passes).

    Args:
      net, params, x, y, loss: as in :func:`fnn.value_and_grad`.
      mc_samples: ``None`` (exact) or the number ``k`` of random columns per example.
      key: the PRNG key of the Monte-Carlo estimate (with ``mc_samples`` only).
      max_bytes: the memory limit (default ``fnn.curvature.CURVATURE_MAX_BYTES``, 256 MiB): the
        batch runs in chunks of :func:`gauss_newton_bytes`; a call whose one example exceeds
        it is refused before anything is allocated.

    Raises:
      As :func:`fnn.value_and_grad`; ``ValueError`` over the memory limit, for a
      ``max_bytes``/``mc_samples`` that is not a positive integer, or a ``key`` without
      ``mc_samples``; ``TypeError`` for a ``key`` that is not one PRNG key.
    """
    d, params = _run(
        net, params, x, y, loss, _diagonal, _diagonal_sizes,
        "ggn_diagonal", "Use fnn.ggn_vp (matrix-free), or mc_samples=1 (one column per example).",
        max_bytes=max_bytes, mc_samples=mc_samples, key=key,
    )  # fmt: skip
    return _curvature.like(d, params)


def per_example_ggn_diagonal(
    net: MLP, params: Params, x, y, *, loss="l2", max_bytes: int | None = None
):
    r"""The diagonal of every example's own Gauss–Newton matrix ``J_bᵀ H_L(ŷ_b) J_b`` (S28;
    BackPACK's ``BatchDiagGGNExact``), like ``params`` with a leading axis B:
    ``Σ_c (Δ_bcj z_bk)²`` per example, never more than the B diagonals. Their mean over b is
    :func:`ggn_diagonal`. Arguments and errors as :func:`ggn_diagonal` (exact only)."""
    d, params = _run(
        net, params, x, y, loss, _per_example_diagonal, _per_example_sizes,
        "per_example_ggn_diagonal",
        "Use fnn.ggn_diagonal (summed over the batch), or pass fewer examples at a time.",
        max_bytes=max_bytes, each=True,
    )  # fmt: skip
    return jax.tree.map(lambda t, p: t.astype(jnp.result_type(p)), d, params)


def _layer_sizes(net: MLP) -> list[int]:
    return [sum(int(np.prod(s)) for s in shapes.values()) for shapes in net.layer_shapes()]


def ggn_blocks(net: MLP, params: Params, x, y, *, loss="l2", max_bytes: int | None = None):
    """The diagonal blocks of the Gauss–Newton matrix (S28), one ``(P_i, P_i)`` matrix per
    layer in ``ravel_pytree(params[i])`` order (``W`` row-major, then ``alpha``, then ``b``):
    ``Σ_b Σ_c u_bc u_bcᵀ`` over the pulled-back columns in parameter space
    (:func:`fnn.layer_curvature.param_columns`, ``C · P_i`` numbers per example). The blocks count
    against ``max_bytes`` too; errors as :func:`ggn_diagonal`."""

    def sizes(net, dtype, B, C):
        P = _layer_sizes(net)
        item = np.dtype(dtype).itemsize
        return C * sum(P) * item, sum(p * p for p in P) * item

    blocks, _ = _run(
        net, params, x, y, loss, _block, sizes, "ggn_blocks",
        "Use fnn.ggn_diagonal, fnn.kfac_factors (each block as two Kronecker factors) or "
        "fnn.ggn_vp (matrix-free).",
        max_bytes=max_bytes,
    )  # fmt: skip
    return blocks


def kfac_factors(
    net: MLP,
    params: Params,
    x,
    y,
    *,
    loss="l2",
    mc_samples: int | None = None,
    key=None,
    max_bytes: int | None = None,
):
    r"""The Kronecker factors of K-FAC for every layer (S28; Martens & Grosse 2015)::

        A = (1/B) Σ_b z̄_b z̄_bᵀ,   z̄ = [1, z_prev]     ((D+1, D+1): the bias is column 0 of
                                                        Ŵ = [b, W], as fnn.layer.augment)
        G = (1/B) Σ_b J_bᵀ H_L J_b = Σ_b Σ_c Δ_bc Δ_bcᵀ,   J_b = ∂ŷ_b/∂a     ((M, M))

    so that the Gauss–Newton block of ``vec(Ŵ)`` (row-major) is approximated by
    ``kron(G, A)`` — exactly for one example (or equal inputs), where
    ``E[H_a ⊗ z̄ z̄ᵀ] = E[H_a] ⊗ E[z̄ z̄ᵀ]``. ``G`` from the ``C`` columns of ``S`` is exact
    (KFLR); with ``mc_samples=k, key=...`` from ``k`` sampled columns (K-FAC's Monte-Carlo
    ``G``, unbiased). PReLU's α is not part of K-FAC.

    Returns:
      A list, per layer, of ``{"A": (D+1, D+1), "G": (M, M)}``.

    Raises:
      As :func:`ggn_diagonal`; the factors themselves count against ``max_bytes``.
    """

    def sizes(net, dtype, B, C):
        item = np.dtype(dtype).itemsize
        factors = sum((D + 1) ** 2 + M * M for D, M in zip(net.sizes[:-1], net.sizes[1:]))
        return (max(net.sizes[:-1]) + 1) * item, factors * item

    factors, _ = _run(
        net, params, x, y, loss, _kfac, sizes, "kfac_factors",
        "Use fnn.ggn_diagonal (P numbers) or fnn.ggn_vp (matrix-free).",
        max_bytes=max_bytes, mc_samples=mc_samples, key=key,
    )  # fmt: skip
    return factors


# ---------------------------------------------------------------------------------------
# K-FAC's damped inverse: (G + s I) ⊗ (A + s I) inverted factor by factor.
# ---------------------------------------------------------------------------------------


def _decompose(F, shift, inverse: str):
    """What :func:`_solve` needs of ``F``: its eigendecomposition, or the Cholesky factor of
    ``F + shift I`` (the shift then fixed until the next decomposition)."""
    if inverse == "eigh":
        return jnp.linalg.eigh(F)
    return (jnp.linalg.cholesky(F + shift * jnp.eye(F.shape[0], dtype=F.dtype)),)


def _solve(decomposition, X, shift, inverse: str):
    """``(F + shift I)⁻¹ X``: ``V diag(1/(e + shift)) Vᵀ X`` or two triangular solves."""
    if inverse == "eigh":
        e, V = decomposition
        return V @ ((V.T @ X) / (jnp.maximum(e, 0) + shift)[:, None])
    return jax.scipy.linalg.cho_solve((decomposition[0], True), X)


def kfac_decompose(factors, shift, inverse: str = "eigh"):
    """Every layer's Kronecker factors decomposed for :func:`kfac_precondition` (S28).

    ``"eigh"`` keeps the eigendecomposition ``(e, V)`` of each ``F`` itself, so that any
    later ``shift`` costs nothing; ``"cholesky"`` the Cholesky factor ``(C,)`` of
    ``F + shift I``, which fixes ``shift`` until the next decomposition.

    Args:
      factors: per layer ``{"A": (D+1, D+1), "G": (M, M)}``, as :func:`kfac_factors` gives.
      shift: the damping ``s ≥ 0`` added to each factor's diagonal (``√λ`` in
        :func:`fnn.optim.kfac`).
      inverse: ``"eigh"`` or ``"cholesky"`` (:data:`fnn.optim.INVERSES`).

    Returns:
      Per layer ``{"A": …, "G": …}``, each a tuple of arrays.
    """
    return jax.tree.map(lambda F: _decompose(F, shift, inverse), factors)


def kfac_precondition(grads: Params, decompositions, shift, inverse: str = "eigh") -> Params:
    r"""K-FAC's damped inverse applied to a gradient, layer by layer (S28; Martens & Grosse 2015).

    .. math::  ∇_Ŵ \;\mapsto\; (G + s I)^{-1}\, ∇_Ŵ\, (A + s I)^{-1}, \qquad Ŵ = [b, W],

    which is ``((G + s I) ⊗ (A + s I))⁻¹ vec(∇_Ŵ)`` (row-major ``vec``; ``A``, ``G``
    symmetric) without forming the Kronecker product: two solves per layer with the factors'
    decompositions. PReLU's ``α`` is not in K-FAC and passes unchanged.

    Args:
      grads: the gradient, like ``params``.
      decompositions: per layer ``{"A": …, "G": …}`` from :func:`kfac_decompose`.
      shift: ``s``; with ``"cholesky"`` the one the decompositions were made with.
      inverse: ``"eigh"`` or ``"cholesky"``, as the decompositions were made.

    Returns:
      The preconditioned gradient, like ``grads``.

    >>> factors = [{"A": jnp.eye(2), "G": 3 * jnp.eye(1)}]
    >>> grads = [{"W": jnp.array([[8.0]]), "b": jnp.array([8.0])}]
    >>> kfac_precondition(grads, kfac_decompose(factors, 1.0), 1.0)  # 8 / ((3 + 1)(1 + 1))
    [{'W': Array([[1.]], dtype=float32), 'b': Array([1.], dtype=float32)}]
    """
    out = []
    for g, inv in zip(grads, decompositions):
        X = jnp.concatenate([g["b"][:, None], g["W"]], axis=1)  # ∇Ŵ, the bias as column 0
        X = _solve(inv["G"], X, shift, inverse)
        X = _solve(inv["A"], X.T, shift, inverse).T
        out.append({**g, "b": X[:, 0], "W": X[:, 1:]})
    return out
