"""Gradient checks (S11, S19): they pass on correct gradients, fail on wrong ones and say
where, and report kinks instead of failing on them."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from conftest import random_problem
from fnn import gradcheck


def problem(sizes, acts, loss="l2", seed=0, dtype=np.float64, batch=3):
    return random_problem(sizes, acts, loss, seed, dtype, batch)


# The hand-written gradient, compiled once per network.
value_and_grad = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))


@pytest.fixture(scope="module")
def tanh_problem():
    net, params, x, y = problem((3, 5, 2), ("tanh", "identity"))
    _, grads = value_and_grad(net, params, x, y)
    return net, params, x, y, grads


# ---------------------------------------------------------------------------------------
# Pass, fail, locate.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["reverse", "explicit", "forward"])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_every_backprop_method_passes(method, dtype):
    net, params, x, y = problem((4, 5, 3), ("softplus", "softmax"), "cross_entropy", 1, dtype)
    _, grads = value_and_grad(net, params, x, y, loss="cross_entropy", method=method)
    report = gradcheck.check_network(net, params, x, y, grads, "cross_entropy")
    assert report.passed, str(report)
    assert report.dtype == jnp.dtype(dtype).name
    assert report.threshold == gradcheck.THRESHOLDS[report.dtype]
    assert report.num_evaluations == 2 * (fnn.summary(net).num_params + x.size)
    assert report.max_error <= (1e-7 if dtype == jnp.float64 else 1e-2)


def test_a_wrong_entry_fails_and_is_located(tanh_problem):
    net, params, x, y, grads = tanh_problem
    wrong = jax.tree.map(lambda g: g, grads)
    wrong["params"][1]["W"] = grads["params"][1]["W"].at[1, 3].multiply(1 + 1e-4)
    report = gradcheck.check_network(net, params, x, y, wrong)
    assert not report.passed
    assert report.worst_path == "['params'][1]['W']" and report.worst_index == (1, 3)
    assert report.max_error == pytest.approx(0.5e-4, rel=1e-3)
    assert report.worst_hand == pytest.approx(float(wrong["params"][1]["W"][1, 3]))
    text = str(report)
    assert "FAIL" in text and "['params'][1]['W'][1, 3]" in text
    # Every other leaf is still fine, and says so.
    others = [leaf for leaf in report.leaves if leaf.path != report.worst_path]
    assert all(leaf.max_error < 1e-7 for leaf in others)


def test_a_transposed_gradient_fails():
    net, params, x, y = problem((3, 3, 1), ("sigmoid", "identity"))
    _, grads = value_and_grad(net, params, x, y)
    grads["params"][0]["W"] = grads["params"][0]["W"].T
    assert not gradcheck.check_network(net, params, x, y, grads).passed


def test_check_gradient_on_any_function():
    def f(t):
        return jnp.sum(jnp.exp(t[0]) * t[1]["v"])

    t = (jnp.array([0.1, -0.4]), {"v": jnp.array([2.0, 3.0])})
    grad = (jnp.exp(t[0]) * t[1]["v"], {"v": jnp.exp(t[0])})
    report = gradcheck.check_gradient(f, t, grad)
    assert report.passed and report.max_error < 1e-9 and report.num_evaluations == 8
    assert [leaf.path for leaf in report.leaves] == ["[0]", "[1]['v']"]
    assert "PASS" in str(report)
    bad = (grad[0], {"v": -grad[1]["v"]})
    assert gradcheck.check_gradient(f, t, bad).worst_path == "[1]['v']"


def test_tiny_entries_are_judged_on_the_resolution_of_central_differences():
    # ∂f/∂w₁ = 1e-9: central differences in float32 cannot see it (round-off ≈ 1e-5), so
    # the default floor judges it by its absolute error; tiny=0 judges it relatively.
    def f(w):
        return jnp.sum(w[0] ** 2) + 1e-9 * w[1]

    w = jnp.array([1.0, 1.0], jnp.float32)
    grad = jnp.array([2.0, 1e-9], jnp.float32)
    assert gradcheck.check_gradient(f, w, grad).passed
    assert not gradcheck.check_gradient(f, w, grad, tiny=0.0).passed


def test_compare_one_numerical_gradient_with_several(tanh_problem):
    net, params, x, y, _ = tanh_problem
    fd = gradcheck.network_central_difference(net, params, x, y)
    assert fd.num_evaluations == 2 * (fnn.summary(net).num_params + x.size)
    for method in ("reverse", "explicit"):
        _, g = value_and_grad(net, params, x, y, method=method)
        assert gradcheck.compare(g, fd.numerical, value=fd.value).passed


# ---------------------------------------------------------------------------------------
# The directional check.
# ---------------------------------------------------------------------------------------


def test_directional_check(tanh_problem):
    net, params, x, y, grads = tanh_problem
    tree = {"params": params, "x": x}

    def f(t):
        return gradcheck.network_loss(net, t["params"], t["x"], y)

    key = jax.random.key(3)
    report = gradcheck.check_directional(f, tree, grads, key, k=5)
    assert report.passed and len(report.errors) == 5, str(report)
    assert max(report.errors) < 1e-8
    assert gradcheck.check_directional(f, tree, grads, key, k=5) == report  # the key decides
    np.testing.assert_allclose(report.hand, report.numerical, rtol=1e-8)
    wrong = jax.tree.map(lambda g: 1.01 * g, grads)
    failed = gradcheck.check_directional(f, tree, wrong, key, k=5)
    assert not failed.passed and "FAIL" in str(failed)
    legacy = gradcheck.check_directional(f, tree, grads, jax.random.PRNGKey(3), k=2)
    assert legacy.passed
    with pytest.raises(TypeError, match=r"key must be one PRNG key.*got int of shape \(\)"):
        gradcheck.check_directional(f, tree, grads, 0, k=2)


# ---------------------------------------------------------------------------------------
# Kinks: reported, not failed.
# ---------------------------------------------------------------------------------------


def kinked_relu_net():
    """a¹ = W¹x + b¹ = 0 exactly for the first hidden unit: ReLU's kink, right at θ."""
    net = fnn.MLP((2, 2, 1), ("relu", "identity"))
    params = [
        {"W": jnp.array([[1.0, -1.0], [0.5, 0.25]]), "b": jnp.array([0.0, 0.1])},
        {"W": jnp.array([[2.0, -1.0]]), "b": jnp.array([0.3])},
    ]
    return net, params, jnp.array([0.5, 0.5]), jnp.array([1.0])


def test_relu_kink_is_reported_not_failed():
    net, params, x, y = kinked_relu_net()
    _, grads = value_and_grad(net, params, x, y)

    def f(t):
        return gradcheck.network_loss(net, t["params"], t["x"], y)

    tree = {"params": params, "x": x}
    # Without kink detection, the central difference (slope ½ on average) looks like a bug…
    assert not gradcheck.check_gradient(f, tree, grads).passed
    # … with it, the entries that move a¹₁ across 0 are reported instead.
    report = gradcheck.check_network(net, params, x, y, grads)
    assert report.passed, str(report)
    kinks = gradcheck.kink_crossings(net, params, x, y)
    expected = {
        "params": [
            {"W": np.array([[1, 1], [0, 0]], bool), "b": np.array([1, 0], bool)},
            {"W": np.zeros((1, 2), bool), "b": np.zeros(1, bool)},
        ],
        "x": np.array([1, 1], bool),
    }
    chex.assert_trees_all_equal(kinks, expected)
    assert report.num_kinks == 5 and "kink crossed" in str(report)


@pytest.mark.parametrize(("act", "a"), [("hard_tanh", 1.0), ("hard_tanh", -1.0),
                                        ("leaky_relu", 0.0), ("prelu", 0.0)])  # fmt: skip
def test_kinks_of_other_activations(act, a):
    net = fnn.MLP((1, 1, 1), (act, "identity"))
    params = fnn.init(jax.random.key(0), net)
    params[0]["W"], params[0]["b"] = jnp.array([[1.0]]), jnp.array([a - 0.5])
    x, y = jnp.array([0.5]), jnp.array([0.0])  # a = W x + b lands on the kink
    assert gradcheck.kink_crossings(net, params, x, y)["params"][0]["b"][0]
    params[0]["b"] = jnp.array([a - 0.4])  # 0.1 away: no step of ~1e-5 reaches it
    assert not gradcheck.kink_crossings(net, params, x, y)["params"][0]["b"][0]


def test_l1_residual_at_zero_is_a_kink():
    net = fnn.MLP((2, 2), ("identity",))
    params = [{"W": jnp.eye(2), "b": jnp.zeros(2)}]
    x = jnp.array([0.3, -0.2])
    y = jnp.array([0.3, 1.0])  # ŷ₁ − y₁ = 0 exactly
    _, grads = value_and_grad(net, params, x, y, loss="l1")
    report = gradcheck.check_network(net, params, x, y, grads, "l1")
    assert report.passed and report.num_kinks == 4, str(report)  # W₁₁, W₁₂, b₁, x₁
    kinks = gradcheck.kink_crossings(net, params, x, y, "l1")
    np.testing.assert_array_equal(kinks["params"][0]["b"], [True, False])


def test_smooth_networks_cross_no_kink(tanh_problem):
    net, params, x, y, _ = tanh_problem
    kinks = gradcheck.kink_crossings(net, params, x, y)
    assert not any(np.any(k) for k in jax.tree.leaves(kinks))


# ---------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------


def test_mismatched_pytrees_raise(tanh_problem):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match="grads must have the pytree structure"):
        gradcheck.check_network(net, params, x, y, grads["params"])
    wrong_shape = {"params": grads["params"], "x": grads["x"][0]}
    with pytest.raises(ValueError, match=r"grads\['x'\] must have shape \(3, 3\); got \(3,\)"):
        gradcheck.check_network(net, params, x, y, wrong_shape)
    with pytest.raises(ValueError, match="grad must have the pytree structure"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), [jnp.ones(3)])
    with pytest.raises(ValueError, match="kinks"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), jnp.ones(3), kinks=np.ones(2, bool))


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_eps_raises(tanh_problem, eps):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match="eps must be a positive finite number"):
        gradcheck.check_network(net, params, x, y, grads, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), jnp.ones(3), eps=eps)


def test_bad_directions_and_loss_raise(tanh_problem):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match="k must be a positive integer"):
        gradcheck.check_directional(jnp.sum, jnp.ones(3), jnp.ones(3), jax.random.key(0), 0)
    with pytest.raises(ValueError, match="Unknown loss"):
        gradcheck.check_network(net, params, x, y, grads, "hinge")


def test_targets_that_do_not_fit_raise(tanh_problem):
    """Without the check a (2,) target broadcasts over the batch and a label out of range
    is clamped by the indexing: a check of a different loss than value_and_grad's."""
    net, params, x, y, grads = tanh_problem  # batch 3, 2 outputs
    with pytest.raises(ValueError, match=r"y for loss 'l2' must have the output's shape \(3, 2\)"):
        gradcheck.check_network(net, params, x, y[0], grads)
    softmax_net = fnn.MLP(net.sizes, ("tanh", "softmax"))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\) for 2 outputs; got 5"):
        gradcheck.kink_crossings(softmax_net, params, x, jnp.array([0, 1, 5]), "cross_entropy")


def test_a_function_that_is_not_scalar_raises():
    with pytest.raises(ValueError, match=r"f must return a scalar loss, shape \(\); got shape"):
        gradcheck.check_directional(lambda t: t, jnp.ones(3), jnp.ones(3), jax.random.key(0))
    with pytest.raises(ValueError, match=r"f must return a scalar loss"):
        gradcheck.check_gradient(lambda t: 2 * t, jnp.ones(3), jnp.ones(3))
