"""Linear collapse (S8) and parameter-space symmetries (S9), in float64."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import symmetry

ZOO = fnn.activations.names()
FLIPPABLE = [f for f in ZOO if fnn.activations.get(f).flip_offset is not None]
NOT_FLIPPABLE = [f for f in ZOO if fnn.activations.get(f).flip_offset is None]


def _net_and_params(sizes, acts, seed=0):
    """Random float64 parameters, drawn by NumPy (no XLA compile per new shape). Weights of
    scale 2/√D and random biases: units work away from 0, where a wrong flip would show."""
    net = fnn.MLP(sizes, acts)
    rng = np.random.default_rng(seed)
    params = []
    for layer_shapes, f in zip(net.layer_shapes(), acts):
        M, D = layer_shapes["W"]
        layer_params = {"W": 2 * rng.standard_normal((M, D)) / np.sqrt(D),
                        "b": rng.standard_normal(M)}  # fmt: skip
        layer_params.update(fnn.activations.get(f).params)
        params.append(jax.tree.map(jnp.asarray, layer_params))
    return net, params


def _x(D, B=7, seed=2):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, D)))


def _assert_params_differ(p, q):
    leaves = zip(jax.tree.leaves(p), jax.tree.leaves(q))
    assert any(not np.allclose(a, b) for a, b in leaves), "the transformation was a no-op"


# ---------------------------------------------------------------------------------------
# S8: linear collapse.
# ---------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    f_out=st.sampled_from(["identity", "softmax", "sigmoid"]),
)
def test_collapse_equals_network_S8(sizes, f_out):
    acts = ("identity",) * (len(sizes) - 2) + (f_out,)
    net, params = _net_and_params(tuple(sizes), acts)

    @jax.jit  # one compile per example, not one per operation and shape
    def both(params, x):
        W, b = symmetry.collapse(net, params)
        return W, b, fnn.activations.get(f_out).fn(x @ W.T + b), fnn.apply(net, params, x)

    W, b, y_collapsed, y_network = both(params, _x(sizes[0]))
    chex.assert_shape((W, b), [(sizes[-1], sizes[0]), (sizes[-1],)])
    chex.assert_trees_all_close(y_collapsed, y_network, rtol=1e-12, atol=1e-12)


def test_collapse_is_the_product_of_the_weights_S8():
    net, params = _net_and_params((3, 4, 2), ("identity", "identity"))
    W, b = symmetry.collapse(net, params)
    chex.assert_trees_all_close(W, params[1]["W"] @ params[0]["W"])
    chex.assert_trees_all_close(b, params[1]["W"] @ params[0]["b"] + params[1]["b"])


def test_collapse_under_jit_S8():
    net, params = _net_and_params((3, 5, 5, 2), ("identity", "identity", "identity"))
    chex.assert_trees_all_close(
        jax.jit(symmetry.collapse)(net, params), symmetry.collapse(net, params)
    )


@pytest.mark.parametrize("f", [f for f in ZOO if f != "identity"])
def test_collapse_refuses_a_nonlinear_hidden_layer_S8(f):
    net, params = _net_and_params((3, 4, 4, 2), ("identity", f, "identity"))
    with pytest.raises(ValueError, match=rf"layer 2 \(params\[1\]\).*{f!r}"):
        symmetry.collapse(net, params)


# ---------------------------------------------------------------------------------------
# S9: permutations and sign flips.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("f", ZOO)
def test_permutation_keeps_the_function_S9(f):
    net, params = _net_and_params((3, 5, 4, 2), (f, "tanh", "identity"))
    x = _x(3)
    for seed in range(3):
        perm = jax.random.permutation(jax.random.key(seed), 5)
        new = symmetry.permute(net, params, 0, perm)
        _assert_params_differ(params, new)
        chex.assert_trees_all_close(
            fnn.apply(net, new, x), fnn.apply(net, params, x), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("f", FLIPPABLE)
def test_sign_flip_keeps_the_function_S9(f):
    net, params = _net_and_params((3, 5, 4, 2), ("tanh", f, "identity"))
    x = _x(3)
    for seed in range(3):
        mask = jax.random.bernoulli(jax.random.key(seed), 0.5, (4,)).at[0].set(True)
        new = symmetry.flip(net, params, 1, mask)
        _assert_params_differ(params, new)
        chex.assert_trees_all_close(
            fnn.apply(net, new, x), fnn.apply(net, params, x), rtol=1e-12, atol=1e-12
        )


def test_sigmoid_flip_needs_the_bias_correction_S9():
    """Without the correction b ← b + W mask the function changes: the test can fail."""
    net, params = _net_and_params((2, 3, 1), ("sigmoid", "identity"))
    mask = jnp.array([True, False, True])
    new = symmetry.flip(net, params, 0, mask)
    uncorrected = [new[0], {**new[1], "b": params[1]["b"]}]
    x = _x(2)
    chex.assert_trees_all_close(fnn.apply(net, new, x), fnn.apply(net, params, x))
    assert not np.allclose(fnn.apply(net, uncorrected, x), fnn.apply(net, params, x))


@pytest.mark.parametrize("f", NOT_FLIPPABLE)
def test_flip_refuses_an_activation_without_the_symmetry_S9(f):
    net, params = _net_and_params((3, 4, 2), (f, "identity"))
    with pytest.raises(ValueError, match=rf"{f!r}, which has no sign-flip symmetry"):
        symmetry.flip(net, params, 0, jnp.ones(4, bool))


def test_the_whole_orbit_of_one_layer_S9():
    """All M!·2^M = 48 transforms of 3 tanh units: 48 distinct parameter vectors, one function."""
    net, params = _net_and_params((1, 3, 1), ("tanh", "identity"))
    x = jnp.linspace(-1, 1, 11)[:, None]
    y = fnn.apply(net, params, x)
    seen = set()
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([False, True], repeat=3):
            new = symmetry.flip(net, symmetry.permute(net, params, 0, perm), 0, jnp.array(signs))
            chex.assert_trees_all_close(fnn.apply(net, new, x), y, rtol=1e-12, atol=1e-12)
            seen.add(
                tuple(np.round(np.concatenate([np.ravel(a) for a in jax.tree.leaves(new)]), 9))
            )
    assert len(seen) == symmetry.symmetry_count(3) == 48


@pytest.mark.parametrize("jit", [False, True])
def test_random_symmetry_of_a_deep_network_S9(jit):
    acts = ("tanh", "relu", "sigmoid", "identity", "softmax")
    net, params = _net_and_params((4, 6, 5, 6, 3, 3), acts)
    transform = jax.jit(symmetry.random_symmetry) if jit else symmetry.random_symmetry
    new = transform(jax.random.key(7), net, params)
    _assert_params_differ(params, new)
    x = _x(4)
    chex.assert_trees_all_close(
        fnn.apply(net, new, x), fnn.apply(net, params, x), rtol=1e-12, atol=1e-12
    )


def test_symmetry_counts_S9():
    for M in range(7):
        assert symmetry.symmetry_count(M) == np.prod(range(1, M + 1)) * 2**M
        assert symmetry.symmetry_count(M, flips=False) == np.prod(range(1, M + 1))
    net = fnn.MLP((2, 3, 4, 1), ("tanh", "relu", "identity"))
    assert symmetry.network_symmetry_count(net) == (6 * 8) * 24
    assert symmetry.network_symmetry_count(fnn.MLP((2, 1), ("identity",))) == 1
    with pytest.raises(ValueError, match="M must be a non-negative integer"):
        symmetry.symmetry_count(-1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda n, p: symmetry.permute(n, p, 1, [0, 1]), r"hidden layer.*\[0, 1\).*got 1"),
        (lambda n, p: symmetry.permute(n, p, True, [0, 1, 2]), r"hidden layer.*got True"),
        (lambda n, p: symmetry.permute(n, p, 0, [0, 1]), r"shape \(3,\).*got shape \(2,\)"),
        (lambda n, p: symmetry.permute(n, p, 0, [0, 1, 1]), r"permutation of range\(3\)"),
        (lambda n, p: symmetry.permute(n, p, 0, [0.0, 1.0, 2.0]), r"permutation of range"),
        (lambda n, p: symmetry.flip(n, p, 0, [True]), r"mask must have shape \(3,\)"),
        (lambda n, p: symmetry.flip(n, p, -1, [True] * 3), r"hidden layer"),
        (lambda n, p: symmetry.permute(n, p[:1], 0, [0, 1, 2]), r"params must hold 2 layers"),
    ],
)
def test_refusals_name_the_argument_S9(call, match):
    net, params = _net_and_params((2, 3, 1), ("tanh", "identity"))
    with pytest.raises(ValueError, match=match):
        call(net, params)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: symmetry.collapse("3-4-1", p),
        lambda p: symmetry.permute("3-4-1", p, 0, [0, 1, 2]),
        lambda p: symmetry.flip("3-4-1", p, 0, [True] * 3),
        lambda p: symmetry.random_symmetry(jax.random.key(0), "3-4-1", p),
        lambda p: symmetry.network_symmetry_count("3-4-1"),
    ],
)
def test_a_net_that_is_not_an_mlp_is_refused_S9(call):
    _, params = _net_and_params((2, 3, 1), ("tanh", "identity"))
    with pytest.raises(TypeError, match="net must be an fnn.MLP; got str"):
        call(params)
