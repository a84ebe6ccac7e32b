"""Networks as pure functions (S1–S5, S22)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import _checks, network

KEY = jax.random.key(0)
HIDDEN = ("sigmoid", "tanh", "relu", "prelu", "identity")

SPECS = [
    ((1, 1), ("identity",)),
    ((3, 5, 2), ("tanh", "identity")),
    ((10, 10, 10, 10), ("sigmoid", "sigmoid", "identity")),
    ((4, 7, 7, 7, 3), ("relu", "prelu", "tanh", "softmax")),
]


@pytest.mark.parametrize(("sizes", "acts"), SPECS)
def test_init_shapes_follow_the_spec(sizes, acts):
    net = fnn.MLP(sizes, acts)
    params = fnn.init(KEY, net)
    assert len(params) == net.num_layers
    for p, D, M in zip(params, sizes[:-1], sizes[1:]):
        chex.assert_shape(p["W"], (M, D))
        chex.assert_shape(p["b"], (M,))
        np.testing.assert_array_equal(p["b"], 0)
    _checks.check_params(net, params)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5),
    data=st.data(),
    batch=st.integers(1, 5),
)
def test_apply_shapes_and_batch_equals_single(sizes, data, batch):
    acts = tuple(data.draw(st.sampled_from(HIDDEN)) for _ in sizes[1:])
    net = fnn.MLP(tuple(sizes), acts)
    params = fnn.init(KEY, net)
    x = jax.random.normal(jax.random.key(1), (batch, net.in_features))
    y = fnn.apply(net, params, x)
    chex.assert_shape(y, (batch, net.out_features))
    single = jnp.stack([fnn.apply(net, params, xi) for xi in x])
    # A batch is a matrix product, one example a matrix-vector product: their sums round
    # differently, by ~ε times the summands (O(1)), not times a result that cancels to ~0.
    chex.assert_trees_all_close(y, single, rtol=1e-12, atol=1e-15)


def test_init_is_deterministic_and_key_dependent():
    net = fnn.MLP((5, 8, 3), ("tanh", "identity"))
    chex.assert_trees_all_equal(fnn.init(KEY, net), fnn.init(KEY, net))
    other = fnn.init(jax.random.key(1), net)
    assert not np.allclose(other[0]["W"], fnn.init(KEY, net)[0]["W"])
    # One key split per layer: the two layers do not share random numbers.
    assert not np.allclose(
        fnn.init(KEY, fnn.MLP((4, 4, 4), ("tanh", "tanh")))[0]["W"],
        fnn.init(KEY, fnn.MLP((4, 4, 4), ("tanh", "tanh")))[1]["W"],
    )


@pytest.mark.parametrize(
    ("scheme", "variance"),
    [
        ("glorot_normal", lambda D, M: 2 / (D + M)),
        ("glorot_uniform", lambda D, M: 2 / (D + M)),  # U(−l, l): l²/3 = 2/(D+M)
        ("he_normal", lambda D, M: 2 / D),
        ("he_uniform", lambda D, M: 2 / D),
        ("lecun_normal", lambda D, M: 1 / D),
        ("normal", lambda D, M: 1.0),
    ],
)
def test_scheme_variance_matches_its_formula(scheme, variance):
    D, M = 400, 300
    W = fnn.init(KEY, fnn.MLP((D, M), ("identity",)), scheme)[0]["W"]
    # 120 000 draws: the sample variance is within ~1 % (4 standard errors) of the formula.
    np.testing.assert_allclose(np.var(W), variance(D, M), rtol=0.02)
    assert abs(float(np.mean(W))) < 4 * math.sqrt(variance(D, M) / W.size)


def test_scale_and_dtype():
    net = fnn.MLP((20, 30), ("identity",))
    p1 = fnn.init(KEY, net, dtype=jnp.float32)
    p3 = fnn.init(KEY, net, scale=3.0, dtype=jnp.float32)
    np.testing.assert_allclose(p3[0]["W"], 3 * p1[0]["W"], rtol=1e-6)
    assert fnn.init(KEY, net)[0]["W"].dtype == jnp.float64  # x64 is on in the tests
    assert p3[0]["W"].dtype == jnp.float32 and p3[0]["b"].dtype == jnp.float32


def test_prelu_layer_holds_its_alpha():
    params = fnn.init(KEY, fnn.MLP((3, 4, 2), ("prelu", "identity")))
    assert set(params[0]) == {"W", "b", "alpha"} and set(params[1]) == {"W", "b"}
    chex.assert_shape(params[0]["alpha"], ())
    assert network.activation_params(params[0]) == {"alpha": params[0]["alpha"]}
    assert network.activation_params(params[1]) == {}


def test_apply_is_the_lecture_composition():
    """nn_θ(x) = f_out(W³ f²(W² f¹(W¹ x + b¹) + b²) + b³) (S4), written out by hand."""
    net = fnn.MLP((4, 5, 6, 3), ("sigmoid", "tanh", "identity"))
    params = fnn.init(KEY, net)
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases
    x = jnp.arange(4.0)
    (W1, b1), (W2, b2), (W3, b3) = ((p["W"], p["b"]) for p in params)
    expected = W3 @ jnp.tanh(W2 @ jax.nn.sigmoid(W1 @ x + b1) + b2) + b3
    chex.assert_trees_all_close(fnn.apply(net, params, x), expected, rtol=1e-12)


def test_forward_cache_holds_x_a_z_of_every_layer():
    net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    params = fnn.init(KEY, net)
    x = jnp.array([0.5, -1.0, 2.0])
    y, cache = fnn.forward_pass(net, params, x)
    assert len(cache) == 2
    np.testing.assert_array_equal(cache[0].z_prev, x)
    chex.assert_trees_all_close(cache[0].a, params[0]["W"] @ x + params[0]["b"])
    chex.assert_trees_all_close(cache[0].z, jnp.tanh(cache[0].a))
    np.testing.assert_array_equal(cache[1].z_prev, cache[0].z)
    np.testing.assert_array_equal(cache[1].z, y)
    _, batch_cache = fnn.forward_pass(net, params, jnp.stack([x, x]))
    chex.assert_shape(batch_cache[0].a, (2, 4))


def test_a_neuron_is_a_layer_with_one_unit():
    """S1 = S2 with M = 1."""
    w, b, x = jnp.array([0.3, -0.2, 0.5]), jnp.array(0.1), jnp.array([1.0, 2.0, -1.0])
    z = network.neuron(w, b, x, "sigmoid")
    a_layer, z_layer = network.layer({"W": w[None, :], "b": b[None]}, x, "sigmoid")
    chex.assert_shape(z_layer, (1,))
    chex.assert_trees_all_close(z_layer[0], z)
    chex.assert_trees_all_close(a_layer[0], jnp.sum(w * x) + b)


def test_augmented_notation_round_trip_and_same_output():
    """S3: a = [b, W][1; x] = Ŵ x̂."""
    net = fnn.MLP((4, 6, 2), ("tanh", "identity"))
    params = jax.tree.map(lambda p: p + 0.3, fnn.init(KEY, net))
    W_hat = network.augment(params[0])
    chex.assert_shape(W_hat, (6, 5))
    np.testing.assert_array_equal(W_hat[:, 0], params[0]["b"])
    chex.assert_trees_all_equal(network.split_augmented(W_hat), params[0])
    x = jax.random.normal(KEY, (3, 4))
    chex.assert_trees_all_close(
        network.apply_augmented(net, params, x), fnn.apply(net, params, x), rtol=1e-12
    )


def test_summary_counts_like_bishop():
    """S5: Bishop's Fig. 5.1 network D-M-K is a 2-layer network."""
    s = fnn.summary(fnn.MLP((3, 5, 2), ("tanh", "identity")))
    assert (s.num_layers, s.hidden_units, s.num_params) == (2, 5, 3 * 5 + 5 + 5 * 2 + 2)
    assert "2-layer" in str(s)
    s = fnn.summary(fnn.MLP((2, 4, 4, 1), ("prelu", "relu", "sigmoid")))
    assert (s.num_layers, s.hidden_units, s.num_params) == (3, 8, 12 + 1 + 20 + 5)


def test_jit_and_vmap_over_apply():
    net = fnn.MLP((3, 8, 2), ("tanh", "softmax"))
    params = fnn.init(KEY, net)
    x = jax.random.normal(KEY, (6, 3))
    expected = fnn.apply(net, params, x)
    chex.assert_trees_all_close(jax.jit(fnn.apply)(net, params, x), expected, rtol=1e-12)
    chex.assert_trees_all_close(
        jax.vmap(fnn.apply, in_axes=(None, None, 0))(net, params, x), expected, rtol=1e-12
    )
    chex.assert_trees_all_close(
        jax.jit(jax.vmap(fnn.apply, in_axes=(None, None, 0)))(net, params, x),
        expected,
        rtol=1e-12,
    )


def test_mlp_is_frozen_hashable_and_static():
    net = fnn.MLP([3, 4, 2], ["tanh", "identity"])
    assert net.sizes == (3, 4, 2) and net.activations == ("tanh", "identity")
    assert hash(net) == hash(fnn.MLP((3, 4, 2), ("tanh", "identity")))
    assert jax.tree.leaves(net) == []
    with pytest.raises(AttributeError):
        net.sizes = (1, 2)


@pytest.mark.parametrize(
    ("sizes", "acts", "match"),
    [
        ((3,), (), "at least two"),
        ((), (), "at least two"),
        ((3, 0), ("tanh",), r"sizes\[1\] must be a positive integer"),
        ((3, -2), ("tanh",), "positive integer"),
        ((3, 2.5), ("tanh",), "positive integer"),
        ((True, 2), ("tanh",), "positive integer"),
        ("32", ("tanh",), "sequence of widths"),
        ((3, 4, 2), ("tanh",), "one activation per layer: 2"),
        ((3, 2), ("tanh", "tanh"), "one activation per layer"),
        (
            (3, 2),
            ("tanhh",),
            r"activations\[0\]: Unknown activation 'tanhh' \(did you mean 'tanh'\?\)",
        ),
        ((3, 2), "tanh", "sequence of names"),
    ],
)
def test_mlp_rejects_bad_specs(sizes, acts, match):
    with pytest.raises(ValueError, match=match):
        fnn.MLP(sizes, acts)


def test_init_rejects_unknown_scheme_listing_the_known_ones():
    with pytest.raises(ValueError, match="glorot_normal.*he_normal"):
        fnn.init(KEY, fnn.MLP((2, 2), ("tanh",)), scheme="xavier")
    with pytest.raises(ValueError, match=r"\(did you mean 'he_normal'\?\)"):
        fnn.init(KEY, fnn.MLP((2, 2), ("tanh",)), scheme="he_norml")
    with pytest.raises(TypeError, match="net must be an fnn.MLP; got tuple"):
        fnn.init(KEY, (2, 2))


def test_apply_rejects_bad_params_and_inputs_before_tracing():
    net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    params = fnn.init(KEY, net)
    with pytest.raises(ValueError, match="2 layers.*got 1"):
        fnn.apply(net, params[:1], jnp.ones(3))
    bad = [params[0], {"W": jnp.ones((2, 5)), "b": jnp.ones(2)}]
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\] \(layer 2\).*\(2, 4\).*\(2, 5\)"):
        fnn.apply(net, bad, jnp.ones(3))
    with pytest.raises(ValueError, match=r"params\[0\]\['b'\].*\(4,\).*\(3,\)"):
        fnn.apply(net, [{"W": params[0]["W"], "b": jnp.ones(3)}, params[1]], jnp.ones(3))
    with pytest.raises(ValueError, match="keys"):
        fnn.apply(net, [{"W": params[0]["W"]}, params[1]], jnp.ones(3))
    with pytest.raises(ValueError, match=r"D = 3; got \(5,\)"):
        fnn.apply(net, params, jnp.ones(5))
    with pytest.raises(ValueError, match=r"got \(2, 2, 3\)"):
        fnn.apply(net, params, jnp.ones((2, 2, 3)))
    with pytest.raises(ValueError, match=r"got \(\)"):
        fnn.apply(net, params, 1.0)
    # The same checks fire under jit, at trace time, as ValueError — not an XLA error.
    with pytest.raises(ValueError, match="D = 3"):
        jax.jit(fnn.apply)(net, params, jnp.ones((4, 7)))
