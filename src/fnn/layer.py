r"""ONE layer ``a = W z + b``, ``z' = f(a)``: every rule of it, side by side (S2, S14–S18).

The way :mod:`fnn.activations` holds ``f`` beside ``f′``, this module holds one layer's
forward pass beside its derivatives; every engine of fnn is a fold of these functions over
the layers (:mod:`fnn.network`, :mod:`fnn.backprop`, :mod:`fnn.forward_mode`) and no
other module writes the affine step or its transpose. The contract, stated once:

* ``p`` is the layer's parameter dict ``{"W": (M, D), "b": (M,)}`` (PReLU adds its slope
  ``"alpha"``, see :func:`activation_params`); ``f`` the activation's name.
* Single-example maths is written as in the lecture, ``a = W @ z + b``, for ``z`` of shape
  ``(D,)``. Its batch-first twin (``_batch``) takes rows of examples, ``A = Z Wᵀ + b`` for
  ``Z`` of shape ``(B, D)``: one matrix product for the whole batch (tested equal to
  ``jax.vmap`` of the single-example rule).
* The forward pass keeps a :class:`Cache` ``(z_prev, a, z)``: what the backward pass needs.

The rules, for ``g = ∂L/∂z'`` coming back from the layer above (S14, S17)::

    δ        = g · J_f(a)  = g ⊙ f′(a)                      (delta)
    ∂L/∂W    = δ ⊗ z_prev,  ∂L/∂b = δ,  ∂L/∂α = g · ∂f/∂α   (param_grads)
    ∂L/∂z    = δ · J_a(z) = δ W                              (input_grad)

and for tangents ``ż, Ẇ, ḃ, α̇`` going up (S18)::

    ȧ  = W ż + Ẇ z + ḃ,        ż' = J_f(a) ȧ + ∂f/∂α α̇         (jvp)

The dense matrices of the explicit engine, ``J_f``, ``J_a(x) = W``, ``J_a(b) = I`` and
``J_a(W) = I ⊗ z``, come from :mod:`fnn.local_jacobians` (:func:`vjp_explicit`). Nothing here
checks its input: the public functions did, once (:mod:`fnn._checks`). The layer's
second-order and column rules (S27, S28) are :mod:`fnn.layer_curvature`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn import activations, local_jacobians

__all__ = [
    "Cache",
    "activation_params",
    "affine",
    "affine_augmented",
    "affine_batch",
    "alpha_grads",
    "augment",
    "delta",
    "forward",
    "forward_batch",
    "input_grad",
    "jacobian",
    "jvp",
    "linear_batch",
    "param_grads",
    "param_grads_batch",
    "param_grads_norm_terms",
    "param_grads_per_example",
    "param_grads_sq_sum",
    "row_norms",
    "split_augmented",
    "vjp",
    "vjp_batch",
    "vjp_explicit",
]


class Cache(NamedTuple):
    """What the forward pass keeps of one layer for the backward pass (S14): its input
    ``z_prev`` (= z⁽ⁱ⁻¹⁾, the network input ``x`` for the first layer), its pre-activation
    ``a`` and its output ``z``. Batch-first: every field gains the leading axis B."""

    z_prev: jax.Array
    """The layer's input ``z⁽ⁱ⁻¹⁾`` (the network input ``x`` for the first layer)."""
    a: jax.Array
    """The layer's pre-activation ``a⁽ⁱ⁾ = W⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ + b⁽ⁱ⁾``."""
    z: jax.Array
    """The layer's output ``z⁽ⁱ⁾ = f(a⁽ⁱ⁾)``."""


def activation_params(p: dict) -> dict:
    """The activation's own learnable parameters of a layer: every key but ``W`` and ``b``
    (PReLU's ``alpha``), passed to ``fn``/``derivative`` as ``**p``.

    >>> activation_params({"W": 1.0, "b": 0.0, "alpha": 0.25})
    {'alpha': 0.25}
    """
    return {k: v for k, v in p.items() if k not in ("W", "b")}


# ---------------------------------------------------------------------------------------
# Forward (S2, S14): a = W z + b, z' = f(a), with the cache.
# ---------------------------------------------------------------------------------------


def affine(p: dict, z: jax.Array) -> jax.Array:
    """The affine step of one example (S2): ``a = W z + b``."""
    return p["W"] @ z + p["b"]


def linear_batch(p: dict, Z: jax.Array) -> jax.Array:
    """The linear part of the affine step of a batch (S2, S18): ``Z Wᵀ`` (row b is
    ``W z_b``) — also how a tangent of the layer's input moves its pre-activation."""
    return Z @ p["W"].T


def affine_batch(p: dict, Z: jax.Array) -> jax.Array:
    """The affine step of a batch, rows are examples: ``A = Z Wᵀ + b`` (row b is
    ``W z_b + b``)."""
    return linear_batch(p, Z) + p["b"]


def augment(p: dict) -> jax.Array:
    """``Ŵ = [b, W]`` of shape ``(M, D + 1)``: the bias becomes column 0 (S3)."""
    return jnp.concatenate([p["b"][:, None], p["W"]], axis=1)


def split_augmented(W_hat: jax.Array) -> dict:
    """The inverse of :func:`augment`: ``Ŵ = [b, W]`` → ``{"W": W, "b": b}`` (S3)."""
    return {"W": W_hat[:, 1:], "b": W_hat[:, 0]}


def affine_augmented(p: dict, z: jax.Array) -> jax.Array:
    """The affine step in the augmented notation (S3): ``a = Ŵ ẑ`` with ``Ŵ = [b, W]`` and
    ``ẑ = [1; z]`` — the same ``a`` as :func:`affine` (tested)."""
    return augment(p) @ jnp.concatenate([jnp.ones((1,), z.dtype), z])


def forward(p: dict, f: str, z: jax.Array) -> tuple[jax.Array, Cache]:
    """One layer forward for one example ``z`` ``(D,)`` (S2, S14): ``(z', Cache(z, a, z'))``
    with ``a = W z + b``, ``z' = f(a)``."""
    a = affine(p, z)
    z_next = activations.get(f).fn(a, **activation_params(p))
    return z_next, Cache(z, a, z_next)


def forward_batch(p: dict, f: str, Z: jax.Array) -> tuple[jax.Array, Cache]:
    """The batch-first twin of :func:`forward`: ``A = Z Wᵀ + b``, ``Z' = f(A)``, for ``Z``
    ``(B, D)``; returns ``(Z', Cache(Z, A, Z'))``."""
    A = affine_batch(p, Z)
    Z_next = activations.get(f).fn(A, **activation_params(p))
    return Z_next, Cache(Z, A, Z_next)


# ---------------------------------------------------------------------------------------
# Backward, the VJP (S14, S17): from g = ∂L/∂z' to ∂L/∂W, ∂L/∂b, ∂L/∂α and ∂L/∂z.
# ---------------------------------------------------------------------------------------


def delta(p: dict, f: str, cache: Cache, g: jax.Array) -> jax.Array:
    """``δ = ∂L/∂a = g · J_f(a)`` without building ``J_f`` (S14, S17): ``g ⊙ f′(a)``, or the
    softmax form (:func:`fnn.activations.vjp`). Any leading axes (examples, or rows of a
    Jacobian). Where the activation has ``derivative_from_output`` (tanh: ``1 − z²``,
    sigmoid: ``z (1 − z)``), ``f′`` comes from the cached output, as in ``jax.grad``."""
    act, q = activations.get(f), activation_params(p)
    if act.derivative_from_output is not None:
        return g * act.derivative_from_output(cache.z, **q)
    return activations.vjp(act, cache.a, g, **q)


def input_grad(p: dict, delta: jax.Array) -> jax.Array:
    """``∂L/∂z = δ · J_a(z) = δ W`` (S17): the row ``δ`` times ``W``; any leading axes."""
    return delta @ p["W"]


def pull_back(p: dict, f: str, cache: Cache, G: jax.Array) -> tuple[None, jax.Array]:
    """``G ← (G · J_f(a)) W``: rows of ``G`` back through one layer, no parameter gradient
    (S17, S18: the reverse-mode Jacobian's step). Returns ``(None, G · J_f(a) · W)``, in the
    ``(y, carry)`` order of every backward rule."""
    return None, input_grad(p, delta(p, f, cache, G))


def alpha_grads(p: dict, f: str, cache: Cache, g: jax.Array) -> dict:
    """``∂f/∂α`` contracted with ``g`` over the units, per example (leading axes kept)."""
    act, q = activations.get(f), activation_params(p)
    return {k: jnp.sum(g * d(cache.a, **q), axis=-1) for k, d in act.param_derivatives.items()}


def param_grads(p: dict, f: str, cache: Cache, g: jax.Array, delta: jax.Array) -> dict:
    """The parameter gradients of one example (S14, S17): ``∂L/∂W = δ ⊗ z_prev``,
    ``∂L/∂b = δ``, ``∂L/∂α = g · ∂f/∂α(a)``."""
    return {"W": jnp.outer(delta, cache.z_prev), "b": delta, **alpha_grads(p, f, cache, g)}


def param_grads_batch(p: dict, f: str, cache: Cache, G: jax.Array, Delta: jax.Array) -> dict:
    """The batch twin of :func:`param_grads`, summed over the rows (the rows of ``G`` carry
    the batch mean's ``1/B``): ``∂L/∂W = Δᵀ Z_prev``, ``∂L/∂b = Σ_rows Δ``,
    ``∂L/∂α = Σ_rows G · ∂f/∂α(A)``."""
    alpha = {k: jnp.sum(v) for k, v in alpha_grads(p, f, cache, G).items()}
    return {"W": Delta.T @ cache.z_prev, "b": jnp.sum(Delta, axis=0), **alpha}


def vjp(p: dict, f: str, cache: Cache, g: jax.Array) -> tuple[dict, jax.Array]:
    """One layer backward for one example (S14, S17): ``(param grads, ∂L/∂z_prev)`` from
    ``g = ∂L/∂z'``."""
    d = delta(p, f, cache, g)
    return param_grads(p, f, cache, g, d), input_grad(p, d)


def vjp_batch(p: dict, f: str, cache: Cache, G: jax.Array) -> tuple[dict, jax.Array]:
    """The batch twin of :func:`vjp`: gradients summed over the rows of ``G`` ``(B, M)``."""
    D = delta(p, f, cache, G)
    return param_grads_batch(p, f, cache, G, D), input_grad(p, D)


def vjp_explicit(p: dict, f: str, cache: Cache, g: jax.Array) -> tuple[dict, jax.Array]:
    """:func:`vjp` by the lecture's dense matrices, one example (S16, S17)::

        δ = g · J_f(a)  (M × M),   ∂L/∂b = δ · J_a(b) = δ · I,
        ∂L/∂W = δ · J_a(W) = δ ⊗ z_prev   (the third-order I ⊗ z contracted with δ),
        ∂L/∂α = g · J_z(α),        ∂L/∂z_prev = δ · J_a(z) = δ · W

    Returns ``(param grads, ∂L/∂z_prev)``, as :func:`vjp` (tested equal).
    """
    q = activation_params(p)
    d = g @ local_jacobians.activation(f, cache.a, **q)
    grads = {"W": jnp.outer(d, cache.z_prev), "b": d @ local_jacobians.affine_b(p["b"])}
    grads.update({k: g @ local_jacobians.activation_param(f, k, cache.a, **q) for k in q})
    return grads, d @ local_jacobians.affine_x(p["W"])


def jacobian(p: dict, f: str, cache: Cache) -> jax.Array:
    """The dense Jacobian of one layer ``z' = f(W z + b)`` w.r.t. its input, one example
    (S15, S16): ``J_{z'}(z) = J_f(a) · J_a(z) = J_f(a) · W``, ``(M, D)`` — the factor the
    lecture's chain multiplies once per layer."""
    J_f = local_jacobians.activation(f, cache.a, **activation_params(p))
    return local_jacobians.chain(J_f, local_jacobians.affine_x(p["W"]))


# ---------------------------------------------------------------------------------------
# Forward mode, the JVP (S18): tangents up through the same layer.
# ---------------------------------------------------------------------------------------


def _jvp_f(act: activations.Activation, a: jax.Array, A_dot: jax.Array, **q) -> jax.Array:
    """``J_f(a) · Ȧ`` for a tangent matrix ``Ȧ`` ``(M, K)`` (one tangent per column):
    ``f′(a) ⊙ Ȧ`` column by column, or the softmax form (units last: the transposes)."""
    if act.elementwise:
        return activations.jvp(act, a[:, None], A_dot, **q)
    return activations.jvp(act, a, A_dot.T, **q).T


def jvp(p: dict, f: str, z: jax.Array, z_dot, p_dot=None):
    """One layer of forward accumulation for one example (S18)::

        ȧ = J_a(z) ż + J_a(W) Ẇ + J_a(b) ḃ = W ż + Ẇ z + ḃ,    ż' = J_f(a) ȧ + ∂f/∂α α̇

    Tangents come as matrices, one direction per column: ``z_dot`` ``(D, K)`` (``None``
    for zero), ``p_dot`` like ``p`` with a trailing axis ``K`` on every leaf (``None`` for
    zero). Returns ``(z', ż')`` with ``ż'`` ``(M, K)``, or ``None`` when both are zero."""
    act, q = activations.get(f), activation_params(p)
    a = affine(p, z)
    a_dot = None if z_dot is None else p["W"] @ z_dot
    if p_dot is not None:
        # J_a(W) · Ẇ = Ẇ z  (∂aᵢ/∂w_kl = δᵢₖ z_l),  J_a(b) · ḃ = ḃ
        a_dot_p = jnp.einsum("mdk,d->mk", p_dot["W"], z) + p_dot["b"]
        a_dot = a_dot_p if a_dot is None else a_dot + a_dot_p
    z_next = act.fn(a, **q)
    if a_dot is None:
        return z_next, None
    z_dot = _jvp_f(act, a, a_dot, **q)
    if p_dot is not None:
        for k, df_dk in act.param_derivatives.items():
            z_dot = z_dot + df_dk(a, **q)[:, None] * p_dot[k]  # ∂f/∂α · α̇
    return z_next, z_dot


# ---------------------------------------------------------------------------------------
# Per example (S24, S25): the rows of G and Δ kept apart, each row its own example's loss.
# :mod:`fnn.extensions` folds these; ``G`` and ``Δ`` are ``(B, M)`` and NOT divided by B.
# Norms are of products, never products of squares: ‖δ‖² ‖z‖² is 0 · ∞ when ‖z‖² overflows
# and δ = 0, where the gradient δ ⊗ z itself is 0.
# ---------------------------------------------------------------------------------------


def param_grads_per_example(p: dict, f: str, cache: Cache, G: jax.Array, Delta: jax.Array):
    """:func:`param_grads` for every row b at once (S24): ``∂L_b/∂W = δ_b ⊗ z_b`` ``(B, M, D)``,
    ``∂L_b/∂b = δ_b`` ``(B, M)``, ``∂L_b/∂α = g_b · ∂f/∂α(a_b)`` ``(B,)``."""
    outer = Delta[:, :, None] * cache.z_prev[:, None, :]
    return {"W": outer, "b": Delta, **alpha_grads(p, f, cache, G)}


def row_norms(v: jax.Array) -> jax.Array:
    """``‖v_b‖₂`` over the last axis, scaled so that it overflows only where the norm does:
    ``m ‖v / m‖`` with ``m = max |v_b|`` (``‖(1e20, 1e20)‖`` is ``1.4e20`` in float32, where
    ``Σ v²`` is ``inf``). A zero row has norm 0, a row with an inf has norm inf."""
    m = jnp.max(jnp.abs(v), axis=-1)
    scale = jnp.where(m > 0, m, 1)[..., None]  # 0 for a zero row; inf, NaN pass through
    n = m * jnp.sqrt(jnp.sum((v / scale) ** 2, axis=-1))
    return jnp.where(jnp.isinf(m), m, n)


def param_grads_norm_terms(p: dict, f: str, cache: Cache, G: jax.Array, Delta: jax.Array):
    """Terms whose 2-norm per row is ``‖∂L_b/∂θ‖`` over this layer's parameters, without
    forming the gradients (S24): ``‖(δ_b ⊗ z_b, δ_b)‖_F = ‖δ_b‖ ‖(z_b, 1)‖`` for ``W`` and
    ``b``, then ``|∂L_b/∂α|`` per activation parameter. Returns ``(B, 1 + #α)``; the term
    is 0 where ``δ_b = 0`` even if ``‖z_b‖`` overflows (the gradient is 0 there)."""
    d = row_norms(Delta)
    z1 = jnp.hypot(row_norms(cache.z_prev), 1)
    wb = jnp.where(d == 0, 0, d * z1)
    return jnp.stack([wb, *(jnp.abs(g) for g in alpha_grads(p, f, cache, G).values())], -1)


def _column_scaled(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(v / s, s)`` with ``s = max_b |v_bj|`` per column (1 where the column is 0)."""
    s = jnp.max(jnp.abs(v), axis=0)
    return v / jnp.where(s > 0, s, 1), s


def param_grads_sq_sum(p: dict, f: str, cache: Cache, G: jax.Array, Delta: jax.Array) -> dict:
    """``Σ_b (∂L_b/∂θ)²`` elementwise, like ``p``, without forming the gradients (S25):
    ``W``: ``(Δ ⊙ Δ)ᵀ (Z ⊙ Z)`` (entry ``(m, d)`` is ``Σ_b δ_bm² z_bd²``), ``b``: ``Σ_b δ_b²``,
    ``α``: ``Σ_b (∂L_b/∂α)²``. For ``W`` the columns of ``Δ`` and ``Z`` are scaled by their
    largest entries ``t_m``, ``s_d`` first, ``(t_m s_d √S_md)²`` with ``S`` the scaled
    product: no ``z²`` overflows (nor meets a ``δ = 0``) where ``δ z`` is finite."""
    alpha = {k: jnp.sum(g**2) for k, g in alpha_grads(p, f, cache, G).items()}
    D, t = _column_scaled(Delta)
    Z, s = _column_scaled(cache.z_prev)
    W = (t[:, None] * jnp.sqrt((D**2).T @ Z**2) * s[None, :]) ** 2
    return {"W": W, "b": jnp.sum(Delta**2, axis=0), **alpha}
