"""Forward accumulation and full Jacobians in both modes (S18, S19).

Witnesses: ``jax.jacfwd``/``jax.jacrev`` for Jacobians, ``jax.jvp`` for JVPs, ``jax.grad``
and the reverse engine for gradients, central differences for both.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import activations, forward_mode, losses, numerical

KEY = jax.random.key(0)
ACTS = activations.names()

ZOO = [
    ((1, 1), ("identity",)),
    ((3, 5, 2), ("tanh", "identity")),
    ((10, 10, 10, 10), ("sigmoid", "sigmoid", "identity")),
    ((4, 7, 7, 7, 3), ("relu", "prelu", "gelu", "softmax")),
    ((2, 9, 6), ("prelu", "softmax")),
]


def _setup(sizes, acts, seed=0):
    """A network with non-default PReLU slopes (so their gradients are not trivial)."""
    net = fnn.MLP(sizes, acts)
    params = fnn.init(jax.random.key(seed), net)
    for i, layer in enumerate(params):
        if "alpha" in layer:
            layer["alpha"] = jnp.asarray(0.1 + 0.2 * i)
    x = jax.random.normal(jax.random.key(seed + 1), (net.in_features,))
    return net, params, x


def _f(net, params):
    return lambda x: fnn.apply(net, params, x)


# ---------------------------------------------------------------------------------------
# Full Jacobians (S18, S19).
# ---------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_jacobian_both_modes_equal_jax_on_random_architectures(sizes, data, seed):
    acts = tuple(data.draw(st.sampled_from(ACTS)) for _ in sizes[1:])
    net, params, x = _setup(tuple(sizes), acts, seed)

    @jax.jit  # one compilation per example instead of one per primitive
    def all_four(params, x):
        return (
            fnn.jacobian(net, params, x, method="forward"),
            fnn.jacobian(net, params, x, method="reverse"),
            jax.jacfwd(_f(net, params))(x),
            jax.jacrev(_f(net, params))(x),
        )

    J_fwd, J_rev, J_jacfwd, J_jacrev = all_four(params, x)
    chex.assert_shape(J_fwd, (net.out_features, net.in_features))
    chex.assert_trees_all_close(J_fwd, J_jacfwd, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(J_rev, J_jacrev, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("sizes", "acts"), ZOO[3:])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian_equals_central_differences(sizes, acts, mode):
    """``vᵀ J`` for a random ``v`` is the gradient of ``vᵀ nn(x)``: one central difference."""
    net, params, x = _setup(sizes, acts)
    v = jax.random.normal(jax.random.key(9), (net.out_features,))

    @jax.jit
    def both(params, x):
        numeric = numerical.central_difference(lambda x: v @ fnn.apply(net, params, x), x, 1e-6)
        return v @ fnn.jacobian(net, params, x, method=mode), numeric

    chex.assert_trees_all_close(*both(params, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("sizes", "acts"), [((8, 6, 2), ("tanh", "identity")), ((2, 6, 8), ("tanh", "softmax"))]
)
def test_auto_picks_the_mode_with_fewer_passes_and_agrees(sizes, acts):
    net, params, x = _setup(sizes, acts)
    expected = "forward" if net.in_features < net.out_features else "reverse"
    assert fnn.cost_model.choose_method(net) == expected
    chex.assert_trees_all_close(
        fnn.jacobian(net, params, x, method="auto"), jax.jacrev(_f(net, params))(x), rtol=1e-10
    )


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian_float32_agrees_with_jax_and_keeps_dtype(mode):
    net = fnn.MLP((5, 8, 4), ("tanh", "softmax"))
    params = fnn.init(KEY, net, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (5,), jnp.float32)
    J, J_jax = jax.jit(
        lambda p, x: (fnn.jacobian(net, p, x, method=mode), jax.jacrev(_f(net, p))(x))
    )(params, x)
    assert J.dtype == jnp.float32
    chex.assert_trees_all_close(J, J_jax, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian_is_jit_and_vmap_compatible(mode):
    net, params, x = _setup((4, 7, 7, 7, 3), ("relu", "prelu", "gelu", "softmax"))
    X = jax.random.normal(jax.random.key(5), (3, 4))
    jitted = jax.jit(fnn.jacobian, static_argnames="method")
    eager = fnn.jacobian(net, params, x, method=mode)
    chex.assert_trees_all_close(jitted(net, params, x, method=mode), eager, rtol=1e-12)
    batched = jax.jit(jax.vmap(lambda x: fnn.jacobian(net, params, x, method=mode)))(X)
    expected = jax.jit(jax.vmap(jax.jacrev(_f(net, params))))(X)
    chex.assert_trees_all_close(batched, expected, rtol=1e-10)


def test_jacobian_of_a_batch_is_one_per_example():
    net, params, x = _setup((3, 5, 2), ("tanh", "identity"))
    X = jnp.stack([x, 2 * x])
    J = fnn.jacobian(net, params, X)
    chex.assert_shape(J, (2, 2, 3))
    chex.assert_trees_all_close(J[1], fnn.jacobian(net, params, X[1]), rtol=1e-12)


def test_jacobian_rejects_bad_input_before_tracing():
    net, params, x = _setup((3, 5, 2), ("tanh", "identity"))
    with pytest.raises(ValueError, match=r"x must have shape .*got \(4,\)"):
        fnn.jacobian(net, params, jnp.ones(4))
    with pytest.raises(
        ValueError, match=r"Unknown method 'sideways'.*'auto', 'forward', 'reverse', 'explicit'"
    ):
        fnn.jacobian(net, params, x, method="sideways")
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\]"):
        fnn.jacobian(net, [{"W": jnp.ones((5, 4)), "b": jnp.ones(5)}, params[1]], x)


# ---------------------------------------------------------------------------------------
# JVPs (S18).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sizes", "acts"), ZOO)
def test_jvp_equals_jax_jvp_in_input_and_parameters(sizes, acts):
    net, params, x = _setup(sizes, acts)
    x_dot = jax.random.normal(jax.random.key(7), x.shape)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(8), len(leaves))
    params_dot = jax.tree.unflatten(
        tree, [jax.random.normal(k, jnp.shape(v)) for k, v in zip(keys, leaves)]
    )

    @jax.jit
    def jvps(params, x, x_dot, params_dot):
        expected = jax.jvp(lambda p, x: fnn.apply(net, p, x), (params, x), (params_dot, x_dot))
        both = forward_mode.jvp(net, params, x, x_dot=x_dot, params_dot=params_dot)
        # Each part alone, and a batch (one shared parameter tangent).
        _, y_dot_x = forward_mode.jvp(net, params, x, x_dot=x_dot)
        _, y_dot_p = forward_mode.jvp(net, params, x, params_dot=params_dot)
        X, X_dot = jnp.stack([x, -x]), jnp.stack([x_dot, x_dot])
        _, Y_dot = forward_mode.jvp(net, params, X, x_dot=X_dot, params_dot=params_dot)
        return expected, both, y_dot_x, y_dot_p, Y_dot[0]

    expected, both, y_dot_x, y_dot_p, batch_0 = jvps(params, x, x_dot, params_dot)
    chex.assert_trees_all_close(both, expected, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(y_dot_x + y_dot_p, expected[1], rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(batch_0, expected[1], rtol=1e-10, atol=1e-12)


def test_jvp_rejects_mismatched_tangents():
    net, params, x = _setup((3, 5, 2), ("tanh", "identity"))
    with pytest.raises(ValueError, match=r"x_dot must have the shape of x, \(3,\); got \(2,\)"):
        forward_mode.jvp(net, params, x, x_dot=jnp.ones(2))
    with pytest.raises(ValueError, match=r"params_dot\[1\]"):
        forward_mode.jvp(net, params, x, params_dot=[params[0], {"W": jnp.ones((2, 5))}])


# ---------------------------------------------------------------------------------------
# Gradients by forward accumulation (S18) vs jax.grad and the reverse engine (S19).
# ---------------------------------------------------------------------------------------

LOSS_CASES = [
    ((3, 5, 2), ("tanh", "identity"), "l2"),
    ((4, 6, 3), ("prelu", "identity"), "l1"),
    ((4, 6, 3), ("sigmoid", "softmax"), "cross_entropy"),
    ((4, 7, 6, 3), ("prelu", "elu", "identity"), "softmax_cross_entropy"),
    ((3, 5, 2), ("softplus", "sigmoid"), "binary_cross_entropy"),
]


def _targets(loss, net, batch, key):
    shape = () if batch is None else (batch,)
    if loss.target == "label":
        return jax.random.randint(key, shape, 0, net.out_features)
    y = jax.random.uniform(key, (*shape, net.out_features), minval=0.1, maxval=0.9)
    return y


def _mean_loss(net, loss):
    def fn(params, x, y):
        if x.ndim == 1:
            return loss.fn(fnn.apply(net, params, x), y)
        return jnp.mean(jax.vmap(loss.fn)(fnn.apply(net, params, x), y))

    return fn


@functools.partial(jax.jit, static_argnums=(0, 1))
def _all_gradients(net, loss_name, params, x, y):
    """Forward mode, jax.grad, the reverse engine and the public dispatch, in one compilation."""
    loss = losses.get(loss_name)
    return (
        fnn.value_and_grad(net, params, x, y, loss=loss_name, method="forward", chunk_size=16),
        jax.value_and_grad(_mean_loss(net, loss), argnums=(0, 1))(params, x, y),
        fnn.value_and_grad(net, params, x, y, loss=loss_name, method="reverse"),
        fnn.value_and_grad(net, params, x, y, loss=loss_name, method="forward"),
    )


@pytest.mark.parametrize(("sizes", "acts", "loss_name"), LOSS_CASES)
@pytest.mark.parametrize("batch", [None, 4])
def test_forward_gradient_equals_jax_grad_and_reverse(sizes, acts, loss_name, batch):
    net, params, _ = _setup(sizes, acts)
    loss = losses.get(loss_name)
    shape = (net.in_features,) if batch is None else (batch, net.in_features)
    x = jax.random.normal(jax.random.key(3), shape)
    y = _targets(loss, net, batch, jax.random.key(4))
    (value, grads), (ref_value, (ref_p, ref_x)), reverse, public = _all_gradients(
        net, loss_name, params, x, y
    )
    chex.assert_trees_all_close(value, ref_value, rtol=1e-12)
    chex.assert_trees_all_close(grads, {"params": ref_p, "x": ref_x}, rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close((value, grads), reverse, rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(public, (value, grads), rtol=1e-12, atol=1e-14)
    if "prelu" in acts:  # α is a parameter: its gradient must be there and non-trivial
        assert abs(float(grads["params"][acts.index("prelu")]["alpha"])) > 1e-6


def test_forward_gradient_equals_central_differences():
    net, params, _ = _setup((4, 7, 6, 3), ("prelu", "tanh", "identity"))
    x = jax.random.normal(jax.random.key(3), (5, 4))
    y = jax.random.normal(jax.random.key(4), (5, 3))
    fn = _mean_loss(net, losses.get("l2"))

    @jax.jit
    def both(params, x):
        grads = fnn.value_and_grad(net, params, x, y, loss="l2", method="forward")[1]
        tree = {"params": params, "x": x}
        return grads, numerical.central_difference(lambda t: fn(t["params"], t["x"], y), tree)

    chex.assert_trees_all_close(*both(params, x), rtol=1e-6, atol=1e-8)


def test_chunk_size_does_not_change_the_gradient():
    net, params, _ = _setup((3, 4, 2), ("prelu", "identity"))  # 27 parameters
    x = jax.random.normal(jax.random.key(3), (3, 3))
    y = jax.random.normal(jax.random.key(4), (3, 2))
    sizes = (None, 1, 7, 27, 1000)
    results = jax.jit(
        lambda p, x: [
            fnn.value_and_grad(net, p, x, y, loss="l2", method="forward", chunk_size=k)
            for k in sizes
        ]
    )(params, x)
    for got in results[1:]:
        chex.assert_trees_all_close(got, results[0], rtol=1e-12, atol=1e-14)


def test_forward_gradient_is_jit_compatible():
    net, params, x = _setup((3, 5, 2), ("tanh", "identity"))
    y = jnp.ones(2)
    jitted = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))
    chex.assert_trees_all_close(
        jitted(net, params, x, y, loss="l2", method="forward"),
        fnn.value_and_grad(net, params, x, y, loss="l2", method="forward"),
        rtol=1e-12,
    )


def test_forward_gradient_rejects_bad_input():
    net, params, x = _setup((3, 5, 2), ("tanh", "softmax"))
    with pytest.raises(ValueError, match=r"chunk_size must be a positive integer; got 0"):
        fnn.value_and_grad(net, params, x, jnp.ones(2), loss="l2", method="forward", chunk_size=0)
    with pytest.raises(ValueError, match=r"output activation must be 'identity'; got 'softmax'"):
        fnn.value_and_grad(
            net, params, x, jnp.array(1), loss="softmax_cross_entropy", method="forward"
        )
    with pytest.raises(ValueError, match=r"y for loss 'l2' must have the output's shape"):
        fnn.value_and_grad(net, params, x, jnp.ones(3), loss="l2", method="forward")
    with pytest.raises(ValueError, match=r"Unknown loss"):
        fnn.value_and_grad(net, params, x, jnp.ones(2), loss="l3", method="forward")


def test_forward_gradient_float32_keeps_dtype_and_agrees():
    net = fnn.MLP((4, 6, 2), ("tanh", "identity"))
    params = fnn.init(KEY, net, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float32)
    y = jnp.zeros((3, 2), jnp.float32)
    (value, grads), ref = jax.jit(
        lambda p, x: (
            fnn.value_and_grad(net, p, x, y, loss="l2", method="forward"),
            jax.grad(_mean_loss(net, losses.get("l2")), argnums=(0, 1))(p, x, y),
        )
    )(params, x)
    assert value.dtype == jnp.float32
    chex.assert_trees_all_equal_dtypes(grads, {"params": params, "x": x})
    chex.assert_trees_all_close(grads, {"params": ref[0], "x": ref[1]}, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_less(0, np.abs(grads["x"]).max())
