"""One layer's second-order rules (fnn.layer, section "Second order"; S27, S28), every
activation, three witnesses each: JAX's own transform (``jax.jvp`` of the first-order rules,
``jax.hessian`` of the local loss), central differences in float64, and the closed form.

Each activation is one jit (the compile is what costs time here): B = 3 examples, D = 4
inputs, M = 5 units, a direction v for every parameter (PReLU's alpha included), random
incoming ``R{z_prev}``, ``g``, ``R{g}`` and a symmetric ``H_z``. Tolerances: transforms and
closed forms rtol 1e-10 (atol 1e-12); central differences (ε = 1e-6) rtol 1e-6 (atol 1e-8).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from fnn import activations, layer, layer_curvature

F64 = {"rtol": 1e-10, "atol": 1e-12}
CD = {"rtol": 1e-6, "atol": 1e-8}
EPS = 1e-6
B, D, M = 3, 4, 5


def inputs(f, seed=0):
    """Parameters p, a direction v like them, Z, R{Z}, G, R{G} and a symmetric H_z."""
    rng = np.random.default_rng(seed)
    shapes = {"W": (M, D), "b": (M,), **{k: () for k in activations.get(f).params}}

    def draw(shape, scale=1.0):
        return jnp.asarray(rng.normal(0.0, scale, shape))

    p = {k: draw(s, 0.7) for k, s in shapes.items()}
    v = {k: draw(s) for k, s in shapes.items()}
    H = draw((B, M, M))
    return p, v, draw((B, D)), draw((B, D)), draw((B, M)), draw((B, M)), H + H.transpose(0, 2, 1)


def first_order(f, p, Z, G):
    """The first-order rules whose derivative along (v, R{Z}, R{G}) the R-operator is."""
    Z_next, cache = layer.forward_batch(p, f, Z)
    grads, G_prev = layer.vjp_batch(p, f, cache, G)
    return Z_next, cache.a, grads, G_prev


def local_loss(f, p, z0, G, H_z):
    """``L_b(z) = g_b · (z − z0_b) + ½ (z − z0_b)ᵀ H_b (z − z0_b)`` at the layer's output, so
    that ∂L/∂z = g and ∂²L/∂z² = H_z at z = z0 (the setting of hessian_backward): as a
    function of (a_b, α) for example b, and of θ = (W, α, b) summed over the batch."""
    act, q = activations.get(f), layer.activation_params(p)

    def of_u(a, alpha, b):
        dz = act.fn(a, **{k: alpha for k in q}) - z0[b]
        return G[b] @ dz + 0.5 * dz @ H_z[b] @ dz

    def of_params(p, Z):
        dz = act.fn(Z @ p["W"].T + p["b"], **layer.activation_params(p)) - z0
        return jnp.sum(G * dz) + 0.5 * jnp.einsum("bm,bmn,bn->", dz, H_z, dz)

    return of_u, of_params


def central(fn, x, direction):
    """``(fn(x + ε d) − fn(x − ε d)) / 2ε`` for pytrees x, d and pytree-valued fn."""
    plus = fn(jax.tree.map(lambda t, d: t + EPS * d, x, direction))
    minus = fn(jax.tree.map(lambda t, d: t - EPS * d, x, direction))
    return jax.tree.map(lambda a, b: (a - b) / (2 * EPS), plus, minus)


@pytest.mark.parametrize("f", activations.names())
def test_second_order_rules(f):
    """For every activation, in one jit: R-forward = ``jax.jvp`` of forward_batch and
    R-backward = ``jax.jvp`` of vjp_batch along (v, R{Z}, R{G}); hessian_backward's
    ∂²L/∂(a, α)² = ``jax.hessian`` of the local loss per example, = the closed form
    J_fᵀ H_z J_f + Σ gₖ ∇²fₖ (activations' dense J_f and curvature, themselves proven in
    test_activations), and J_fᵀ H_z J_f without the residual."""
    p, v, Z, R_Z, G, R_G, H_z = inputs(f)
    act, q = activations.get(f), layer.activation_params(p)
    alpha = q.get("alpha", jnp.zeros(()))

    @jax.jit
    def run(p, v, Z, R_Z, G, R_G, H_z):
        Z_next, R_Z_next, cache, r_cache = layer_curvature.r_forward(p, f, v, Z, R_Z)
        R_grads, G_prev, R_G_prev = layer_curvature.r_backward(p, f, v, cache, r_cache, G, R_G)
        r_rules = (Z_next, G_prev), (R_Z_next, r_cache.r_a, R_grads, R_G_prev)
        r_jax = jax.jvp(lambda *t: first_order(f, *t), (p, Z, G), (v, R_Z, R_G))
        lh = layer_curvature.hessian_backward(p, f, cache, G, H_z)[0]
        lh_gn = layer_curvature.hessian_backward(p, f, cache, G, H_z, residual=False)[0]
        of_u = local_loss(f, p, cache.z, G, H_z)[0]
        H_u = jax.vmap(jax.hessian(of_u, (0, 1)), (0, None, 0))(cache.a, alpha, jnp.arange(B))
        J_f = jax.vmap(lambda a: act.jacobian(a, **q))(cache.a)
        gauss_newton = jnp.einsum("bki,bkl,blj->bij", J_f, H_z, J_f)
        residual = jax.vmap(lambda a, g: activations.curvature(act, a, g, **q))(cache.a, G)
        return r_rules, r_jax, (lh, lh_gn, H_u, gauss_newton, residual)

    r_rules, (primal, tangent), (lh, lh_gn, H_u, gauss_newton, residual) = run(
        p, v, Z, R_Z, G, R_G, H_z
    )
    (Z_next, G_prev), R_hand = r_rules
    chex.assert_trees_all_close((Z_next, G_prev), (primal[0], primal[3]), **F64)
    chex.assert_trees_all_close(R_hand, tangent, **F64)
    chex.assert_trees_all_close(lh.a, H_u[0][0], **F64)
    chex.assert_trees_all_close(lh.a, gauss_newton + residual, **F64)
    chex.assert_trees_all_close(lh_gn.a, gauss_newton, **F64)
    assert set(lh.a_param) == set(lh.param) == set(q)
    for k in q:
        chex.assert_trees_all_close((lh.a_param[k], lh.param[k]), (H_u[0][1], H_u[1][1]), **F64)


# One activation of each kind: elementwise and smooth (tanh), with a parameter (prelu), not
# elementwise (softmax). What the remaining checks exercise does not depend on f beyond
# ∂²L/∂(a, α)², proven for every f above (and f′, f″, ∂²f/∂a∂α against central differences
# in test_activations).
@pytest.mark.parametrize("f", ["tanh", "prelu", "softmax"])
def test_second_order_rules_central_differences_and_blocks(f):
    """R-forward and R-backward = central differences of the first-order rules along
    (v, R{Z}, R{G}); H_a = central differences of the hand gradient δ(a) = J_fᵀ (g + H_z Δz)
    of the local loss; H_z_prev = ``jax.hessian`` in z_prev; the layer's dense block and
    diagonal = ``jax.hessian`` of the local loss in θ = (W, α, b)."""
    p, v, Z, R_Z, G, R_G, H_z = inputs(f, seed=2)
    act, q = activations.get(f), layer.activation_params(p)
    alpha = q.get("alpha", jnp.zeros(()))

    @jax.jit
    def run(p, v, Z, R_Z, G, R_G, H_z):
        _, R_Z_next, cache, r_cache = layer_curvature.r_forward(p, f, v, Z, R_Z)
        R_grads, _, R_G_prev = layer_curvature.r_backward(p, f, v, cache, r_cache, G, R_G)
        r_cd = central(lambda t: first_order(f, *t), (p, Z, G), (v, R_Z, R_G))
        lh, _, H_prev = layer_curvature.hessian_backward(p, f, cache, G, H_z)
        of_u, of_params = local_loss(f, p, cache.z, G, H_z)
        rows = jnp.arange(B)

        def hand_delta(a, b):  # ∂L_b/∂a by the first-order rules
            return activations.vjp(act, a, G[b] + H_z[b] @ (act.fn(a, **q) - cache.z[b]), **q)

        H_cd = jax.vmap(
            lambda a, b: jax.vmap(lambda e: central(lambda t: hand_delta(t, b), a, e))(jnp.eye(M))
        )(cache.a, rows)
        H_x = jax.vmap(jax.hessian(lambda z, b: of_u(p["W"] @ z + p["b"], alpha, b)))(Z, rows)
        theta, unravel = ravel_pytree(p)
        H_theta = jax.hessian(lambda t: of_params(unravel(t), Z))(theta)
        block = layer_curvature.param_hessian_block(p, cache, lh)
        diagonal = ravel_pytree(layer_curvature.param_hessian_diagonal(cache, lh))[0]
        R_hand = (R_Z_next, r_cache.r_a, R_grads, R_G_prev)
        return R_hand, r_cd[:4], (lh.a, H_cd), (H_prev, H_x), (block, diagonal, H_theta)

    R_hand, r_cd, (H_a, H_cd), (H_prev, H_x), (block, diagonal, H_theta) = run(
        p, v, Z, R_Z, G, R_G, H_z
    )
    chex.assert_trees_all_close(R_hand, r_cd, **CD)
    chex.assert_trees_all_close(H_a, H_cd, **CD)
    chex.assert_trees_all_close(H_prev, H_x, **F64)
    chex.assert_trees_all_close(block, H_theta, **F64)
    chex.assert_trees_all_close(diagonal, jnp.diag(H_theta), **F64)
    _, cache = layer.forward_batch(p, f, Z)
    assert layer_curvature.hessian_backward(p, f, cache, G, H_z, input_hessian=False)[2] is None


@jax.jit
def _identity_rules(p, v, Z, R_Z, G, R_G, H_z):
    _, R_Z_next, cache, r_cache = layer_curvature.r_forward(p, "identity", v, Z, R_Z)
    R_grads, _, R_G_prev = layer_curvature.r_backward(p, "identity", v, cache, r_cache, G, R_G)
    _, _, cache0, r_cache0 = layer_curvature.r_forward(p, "identity", v, Z, None)
    R_grads0 = layer_curvature.r_backward(p, "identity", v, cache0, r_cache0, G, R_G)[0]
    lh, _, H_prev = layer_curvature.hessian_backward(p, "identity", cache, G, H_z)
    block = layer_curvature.param_hessian_block(p, cache, lh)
    return R_Z_next, r_cache.r_a, R_grads, R_G_prev, R_grads0, H_prev, block, lh


def test_closed_forms_of_a_linear_layer():
    """f = identity (J_f = I, f″ = 0):

    * R{a} = R{z} Wᵀ + z V_Wᵀ + V_b = R{z'}; R{δ} = R{g}, so R{∂L/∂W} = R{g}ᵀ z + gᵀ R{z},
      R{∂L/∂b} = Σ R{g}, R{g_prev} = R{g} W + g V_W; for the network input (R{z} = None)
      R{∂L/∂W} = R{g}ᵀ z;
    * with H_z = 2I (L2): H_a = 2I, H_z_prev = 2 WᵀW, and the block over (W, b) in ravel
      order is 2 I ⊗ Σ_b [z; 1][z; 1]ᵀ.
    """
    p, v, Z, R_Z, G, R_G, _ = (
        np.asarray(t) if not isinstance(t, dict) else t for t in inputs("identity")
    )
    H_z = np.broadcast_to(2 * np.eye(M), (B, M, M))
    R_Z_next, R_A, R_grads, R_G_prev, R_grads0, H_prev, block, lh = _identity_rules(
        p, v, Z, R_Z, G, R_G, H_z
    )
    W, V = np.asarray(p["W"]), np.asarray(v["W"])
    expected_R_A = R_Z @ W.T + Z @ V.T + np.asarray(v["b"])
    chex.assert_trees_all_close((R_Z_next, R_A), (expected_R_A, expected_R_A), **F64)
    chex.assert_trees_all_close(R_grads, {"W": R_G.T @ Z + G.T @ R_Z, "b": R_G.sum(0)}, **F64)
    chex.assert_trees_all_close(R_G_prev, R_G @ W + G @ V, **F64)
    chex.assert_trees_all_close(R_grads0, {"W": R_G.T @ Z, "b": R_G.sum(0)}, **F64)
    chex.assert_trees_all_close(lh.a, H_z, **F64)
    chex.assert_trees_all_close(H_prev, np.broadcast_to(2 * W.T @ W, (B, D, D)), **F64)
    Z_bar = np.concatenate([Z, np.ones((B, 1))], axis=1)
    per_unit = 2 * Z_bar.T @ Z_bar  # unit j's (W_j·, b_j) block; ravel order is W, then b
    expected = np.zeros((M * D + M, M * D + M))
    for j in range(M):
        idx = np.r_[j * D : (j + 1) * D, M * D + j]
        expected[np.ix_(idx, idx)] = per_unit
    chex.assert_trees_all_close(block, expected, **F64)


# ---------------------------------------------------------------------------------------
# Columns (S28): the VJP with a leading column axis.
# ---------------------------------------------------------------------------------------

C = 3


@pytest.mark.parametrize("f", activations.names())
def test_vjp_columns_equals_vmap_of_jax_vjp(f):
    """vjp_columns = jax.vmap over examples and columns of jax.vjp of one example's layer
    (Δ = ∂(s·z')/∂a, α-columns, G_prev); its W/b parts by param_columns, their squares summed
    by param_ggn_diagonal and ggn_kfac_g, against the same jax.vjp columns."""
    p, _, Z, _, _, _, _ = inputs(f, seed=3)
    G = jnp.asarray(np.random.default_rng(4).normal(size=(B, C, M)))
    _, cache = layer.forward_batch(p, f, Z)
    Delta, alpha, G_prev = layer_curvature.vjp_columns(p, f, cache, G)

    def one(z, g):  # one example, one column: (∂/∂θ, ∂/∂z) of g · z'(θ, z)
        def out(p, z):
            a = p["W"] @ z + p["b"]
            return activations.get(f).fn(a, **layer.activation_params(p))

        return jax.vjp(out, p, z)[1](g)

    grads, g_prev = jax.vmap(lambda z, gs: jax.vmap(lambda g: one(z, g))(gs))(Z, G)
    chex.assert_trees_all_close((Delta, G_prev), (grads["b"], g_prev), **F64)
    chex.assert_trees_all_close(alpha, {k: grads[k] for k in alpha}, **F64)
    U = layer_curvature.param_columns(p, cache, Delta, alpha)
    by_jax = jax.vmap(jax.vmap(lambda t: ravel_pytree(t)[0]))(grads).reshape(B * C, -1)
    chex.assert_trees_all_close(U, by_jax, **F64)
    diagonal = ravel_pytree(layer_curvature.param_ggn_diagonal(cache, Delta, alpha))[0]
    chex.assert_trees_all_close(diagonal, jnp.sum(by_jax**2, axis=0), **F64)
    chex.assert_trees_all_close(
        layer_curvature.ggn_kfac_g(Delta),
        Delta.reshape(B * C, M).T @ Delta.reshape(B * C, M),
        **F64,
    )
    each = layer_curvature.param_ggn_diagonal(cache, Delta, alpha, per_example=True)
    chex.assert_trees_all_close(
        jax.vmap(lambda t: ravel_pytree(t)[0])(each),
        jnp.sum(by_jax.reshape(B, C, -1) ** 2, axis=1),
        **F64,
    )


def test_param_ggn_diagonal_is_finite_where_z_squared_overflows():
    """Inputs 1e20 in float32 (z² = 1e40 overflows) with Δ = 0 on one row and 1e-30 on the
    other: (Δ z)² is 0 and 1e-20 — never 0 · ∞ — as jax.vmap(jax.grad) squares them."""
    z = jnp.array([[1e20, -3e19], [1e20, 1.0]], jnp.float32)
    cache = layer.Cache(z, jnp.zeros((2, 1), jnp.float32), jnp.zeros((2, 1), jnp.float32))
    Delta = jnp.array([[[0.0]], [[1e-30]]], jnp.float32)  # (B, C, M) = (2, 1, 1)
    d = layer_curvature.param_ggn_diagonal(cache, Delta, {})
    expected = (1e-30 * 1e20) ** 2
    # (1e-30 · 1)² = 1e-60 underflows to 0 in float32, as it does for jax
    chex.assert_trees_all_close(d["W"], jnp.array([[expected, 0.0]]), rtol=1e-5, atol=1e-38)
    each = layer_curvature.param_ggn_diagonal(cache, Delta, {}, per_example=True)
    chex.assert_tree_all_finite((d, each))
