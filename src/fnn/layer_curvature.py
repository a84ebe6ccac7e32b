r"""One layer's second-order and column rules, side by side (S27, S28).

The R-operator (:func:`r_forward`, :func:`r_backward`), Hessian backpropagation
(:func:`hessian_backward` and the parameter blocks it gives) and the VJP with a column axis
for a factor ``S`` of ``H_L = S Sᵀ`` (:func:`vjp_columns` and the Gauss–Newton pieces from
it), for one layer ``a = W z + b``, ``z' = f(a)``. The first-order rules they build on, and
the contract (``p``, ``f``, :class:`fnn.layer.Cache`, batch-first rows), are
:mod:`fnn.layer`'s. Nothing here checks its input.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn import activations
from fnn.layer import (
    Cache,
    activation_params,
    affine_batch,
    alpha_grads,
    delta,
    forward_batch,
    input_grad,
    linear_batch,
)

__all__ = [
    "LayerHessian",
    "RCache",
    "ggn_kfac_g",
    "hessian_backward",
    "param_columns",
    "param_ggn_diagonal",
    "param_hessian_block",
    "param_hessian_diagonal",
    "r_backward",
    "r_forward",
    "vjp_columns",
]


# =======================================================================================
# Second order (S27, S28): the R-operator and Hessian backpropagation through one layer.
# =======================================================================================
#
# Pearlmutter's R-operator R{·} = d/dr (·)(θ + r v) at r = 0 is the directional derivative
# along a parameter direction v (one dict per layer, like p: V_W, V_b, V_α). Forward it is the
# JVP; backward it differentiates every line of the VJP once more, which brings in f″ (as
# Σₖ gₖ ∇²fₖ, :func:`fnn.activations.curvature_vp`) and PReLU's ∂²f/∂a∂α. Hessian
# backpropagation (Bishop 5.4) carries, per example, the full matrix H_z = ∂²L/∂z∂z from
# the loss down. Batch-first as in fnn.layer: rows are examples (a leading axis B on every array),
# and the backward inputs carry the batch mean's 1/B, so sums over the rows are means.
# Every ∂²f/∂α² of fnn's activations is 0 (PReLU is linear in α): no term for it below.


class RCache(NamedTuple):
    """What the R-forward pass keeps of one layer for the R-backward pass (S27): ``R{z_prev}``
    (``None`` for the network input, which does not move) and ``R{a}``."""

    r_z_prev: jax.Array | None
    """``R{z_prev}``, the input's directional derivative (``None`` for the network input)."""
    r_a: jax.Array
    """``R{a}``, the pre-activation's directional derivative."""


def r_forward(
    p: dict, f: str, v: dict, Z: jax.Array, R_Z: jax.Array | None
) -> tuple[jax.Array, jax.Array, Cache, RCache]:
    """The R-forward pass of one layer, batch-first (S27, Bishop 5.4.6)::

        R{a} = W R{z_prev} + V_W z_prev + V_b,      R{z} = J_f(a) R{a} + ∂f/∂α V_α

    (rows: ``R{A} = R{Z} Wᵀ + Z V_Wᵀ + V_b``). It is the layer's JVP with the parameter
    tangent ``v`` shared by every example; ``J_f`` is symmetric, so :func:`fnn.layer.delta`'s rule
    gives ``J_f R{a}``. ``R_Z`` is ``None`` for the network input. Returns
    ``(Z', R{Z'}, Cache(Z, A, Z'), RCache(R{Z}, R{A}))``."""
    act, q = activations.get(f), activation_params(p)
    Z_next, cache = forward_batch(p, f, Z)
    R_A = affine_batch(v, Z)  # V_W z + V_b
    if R_Z is not None:
        R_A = R_A + linear_batch(p, R_Z)  # + R{Z} Wᵀ
    R_Z_next = delta(p, f, cache, R_A)
    for k, df_dk in act.param_derivatives.items():
        R_Z_next = R_Z_next + df_dk(cache.a, **q) * v[k]
    return Z_next, R_Z_next, cache, RCache(R_Z, R_A)


def r_backward(
    p: dict, f: str, v: dict, cache: Cache, r_cache: RCache, G: jax.Array, R_G: jax.Array
) -> tuple[dict, jax.Array, jax.Array]:
    """The R-backward pass of one layer, batch-first (S27): every line of
    :func:`fnn.layer.vjp_batch` differentiated along ``v``, for ``G = ∂L/∂Z'`` and ``R{G}``
    coming down::

        δ        = g J_f(a)
        R{δ}     = R{g} J_f(a) + (Σₖ gₖ ∇²fₖ(a)) R{a} + g ⊙ ∂²f/∂a∂α V_α
        R{∂L/∂W} = R{δ}ᵀ z_prev + δᵀ R{z_prev},      R{∂L/∂b} = Σ_rows R{δ}
        R{∂L/∂α} = Σ (R{g} ⊙ ∂f/∂α + g ⊙ ∂²f/∂a∂α ⊙ R{a})
        g_prev   = δ W,      R{g_prev} = R{δ} W + δ V_W

    Returns ``(R{∂L/∂θ} like p, g_prev, R{g_prev})``: the Hessian-vector product's share of
    this layer and what goes on down."""
    act, q = activations.get(f), activation_params(p)
    D = delta(p, f, cache, G)
    R_D = delta(p, f, cache, R_G)
    if not act.piecewise_linear:  # f″ = 0: the curvature term vanishes (relu: 8 % of an HVP)
        R_D = R_D + activations.curvature_vp(act, cache.a, G, r_cache.r_a, **q)
    R_grads = {}
    for k, df_dk in act.param_derivatives.items():
        d2f = act.param_second_derivatives[k](cache.a, **q)  # ∂²f/∂a∂α
        R_D = R_D + G * d2f * v[k]
        R_grads[k] = jnp.sum(R_G * df_dk(cache.a, **q) + G * d2f * r_cache.r_a)
    R_grads["W"] = R_D.T @ cache.z_prev
    if r_cache.r_z_prev is not None:
        R_grads["W"] = R_grads["W"] + D.T @ r_cache.r_z_prev
    R_grads["b"] = jnp.sum(R_D, axis=0)
    return R_grads, input_grad(p, D), input_grad(p, R_D) + input_grad(v, D)


class LayerHessian(NamedTuple):
    """∂²L/∂u∂u of one layer's local variables ``u = (a, α)`` (S28), per example (a leading
    batch axis): ``a`` is ``H_a`` ``(M, M)``; ``a_param[k]`` is ``∂²L/∂a∂k`` ``(M,)`` and
    ``param[k]`` is ``∂²L/∂k²`` ``()`` for each activation parameter ``k`` (PReLU's alpha)."""

    a: jax.Array
    """``H_a = ∂²L/∂a∂a``, shape ``(M, M)`` per example."""
    a_param: dict
    """The mixed ``∂²L/∂a∂k``, shape ``(M,)`` per example, for each activation parameter ``k``."""
    param: dict
    """``∂²L/∂k²``, shape ``()`` per example, for each activation parameter ``k``."""


def _jf_rows(act: activations.Activation, A: jax.Array, H: jax.Array, **q) -> jax.Array:
    """``H J_f(a)`` for ``H`` ``(…, M, M)``: every row ``t`` of ``H`` becomes ``J_f t`` (J_f is
    symmetric), ``a`` broadcast over the rows."""
    return activations.jvp(act, A[..., None, :], H, **q)


def hessian_backward(
    p: dict,
    f: str,
    cache: Cache,
    G: jax.Array,
    H_z: jax.Array,
    *,
    residual: bool = True,
    input_hessian: bool = True,
) -> tuple[LayerHessian, jax.Array, jax.Array | None]:
    """One step of Hessian backpropagation, per example, batch-first (S28, Bishop 5.4)::

        H_a      = J_f(a)ᵀ H_z J_f(a) + Σₖ gₖ ∇²fₖ(a)          (= diag(f″(a) ⊙ g), elementwise)
        ∂²L/∂a∂α = J_f(a)ᵀ H_z ∂f/∂α + g ⊙ ∂²f/∂a∂α,     ∂²L/∂α² = ∂f/∂αᵀ H_z ∂f/∂α
        H_z_prev = Wᵀ H_a W,      g_prev = δ W

    from ``g = ∂L/∂z`` ``(B, M)`` and ``H_z = ∂²L/∂z∂z`` ``(B, M, M)`` at the layer's output.
    ``residual=False`` drops the terms with ``g`` (the second derivatives of ``f``): what is
    left is the Gauss–Newton matrix's recursion (Bishop 5.4.2), ``Jᵀ H_L J`` split at ŷ.
    ``input_hessian=False`` skips ``H_z_prev`` (``None``): the first layer needs none.

    Returns ``(LayerHessian(H_a, ∂²L/∂a∂α, ∂²L/∂α²), g_prev, H_z_prev)``."""
    act, q = activations.get(f), activation_params(p)
    H_a = _jf_rows(act, cache.a, jnp.swapaxes(_jf_rows(act, cache.a, H_z, **q), -1, -2), **q)
    if residual:
        eye = jnp.eye(cache.a.shape[-1], dtype=H_a.dtype)
        # (Σₖ gₖ ∇²fₖ) eᵢ for every i: the residual's rows (it is symmetric).
        H_a = H_a + activations.curvature_vp(act, cache.a[..., None, :], G[..., None, :], eye, **q)
    a_param, param = {}, {}
    for k, df_dk in act.param_derivatives.items():
        c = df_dk(cache.a, **q)  # ∂f/∂α, (B, M)
        H_c = jnp.einsum("...mn,...n->...m", H_z, c)
        a_param[k] = activations.jvp(act, cache.a, H_c, **q)
        if residual:
            a_param[k] = a_param[k] + G * act.param_second_derivatives[k](cache.a, **q)
        param[k] = jnp.sum(c * H_c, axis=-1)
    H_z_prev = p["W"].T @ H_a @ p["W"] if input_hessian else None
    return LayerHessian(H_a, a_param, param), input_grad(p, delta(p, f, cache, G)), H_z_prev


def param_hessian_diagonal(cache: Cache, lh: LayerHessian) -> dict:
    """The diagonal of this layer's block of ``∇²θ L``, summed over the rows (S28)::

        ∂²L/∂W_jk² = (H_a)_jj z_k²,   ∂²L/∂b_j² = (H_a)_jj,   ∂²L/∂α² = ∂²L/∂α²

    (``a_j = Σ_k W_jk z_k + b_j`` is linear in ``W`` and ``b``, so ``∂²L/∂W_jk∂W_lm =
    (H_a)_jl z_k z_m``). Exact per example because ``H_a`` is the full matrix carried down
    by :func:`hessian_backward` — its diagonal alone would not propagate; a batch is the
    sum of the examples' ``(H_a)_jj z_k²``, never ``E[(H_a)_jj] E[z_k²]``. The product is
    taken as ``((H_a)_jj s) s · (z_k / s)²`` with ``s = max_k |z_k|``: no ``0 · ∞`` where
    ``z_k²`` alone would overflow and ``(H_a)_jj`` is 0 (a saturated layer)."""
    H_jj = jnp.diagonal(lh.a, axis1=-2, axis2=-1)
    s = _row_scale(cache.z_prev)[:, None]
    return {
        "W": (H_jj * s * s).T @ (cache.z_prev / s) ** 2,
        "b": jnp.sum(H_jj, axis=0),
        **jax.tree.map(jnp.sum, lh.param),
    }


def _local_jacobian(p: dict, z: jax.Array) -> jax.Array:
    """``U = ∂u/∂θ`` for one example, ``u = (a, α…)`` and ``θ`` this layer's parameters
    flattened as ``jax.flatten_util.ravel_pytree(p)`` does (keys sorted, each leaf
    row-major): ``∂a_j/∂W_lk = δ_jl z_k``, ``∂a/∂b = I``, ``∂α/∂α = 1``. ``(M + n_α, P_i)``."""
    M, extra = p["b"].shape[0], sorted(activation_params(p))

    def columns(k):  # ∂u/∂θ_k: the rows for a, then one row per activation parameter
        if k in ("W", "b"):
            da = (
                jnp.kron(jnp.eye(M, dtype=z.dtype), z[None, :])
                if k == "W"
                else jnp.eye(M, dtype=z.dtype)
            )
            return jnp.concatenate([da, jnp.zeros((len(extra), da.shape[1]), z.dtype)])
        one_hot = (jnp.arange(len(extra)) == extra.index(k)).astype(z.dtype)
        return jnp.concatenate([jnp.zeros(M, z.dtype), one_hot])[:, None]

    return jnp.concatenate([columns(k) for k in sorted(p)], axis=1)


def param_hessian_block(p: dict, cache: Cache, lh: LayerHessian) -> jax.Array:
    """This layer's dense block of ``∇²θ L``, ``(P_i, P_i)`` in ``ravel_pytree(p)`` order,
    summed over the rows (S28): ``Σ_b Uᵀ H_u U`` with ``U = ∂u/∂θ`` (:func:`_local_jacobian`)
    and ``H_u`` the matrix of :class:`LayerHessian` over ``u = (a, α…)``."""
    keys = sorted(lh.param)
    H_aα = jnp.stack([lh.a_param[k] for k in keys], -1) if keys else lh.a[..., :0]
    H_αα = jnp.zeros((*lh.a.shape[:-2], len(keys), len(keys)), lh.a.dtype)
    for i, k in enumerate(keys):  # fnn's activations have at most one parameter (PReLU)
        H_αα = H_αα.at[..., i, i].set(lh.param[k])
    H_u = jnp.concatenate(
        [
            jnp.concatenate([lh.a, H_aα], -1),
            jnp.concatenate([jnp.swapaxes(H_aα, -1, -2), H_αα], -1),
        ],
        -2,
    )
    U = jax.vmap(_local_jacobian, (None, 0))(p, cache.z_prev)
    return jnp.einsum("bup,buv,bvq->pq", U, H_u, U)


# =======================================================================================
# Columns (S28): the VJP with a leading column axis, for a factor S of H_L = S Sᵀ.
# =======================================================================================
#
# The Gauss–Newton matrix of one example is J_bᵀ H_L J_b = (J_bᵀ S)(J_bᵀ S)ᵀ: the C columns
# of S pulled back through the network, each by the plain VJP. Batch-first with a column
# axis: G is (B, C, M), one row of columns per example; every activation's VJP works on the
# last axis, so the cache only gains a column axis of length 1.


def _column_cache(cache: Cache) -> Cache:
    """``cache`` with a column axis after the batch axis, broadcast over the columns."""
    return Cache(*(t[:, None, :] for t in cache))


def vjp_columns(p: dict, f: str, cache: Cache, G: jax.Array) -> tuple[jax.Array, dict, jax.Array]:
    """One layer backward for C columns per example at once, batch-first (S28)::

        Δ[b, c] = G[b, c] · J_f(a_b),   ∂/∂α[b, c] = G[b, c] · ∂f/∂α(a_b),   G_prev = Δ W

    for ``G`` ``(B, C, M)``: column c of example b is ``∂(sᵀ z')/∂z'`` for one column s of
    ``S``. The ``W`` and ``b`` parts of the pulled-back column are ``Δ[b, c] ⊗ z_prev[b]`` and
    ``Δ[b, c]``; they are not formed here (:func:`param_ggn_diagonal`, :func:`ggn_kfac_g`,
    :func:`param_columns` contract them). Equal to ``jax.vmap(jax.vjp)`` over the columns
    (tested). Returns ``(Δ (B, C, M), {α: (B, C)}, G_prev (B, C, D))``."""
    c = _column_cache(cache)
    D = delta(p, f, c, G)
    return D, alpha_grads(p, f, c, G), input_grad(p, D)


def _row_scale(Z: jax.Array) -> jax.Array:
    """``max_d |z_bd|`` per row (1 for a zero row): ``z / s`` is at most 1, so a square of
    it never overflows, and ``(Δ s)²`` is a norm of a product, finite wherever it is."""
    s = jnp.max(jnp.abs(Z), axis=-1)
    return jnp.where(s > 0, s, 1).astype(Z.dtype)


def param_ggn_diagonal(cache: Cache, Delta: jax.Array, alpha: dict, *, per_example=False):
    """The diagonal of this layer's Gauss–Newton block from the pulled-back columns (S28)::

        G_{W_jk} = Σ_b Σ_c (Δ_bcj z_bk)²,   G_{b_j} = Σ_b Σ_c Δ_bcj²,   G_α = Σ_b Σ_c (∂/∂α)_bc²

    (the columns carry the batch mean's weights). Each square is of a product (``Δ s`` and
    ``z / s`` with ``s = max |z_b|``): ``0 · ∞`` never appears where the maths has none.
    ``per_example=True`` keeps the examples apart (a leading axis B, no sum)."""
    s = _row_scale(cache.z_prev)
    z2 = (cache.z_prev / s[:, None]) ** 2
    d2 = jnp.sum(Delta**2, axis=1)  # (B, M)
    ds2 = jnp.sum((Delta * s[:, None, None]) ** 2, axis=1)
    alpha2 = {k: jnp.sum(t**2, axis=1) for k, t in alpha.items()}
    if per_example:
        return {"W": ds2[:, :, None] * z2[:, None, :], "b": d2, **alpha2}
    sums = {k: jnp.sum(t) for k, t in alpha2.items()}
    return {"W": ds2.T @ z2, "b": jnp.sum(d2, axis=0), **sums}


def ggn_kfac_g(Delta: jax.Array) -> jax.Array:
    """K-FAC's output factor from the pulled-back columns (S28): ``Σ_b Σ_c Δ_bc Δ_bcᵀ``
    ``(M, M)`` — ``Σ_b J_bᵀ H_L J_b`` at this layer's pre-activation."""
    return jnp.einsum("bcm,bcn->mn", Delta, Delta)


def param_columns(p: dict, cache: Cache, Delta: jax.Array, alpha: dict) -> jax.Array:
    """The pulled-back columns in this layer's parameter space, ``(B·C, P_i)`` in
    ``ravel_pytree(p)`` order (keys sorted, ``W`` row-major): ``Δ_bc ⊗ z_b`` for ``W``,
    ``(∂/∂α)_bc`` for α, ``Δ_bc`` for ``b``. Their Gram matrix is the Gauss–Newton block."""
    B, C, M = Delta.shape
    parts = {"W": (Delta[..., None] * cache.z_prev[:, None, None, :]).reshape(B * C, -1)}
    parts["b"] = Delta.reshape(B * C, M)
    parts.update({k: t.reshape(B * C, 1) for k, t in alpha.items()})
    return jnp.concatenate([parts[k] for k in sorted(p)], axis=1)
