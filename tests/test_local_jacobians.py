"""Every explicit Jacobian equals jax.jacfwd / jax.jacrev of what it differentiates (S15, S16,
S19), in float64 to rtol 1e-12."""

import chex
import jax
import jax.numpy as jnp
import pytest

from fnn import activations, local_jacobians, losses
from fnn import layer as layer_rules

TOL = {"rtol": 1e-12, "atol": 1e-12}
M, D = 4, 3


@pytest.fixture
def affine():
    kW, kb, kx = jax.random.split(jax.random.key(0), 3)
    return (
        jax.random.normal(kW, (M, D)),
        jax.random.normal(kb, (M,)),
        jax.random.normal(kx, (D,)),
    )


def _a(W, b, x):
    return W @ x + b


@pytest.mark.parametrize("jac", [jax.jacfwd, jax.jacrev])
def test_affine_jacobians_equal_jax(affine, jac):
    """S16: J_a(x) = W, J_a(b) = I, J_a(W) = I ⊗ x with ∂aᵢ/∂w_kl = δᵢₖ x_l."""
    W, b, x = affine
    chex.assert_trees_all_close(local_jacobians.affine_x(W), jac(_a, argnums=2)(W, b, x), **TOL)
    chex.assert_trees_all_close(local_jacobians.affine_b(b), jac(_a, argnums=1)(W, b, x), **TOL)
    J_W = local_jacobians.affine_W(W, x)
    chex.assert_shape(J_W, (M, M, D))
    chex.assert_trees_all_close(J_W, jac(_a, argnums=0)(W, b, x), **TOL)


def test_affine_W_is_delta_ik_x_l(affine):
    """S16: the third-order tensor entry by entry."""
    W, _, x = affine
    J_W = local_jacobians.affine_W(W, x)
    for i in range(M):
        for k in range(M):
            expected = x if i == k else jnp.zeros(D)
            chex.assert_trees_all_close(J_W[i, k], expected, **TOL)


def test_row_times_I_kron_x_is_the_outer_product(affine):
    """S16/S17: δ · (I ⊗ x) = δ ⊗ x, the (M, D) weight gradient the lecture writes instead."""
    W, _, x = affine
    delta = jax.random.normal(jax.random.key(1), (M,))
    chex.assert_trees_all_close(
        local_jacobians.row_times(delta, local_jacobians.affine_W(W, x)), jnp.outer(delta, x), **TOL
    )
    chex.assert_trees_all_close(local_jacobians.row_times(delta, W), delta @ W, **TOL)


def _activation_params(name):
    return {p: 0.3 for p in activations.get(name).params}


@pytest.mark.parametrize("name", activations.names())
@pytest.mark.parametrize("jac", [jax.jacfwd, jax.jacrev])
def test_activation_jacobian_equals_jax(name, jac):
    """S16: diag(f′(a)) for elementwise f, diag(s) − s sᵀ for softmax."""
    a = jnp.array([-1.3, -0.4, 0.2, 0.9, 2.1])
    p = _activation_params(name)
    J = local_jacobians.activation(name, a, **p)
    chex.assert_shape(J, (5, 5))
    chex.assert_trees_all_close(J, jac(lambda a: activations.get(name).fn(a, **p))(a), **TOL)
    if activations.get(name).elementwise:
        chex.assert_trees_all_close(J, jnp.diag(jnp.diag(J)), **TOL)


def test_softmax_jacobian_is_diag_s_minus_s_sT():
    a = jnp.array([0.5, -1.0, 2.0])
    s = activations.get("softmax").fn(a)
    expected = jnp.diag(s) - jnp.outer(s, s)
    chex.assert_trees_all_close(local_jacobians.activation("softmax", a), expected, **TOL)


@pytest.mark.parametrize(
    "name", [n for n in activations.names() if activations.get(n).param_derivatives]
)
def test_activation_param_jacobian_equals_jax(name):
    """∂f(a)/∂p for a learnable parameter (PReLU's α), a column of length M."""
    a = jnp.array([-1.3, -0.4, 0.2, 0.9])
    act = activations.get(name)
    for param in act.param_derivatives:
        p = _activation_params(name)

        def f_of_p(v, param=param, p=p):
            return act.fn(a, **{**p, param: v})

        expected = jax.jacfwd(f_of_p)(jnp.asarray(p[param]))
        chex.assert_trees_all_close(
            local_jacobians.activation_param(name, param, a, **p), expected, **TOL
        )


def test_activation_param_unknown_name_raises():
    with pytest.raises(ValueError, match="learnable parameter of activation 'tanh'"):
        local_jacobians.activation_param("tanh", "alpha", jnp.zeros(2))


def _loss_inputs(name):
    """A valid (ŷ, y) for the loss: probabilities where it needs them, labels or vectors."""
    loss = losses.get(name)
    y_hat = jnp.array([-0.7, 0.4, 1.1])
    if loss.on_probabilities:
        y_hat = jnp.array([0.2, 0.5, 0.3]) if loss.target == "label" else jnp.array([0.1, 0.6, 0.8])
    y = jnp.array(1) if loss.target == "label" else jnp.array([0.3, 0.0, 1.0])
    return y_hat, y


@pytest.mark.parametrize("name", losses.names())
@pytest.mark.parametrize("jac", [jax.jacfwd, jax.jacrev])
def test_loss_row_equals_jax(name, jac):
    """S16: the row vector J_L(ŷ) of every loss."""
    y_hat, y = _loss_inputs(name)
    expected = jac(losses.get(name).fn)(y_hat, y)
    chex.assert_trees_all_close(local_jacobians.loss(name, y_hat, y), expected, **TOL)


def test_l2_row_is_the_lectures():
    """S16: J_L2 = [2(ŷᵢ − yᵢ)]."""
    row = local_jacobians.loss("l2", jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 2.0, 4.0]))
    chex.assert_trees_all_close(row, jnp.array([1.0, 0.0, -2.0]), **TOL)


@pytest.mark.parametrize("f", ["tanh", "softmax", "prelu"])
def test_chain_rule_and_layer_jacobian_equal_jax(affine, f):
    """S15: J_{g∘f} = J_g J_f, here for z = f(W x + b) and then g = softmax."""
    W, b, x = affine
    layer_params = {"W": W, "b": b, **_activation_params(f)}
    p = _activation_params(f)

    def layer(x):
        return activations.get(f).fn(W @ x + b, **p)

    J_layer = layer_rules.jacobian(layer_params, f, layer_rules.forward(layer_params, f, x)[1])
    chex.assert_trees_all_close(J_layer, jax.jacfwd(layer)(x), **TOL)
    z = layer(x)
    J = local_jacobians.chain(local_jacobians.activation("softmax", z), J_layer)
    expected = jax.jacrev(lambda x: activations.get("softmax").fn(layer(x)))(x)
    chex.assert_trees_all_close(J, expected, **TOL)


def test_jacobians_jit():
    """S22: the Jacobian functions compile."""
    W, x = jnp.ones((2, 3)), jnp.arange(3.0)
    chex.assert_trees_all_close(
        jax.jit(local_jacobians.affine_W)(W, x), local_jacobians.affine_W(W, x), **TOL
    )
    a = jnp.array([0.1, -0.2])
    chex.assert_trees_all_close(
        jax.jit(local_jacobians.activation, static_argnums=0)("sigmoid", a),
        local_jacobians.activation("sigmoid", a),
        **TOL,
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda W, b, x: local_jacobians.affine_W(W, jnp.ones(D + 1)), r"x must have shape \(3,\)"),
        (
            lambda W, b, x: local_jacobians.affine_W(W, jnp.ones((2, D))),
            r"x must have shape \(3,\)",
        ),
        (lambda W, b, x: local_jacobians.affine_W(x, x), r"W must have shape \(M, D\); got \(3,\)"),
        (lambda W, b, x: local_jacobians.affine_b(jnp.ones((2, M))), r"b must have shape \(M,\)"),
        (
            lambda W, b, x: local_jacobians.chain(W, W),
            r"J_f must have shape \(3, n\); got \(4, 3\)",
        ),
        (
            lambda W, b, x: local_jacobians.row_times(x, W),
            r"delta must have shape \(4,\); got \(3,\)",
        ),
        (
            lambda W, b, x: local_jacobians.loss("cross_entropy", jnp.full(M, 0.25), 7),
            r"labels in \[0, 4\).*got 7",
        ),
        (lambda W, b, x: local_jacobians.loss("l2", jnp.ones((2, M)), jnp.ones((2, M))), "y_hat"),
        (
            lambda W, b, x: local_jacobians.activation_param("prelu", "alpha", jnp.ones((2, M))),
            r"a must have shape \(M,\)",
        ),
    ],
)
def test_bad_shapes_raise_instead_of_a_wrong_matrix(affine, call, match):
    """A batch where one example belongs, or factors that do not chain: ValueError, before
    jnp broadcasts or contracts them into something silently wrong."""
    with pytest.raises(ValueError, match=match):
        call(*affine)
