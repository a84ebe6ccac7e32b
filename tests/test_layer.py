"""The layer record (S2, S14–S18): one layer's forward, VJP, JVP and dense rules, each
against JAX's own transform of the forward rule, and every batch twin against ``jax.vmap``
of the single-example rule, for every activation (float64)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import activations, layer, local_jacobians

TOL = {"rtol": 1e-10, "atol": 1e-12}
D, M, B = 3, 4, 5


def _problem(f, seed=0):
    rng = np.random.default_rng(seed)
    p = {"W": jnp.asarray(rng.normal(size=(M, D))), "b": jnp.asarray(rng.normal(size=M))}
    p.update({k: jnp.asarray(0.1 + 0.2 * v) for k, v in activations.get(f).params.items()})
    Z = jnp.asarray(rng.normal(size=(B, D)))
    G = jnp.asarray(rng.normal(size=(B, M)))
    return p, Z, G


def _z_next(f):
    """The forward rule as a function of (params, input), for JAX to differentiate."""
    return lambda p, z: layer.forward(p, f, z)[0]


@pytest.mark.parametrize("f", activations.names())
def test_forward_is_the_lecture_formula_and_its_batch_twin_equals_vmap(f):
    p, Z, _ = _problem(f)
    z, cache = layer.forward(p, f, Z[0])
    a = p["W"] @ Z[0] + p["b"]
    chex.assert_trees_all_close(cache.a, a, **TOL)
    chex.assert_trees_all_close(z, activations.get(f).fn(a, **layer.activation_params(p)), **TOL)
    chex.assert_trees_all_equal(cache.z_prev, Z[0])
    batch = layer.forward_batch(p, f, Z)
    chex.assert_trees_all_close(batch, jax.vmap(lambda z: layer.forward(p, f, z))(Z), **TOL)


@pytest.mark.parametrize("f", activations.names())
def test_vjp_equals_jax_vjp_and_the_explicit_rule(f):
    """(∂L/∂W, ∂L/∂b, ∂L/∂α, ∂L/∂z) from g = ∂L/∂z': the structured rule, the dense rule of
    the explicit engine and jax.vjp of the forward rule agree, per example and summed over
    a batch."""
    p, Z, G = _problem(f)
    _, cache = layer.forward(p, f, Z[0])
    expected = jax.vjp(_z_next(f), p, Z[0])[1](G[0])
    for rule in (layer.vjp, layer.vjp_explicit):
        chex.assert_trees_all_close(rule(p, f, cache, G[0]), expected, **TOL)
    _, caches = layer.forward_batch(p, f, Z)
    grads, G_prev = layer.vjp_batch(p, f, caches, G)
    per_example = jax.vmap(lambda z, g: jax.vjp(_z_next(f), p, z)[1](g))(Z, G)
    chex.assert_trees_all_close(grads, jax.tree.map(lambda t: t.sum(0), per_example[0]), **TOL)
    chex.assert_trees_all_close(G_prev, per_example[1], **TOL)


@pytest.mark.parametrize("f", activations.names())
def test_delta_is_the_gradient_wrt_the_pre_activation(f):
    """δ = g · J_f(a) (S14): from the cached output for tanh and sigmoid, from a otherwise;
    the same as g · the dense J_f, on any leading axes (a batch, or the rows of I)."""
    p, Z, G = _problem(f)
    _, cache = layer.forward_batch(p, f, Z)
    q = layer.activation_params(p)
    dense = jax.vmap(lambda g, a: g @ local_jacobians.activation(f, a, **q))(G, cache.a)
    chex.assert_trees_all_close(layer.delta(p, f, cache, G), dense, **TOL)
    expected = jax.vmap(lambda g, a: jax.vjp(lambda a: activations.get(f).fn(a, **q), a)[1](g))(
        G, cache.a
    )[0]
    chex.assert_trees_all_close(layer.delta(p, f, cache, G), expected, **TOL)


@pytest.mark.parametrize("f", activations.names())
def test_jvp_equals_jax_jvp_in_input_and_parameters(f):
    """ż' = J_f(a)(W ż + Ẇ z + ḃ) + ∂f/∂α α̇, K tangents as columns, against jax.jvp."""
    p, Z, _ = _problem(f)
    rng = np.random.default_rng(1)
    K = 3
    z_dot = jnp.asarray(rng.normal(size=(D, K)))
    p_dot = jax.tree.map(lambda t: jnp.asarray(rng.normal(size=(*jnp.shape(t), K))), p)
    z, got = layer.jvp(p, f, Z[0], z_dot, p_dot)
    for k in range(K):
        tangent = (jax.tree.map(lambda t, k=k: t[..., k], p_dot), z_dot[:, k])
        primal, expected = jax.jvp(_z_next(f), (p, Z[0]), tangent)
        chex.assert_trees_all_close(got[:, k], expected, **TOL)
        chex.assert_trees_all_close(z, primal, **TOL)
    assert layer.jvp(p, f, Z[0], None, None)[1] is None
    only_input = layer.jvp(p, f, Z[0], z_dot, None)[1]
    chex.assert_trees_all_close(
        only_input[:, 0], jax.jvp(lambda z: _z_next(f)(p, z), (Z[0],), (z_dot[:, 0],))[1], **TOL
    )


@pytest.mark.parametrize("f", ["tanh", "softmax", "prelu"])
def test_dense_layer_jacobian_is_jf_times_w(f):
    """S15: J_{z'}(z) = J_f(a) · W, against jax.jacfwd of the forward rule."""
    p, Z, _ = _problem(f)
    _, cache = layer.forward(p, f, Z[0])
    expected = jax.jacfwd(lambda z: _z_next(f)(p, z))(Z[0])
    chex.assert_trees_all_close(layer.jacobian(p, f, cache), expected, **TOL)


def test_the_rules_compile_under_jit():
    p, Z, G = _problem("tanh")

    @jax.jit
    def both(p, Z, G):
        Z_next, cache = layer.forward_batch(p, "tanh", Z)
        return Z_next, layer.vjp_batch(p, "tanh", cache, G)

    chex.assert_trees_all_close(both(p, Z, G), both.__wrapped__(p, Z, G), rtol=1e-12, atol=1e-14)


def test_augmented_affine_step_equals_the_affine_step():
    """S3: a = Ŵ ẑ with Ŵ = [b, W], ẑ = [1; z] is a = W z + b; augment/split are inverse."""
    p, Z, _ = _problem("tanh")
    chex.assert_trees_all_close(layer.affine_augmented(p, Z[0]), layer.affine(p, Z[0]), **TOL)
    assert layer.augment(p).shape == (M, D + 1)
    chex.assert_trees_all_equal(layer.split_augmented(layer.augment(p)), p)
