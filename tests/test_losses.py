"""Losses and their hand-written Jacobians J_L (S16, S7, S19, S22).

Three witnesses for every J_L, in float64, at many points including extremes: ``jax.grad``
of ``.fn``, central differences, and the lecture's closed form written here with Python's
``math``. Plus the chain CE ∘ softmax = fused softmax cross-entropy, and the target checks.
"""

import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

from fnn import activations, losses

EPS64 = np.finfo(np.float64).eps
_rng = np.random.default_rng(0)


def _softmax(a):
    e = [math.exp(ai - max(a)) for ai in a]
    return [ei / sum(e) for ei in e]


# (loss, ŷ, y): regression targets, probabilities down to 1e-12, logits up to ±1e4.
CASES = [
    ("l2", _rng.normal(size=5), _rng.normal(size=5)),
    ("l2", np.array([1e4, -1e4, 3.0, 0.5, -2.0]), np.array([0.0, 1.0, 3.5, -0.5, 2.0])),
    ("l1", _rng.normal(size=5), _rng.normal(size=5)),
    ("l1", np.array([1e4, -1e4, 3.0, 0.5, -2.0]), np.array([0.0, 1.0, 3.5, -0.5, 2.0])),
    ("cross_entropy", np.array(_softmax([0.3, -1.2, 2.0, 0.1])), 2),
    ("cross_entropy", np.array(_softmax(list(_rng.normal(0, 3, 4)))), 0),
    ("cross_entropy", np.array([1e-12, 1 - 3e-12, 1e-12, 1e-12]), 0),
    ("cross_entropy", np.array([1e-12, 1 - 3e-12, 1e-12, 1e-12]), 3),
    ("softmax_cross_entropy", _rng.normal(size=4), 1),
    ("softmax_cross_entropy", _rng.normal(0, 10, 4), 3),
    ("softmax_cross_entropy", np.array([1e4, 0.0, -1e4, 3.0]), 0),
    ("softmax_cross_entropy", np.array([1e4, 0.0, -1e4, 3.0]), 2),
    ("binary_cross_entropy", np.array([0.2, 0.7, 0.5, 0.9]), np.array([0.0, 1.0, 1.0, 0.0])),
    ("binary_cross_entropy", np.array([1e-9, 1 - 1e-9, 1e-9, 0.4]), np.array([1.0, 0.0, 0.0, 0.3])),
    ("sigmoid_binary_cross_entropy", _rng.normal(size=4), np.array([0.0, 1.0, 1.0, 0.25])),
    ("sigmoid_binary_cross_entropy", np.array([30.0, -30.0, 0.0, 12.0]), np.array([0, 1, 0.5, 1])),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _sigmoid(a):
    return 1 / (1 + math.exp(-a)) if a >= 0 else math.exp(a) / (1 + math.exp(a))


def _softplus(a):
    return max(a, 0.0) + math.log1p(math.exp(-abs(a)))


def _sign(x):
    """The lecture's sign: +1, 0 or −1."""
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


# The lecture's J_L, entry by entry.
CLOSED_FORM = {
    "l2": lambda y_hat, y: [2 * (yh - yi) for yh, yi in zip(y_hat, y)],
    "l1": lambda y_hat, y: [_sign(yh - yi) for yh, yi in zip(y_hat, y)],
    "cross_entropy": lambda p, y: [-1 / p[y] if i == y else 0.0 for i in range(len(p))],
    "softmax_cross_entropy": lambda a, y: [s - (i == y) for i, s in enumerate(_softmax(a))],
    "binary_cross_entropy": lambda p, y: [(pi - yi) / (pi * (1 - pi)) for pi, yi in zip(p, y)],
    "sigmoid_binary_cross_entropy": lambda a, y: [_sigmoid(ai) - yi for ai, yi in zip(a, y)],
}
LOSS_CLOSED_FORM = {
    "l2": lambda y_hat, y: sum((yh - yi) ** 2 for yh, yi in zip(y_hat, y)),
    "l1": lambda y_hat, y: sum(abs(yh - yi) for yh, yi in zip(y_hat, y)),
    "cross_entropy": lambda p, y: -math.log(p[y]),
    "softmax_cross_entropy": lambda a, y: (
        max(a) + math.log(sum(math.exp(ai - max(a)) for ai in a)) - a[y]
    ),
    "binary_cross_entropy": lambda p, y: (
        -sum(
            (yi * math.log(pi) if yi else 0.0) + ((1 - yi) * math.log1p(-pi) if yi != 1 else 0.0)
            for pi, yi in zip(p, y)
        )
    ),
    "sigmoid_binary_cross_entropy": lambda a, y: sum(
        _softplus(ai) - yi * ai for ai, yi in zip(a, y)
    ),
}


def as_arrays(y_hat, y):
    return jnp.asarray(y_hat), jnp.asarray(y)


# ---------------------------------------------------------------------------------------
# The registry.
# ---------------------------------------------------------------------------------------


def test_names_and_record_flags():
    assert losses.names() == (
        "l2",
        "l1",
        "cross_entropy",
        "softmax_cross_entropy",
        "binary_cross_entropy",
        "sigmoid_binary_cross_entropy",
    )
    flags = {n: (losses.get(n).target, losses.get(n).on_logits) for n in losses.names()}
    assert flags == {
        "l2": ("vector", False),
        "l1": ("vector", False),
        "cross_entropy": ("label", False),
        "softmax_cross_entropy": ("label", True),
        "binary_cross_entropy": ("vector", False),
        "sigmoid_binary_cross_entropy": ("vector", True),
    }
    on_p = {n for n in losses.names() if losses.get(n).on_probabilities}
    assert on_p == {"cross_entropy", "binary_cross_entropy"}
    facts = {n: (losses.get(n).outputs, losses.get(n).target_range) for n in losses.names()}
    assert facts == {
        "l2": (None, None),
        "l1": (None, None),
        "cross_entropy": (losses.PROBABILITY_OUTPUTS, None),
        "softmax_cross_entropy": (("identity",), None),
        "binary_cross_entropy": (losses.PROBABILITY_OUTPUTS, (0.0, 1.0)),
        "sigmoid_binary_cross_entropy": (("identity",), None),
    }


@pytest.mark.parametrize("name", ["mse", "L2", "", None])
def test_unknown_name_raises_listing_the_valid_ones(name):
    with pytest.raises(ValueError, match="Unknown loss") as info:
        losses.get(name)
    for valid in losses.names():
        assert repr(valid) in str(info.value)


# ---------------------------------------------------------------------------------------
# The three witnesses (S16, S19), float64.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "y_hat", "y"), CASES, ids=IDS)
def test_jacobian_equals_jax_grad(name, y_hat, y):
    loss = losses.get(name)
    y_hat, y = as_arrays(y_hat, y)
    J = loss.jacobian(y_hat, y)
    chex.assert_shape(J, y_hat.shape)
    chex.assert_trees_all_close(J, jax.grad(loss.fn)(y_hat, y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "y_hat", "y"), CASES, ids=IDS)
def test_jacobian_equals_central_differences(name, y_hat, y):
    """Step h = 1e-5 (times p, or min(p, 1 − p), for probabilities: p ± h stays inside);
    the error bound is round-off ε|L|/h plus a relative 1e-7 for the truncation term."""
    loss = losses.get(name)
    J = np.asarray(loss.jacobian(*as_arrays(y_hat, y)))
    L = float(loss.fn(*as_arrays(y_hat, y)))
    for i in range(y_hat.size):
        scale = 1.0  # −log p needs p > 0, BCE also 1 − p > 0: steps relative to those
        if loss.on_probabilities:
            p = y_hat[i]
            scale = p if loss.target == "label" else min(p, 1 - p)
        up, down = y_hat.copy(), y_hat.copy()
        up[i] += 1e-5 * scale
        down[i] -= 1e-5 * scale
        h = (up[i] - down[i]) / 2
        fd = (float(loss.fn(*as_arrays(up, y))) - float(loss.fn(*as_arrays(down, y)))) / (2 * h)
        tol = 4 * EPS64 * max(1, abs(L)) / h + 1e-7 * abs(J[i])
        assert abs(fd - J[i]) <= tol, (i, fd, J[i])


@pytest.mark.parametrize(("name", "y_hat", "y"), CASES, ids=IDS)
def test_loss_and_jacobian_equal_the_lecture_closed_form(name, y_hat, y):
    loss = losses.get(name)
    y_py = y if np.ndim(y) == 0 else [float(v) for v in y]
    expected_J = CLOSED_FORM[name]([float(v) for v in y_hat], y_py)
    expected_L = LOSS_CLOSED_FORM[name]([float(v) for v in y_hat], y_py)
    chex.assert_trees_all_close(
        loss.jacobian(*as_arrays(y_hat, y)), np.array(expected_J), rtol=1e-12, atol=1e-300
    )
    chex.assert_trees_all_close(loss.fn(*as_arrays(y_hat, y)), expected_L, rtol=1e-12, atol=0)


def test_cross_entropy_jacobian_is_the_lecture_example():
    """4 classes, y = 2: J = [0, 0, −1/p(ŷ = 2 | x), 0]."""
    p = jnp.array([0.1, 0.2, 0.3, 0.4])
    J = losses.get("cross_entropy").jacobian(p, 2)
    np.testing.assert_array_equal(J, [0.0, 0.0, -1 / 0.3, 0.0])


def test_l1_jacobian_uses_sign_of_zero_equal_zero():
    y_hat = jnp.array([1.0, 2.0, -3.0, 0.0])
    y = jnp.array([0.0, 2.0, -1.0, 0.0])
    np.testing.assert_array_equal(losses.get("l1").jacobian(y_hat, y), [1.0, 0.0, -1.0, 0.0])


# ---------------------------------------------------------------------------------------
# Hessians H_L = ∂²L/∂ŷ² (S26): three witnesses, float64.
# ---------------------------------------------------------------------------------------


def _diag(values):
    return [[values[i] if i == j else 0.0 for j in range(len(values))] for i in range(len(values))]


HESSIAN_CLOSED_FORM = {
    "l2": lambda y_hat, y: _diag([2.0] * len(y_hat)),
    "l1": lambda y_hat, y: _diag([0.0] * len(y_hat)),
    "cross_entropy": lambda p, y: _diag([1 / p[y] ** 2 if i == y else 0.0 for i in range(len(p))]),
    "softmax_cross_entropy": lambda a, y: [
        [si * ((i == j) - sj) for j, sj in enumerate(_softmax(a))]
        for i, si in enumerate(_softmax(a))
    ],
    "binary_cross_entropy": lambda p, y: _diag(
        [yi / pi**2 + (1 - yi) / (1 - pi) ** 2 for pi, yi in zip(p, y)]
    ),
    "sigmoid_binary_cross_entropy": lambda a, y: _diag([_sigmoid(ai) * _sigmoid(-ai) for ai in a]),
}


@pytest.mark.parametrize(("name", "y_hat", "y"), CASES, ids=IDS)
def test_hessian_three_witnesses(name, y_hat, y):
    """H_L against jax.hessian of fn, central differences of the hand J_L (steps as for J_L),
    and the closed form written with math; H_L v against H_L @ v and jax.jvp of jax.grad."""
    loss = losses.get(name)
    H = np.asarray(loss.hessian(*as_arrays(y_hat, y)))
    chex.assert_shape(H, (y_hat.size, y_hat.size))
    chex.assert_trees_all_close(
        H, jax.hessian(loss.fn)(*as_arrays(y_hat, y)), rtol=1e-12, atol=1e-14
    )
    J = np.asarray(loss.jacobian(*as_arrays(y_hat, y)))
    for j in range(y_hat.size):
        scale = 1.0
        if loss.on_probabilities:
            p = y_hat[j]
            scale = p if loss.target == "label" else min(p, 1 - p)
        up, down = y_hat.copy(), y_hat.copy()
        up[j] += 1e-5 * scale
        down[j] -= 1e-5 * scale
        h = (up[j] - down[j]) / 2
        J_up, J_down = (np.asarray(loss.jacobian(*as_arrays(v, y))) for v in (up, down))
        fd = (J_up - J_down) / (2 * h)
        tol = 4 * EPS64 * np.maximum(1, np.abs(J)) / h + 1e-7 * np.abs(H[:, j]) + 1e-9
        assert np.all(np.abs(fd - H[:, j]) <= tol), (j, fd, H[:, j])
    y_py = y if np.ndim(y) == 0 else [float(v) for v in y]
    expected = np.array(HESSIAN_CLOSED_FORM[name]([float(v) for v in y_hat], y_py))
    chex.assert_trees_all_close(H, expected, rtol=1e-12, atol=1e-300)
    v = np.random.default_rng(7).normal(size=y_hat.size)
    Hv = loss.hessian_vp(*as_arrays(y_hat, y), jnp.asarray(v))
    chex.assert_trees_all_close(Hv, H @ v, rtol=1e-12, atol=1e-300)
    by_jvp = jax.jvp(lambda a: jax.grad(loss.fn)(a, jnp.asarray(y)), (jnp.asarray(y_hat),), (v,))
    chex.assert_trees_all_close(Hv, by_jvp[1], rtol=1e-12, atol=1e-14)


# The factor S of H_L = S Sᵀ (S28), closed forms written with math.
def _sqrt_closed_form(name, y_hat, y):
    if name == "l2":
        return _diag([math.sqrt(2)] * len(y_hat))
    if name == "l1":
        return _diag([0.0] * len(y_hat))
    if name == "cross_entropy":
        return _diag([1 / y_hat[y] if i == y else 0.0 for i in range(len(y_hat))])
    if name == "softmax_cross_entropy":
        s = _softmax(y_hat)
        return [[math.sqrt(si) * (i == j) - si * math.sqrt(sj) for j, sj in enumerate(s)]
                for i, si in enumerate(s)]  # fmt: skip
    if name == "binary_cross_entropy":
        return _diag([math.sqrt(yi / p**2 + (1 - yi) / (1 - p) ** 2) for p, yi in zip(y_hat, y)])
    return _diag([math.sqrt(_sigmoid(a) * _sigmoid(-a)) for a in y_hat])


@pytest.mark.parametrize(("name", "y_hat", "y"), CASES, ids=IDS)
def test_hessian_sqrt_times_its_transpose_is_the_hessian(name, y_hat, y):
    """S Sᵀ = H_L (hand) = jax.hessian(fn), and S = the closed form written with math, for
    every loss at every case (probabilities down to 1e-12, logits up to ±1e4)."""
    loss = losses.get(name)
    S = np.asarray(loss.hessian_sqrt(*as_arrays(y_hat, y)))
    H = np.asarray(loss.hessian(*as_arrays(y_hat, y)))
    chex.assert_shape(S, (y_hat.size, y_hat.size))
    chex.assert_trees_all_close(S @ S.T, H, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(H).max()))
    chex.assert_trees_all_close(
        S @ S.T, jax.hessian(loss.fn)(*as_arrays(y_hat, y)), rtol=1e-10, atol=1e-14
    )
    y_py = y if np.ndim(y) == 0 else [float(v) for v in y]
    expected = np.array(_sqrt_closed_form(name, [float(v) for v in y_hat], y_py))
    chex.assert_trees_all_close(S, expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_hessian_sqrt_is_finite_at_huge_logits(dtype):
    for name, y in (("softmax_cross_entropy", 1), ("sigmoid_binary_cross_entropy", jnp.ones(4))):
        loss = losses.get(name)
        a = jnp.asarray([1e4, 0.0, -1e4, 3.0], dtype)
        S = loss.hessian_sqrt(a, jnp.asarray(y, dtype) if name.startswith("sig") else y)
        assert S.dtype == dtype and bool(jnp.all(jnp.isfinite(S)))
        chex.assert_trees_all_close(S @ S.T, loss.hessian(a, y), atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sigmoid_binary_cross_entropy_is_stable_at_huge_logits(dtype):
    """softplus(a) − y a: the loss of logit 1e4 with target 0 is 1e4 (not inf), of −1e4 with
    target 1 also 1e4; J, H and jax.grad/jax.hessian of fn finite and equal."""
    loss = losses.get("sigmoid_binary_cross_entropy")
    a = jnp.asarray([1e4, -1e4, 1e4, -1e4], dtype)
    y = jnp.asarray([0.0, 1.0, 1.0, 0.0], dtype)
    for i, expected in enumerate([1e4, 1e4, 0.0, 0.0]):
        assert float(loss.fn(a[i : i + 1], y[i : i + 1])) == expected
    J, by_grad, H, by_hessian = _hand_and_jax(loss)(a, y)
    assert J.dtype == H.dtype == dtype
    np.testing.assert_array_equal(J, [1.0, -1.0, 0.0, 0.0])
    chex.assert_trees_all_close(by_grad, J)
    chex.assert_tree_all_finite((H, by_hessian))
    chex.assert_trees_all_close(by_hessian, H, atol=1e-30)


def test_sigmoid_binary_cross_entropy_is_bce_after_a_sigmoid():
    """The fused loss = BCE(σ(a), y), its J_L = BCE's J_L · J_σ and its H_L = J_σ H_BCE J_σ
    + the residual Σ gᵢ σ″ (S15, S26); the chain cancels large terms (1/p² · p²), rtol 1e-5."""
    sigmoid, bce = activations.get("sigmoid"), losses.get("binary_cross_entropy")
    fused = losses.get("sigmoid_binary_cross_entropy")
    a = jnp.array([-8.0, -0.5, 0.0, 1.5, 12.0])
    y = jnp.array([1.0, 0.0, 0.25, 1.0, 0.0])
    p, J_s = sigmoid.fn(a), sigmoid.jacobian(a)
    chex.assert_trees_all_close(fused.fn(a, y), bce.fn(p, y), rtol=1e-9)
    g = bce.jacobian(p, y)
    chex.assert_trees_all_close(fused.jacobian(a, y), g @ J_s, rtol=1e-9)
    residual = jnp.diag(g * sigmoid.second_derivative(a))
    chex.assert_trees_all_close(
        fused.hessian(a, y), J_s @ bce.hessian(p, y) @ J_s + residual, rtol=1e-5, atol=1e-15
    )


@pytest.mark.parametrize("name", ["l2", "softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
def test_sampled_gradients_have_the_hessian_as_second_moment(name):
    """E[g gᵀ] = H_L for J_L at a target drawn from the model (the Monte-Carlo column of
    DiagGGNMC): the mean of 20000 draws within 5 standard errors of H_L; losses whose H_L is
    not a Fisher matrix have no sample_gradient."""
    loss = losses.get(name)
    a = jnp.array([0.4, -1.0, 2.0])
    keys = jax.random.split(jax.random.key(0), 20000)
    g = jax.vmap(loss.sample_gradient, (None, 0))(a, keys)
    outer = np.asarray(g[:, :, None] * g[:, None, :])
    y = 0 if loss.target == "label" else jnp.zeros(3)
    H = np.asarray(loss.hessian(a, y))
    se = outer.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(outer.mean(0) - H) <= 5 * se + 1e-12), (outer.mean(0), H)
    others = {n for n in losses.names() if losses.get(n).sample_gradient is None}
    assert others == {"l1", "cross_entropy", "binary_cross_entropy"}


def test_softmax_cross_entropy_hessian_is_the_softmax_jacobian_whatever_the_label():
    a = jnp.array([0.3, -1.2, 2.0, 0.1])
    H = [losses.get("softmax_cross_entropy").hessian(a, y) for y in range(4)]
    for Hy in H:
        np.testing.assert_array_equal(Hy, activations.get("softmax").jacobian(a))


# ---------------------------------------------------------------------------------------
# jax.grad of fn is fnn's J_L everywhere, kinks and saturation included: autodiff through a
# loss must agree with fnn's own backward pass.
# ---------------------------------------------------------------------------------------


def _hand_and_jax(loss):
    """J_L, jax.grad(fn), H_L, jax.hessian(fn): one compiled function."""
    return jax.jit(
        lambda a, y: (
            loss.jacobian(a, y),
            jax.grad(loss.fn)(a, y),
            loss.hessian(a, y),
            jax.hessian(loss.fn)(a, y),
        )
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_l1_at_y_hat_equal_y_jax_grad_is_sign_zero_and_hessian_zero(dtype):
    """jnp.abs's derivative at 0 is 1; the lecture's sign(0) = 0 is what fn's JAX gives."""
    l1 = losses.get("l1")
    y_hat = jnp.asarray([1.0, 2.0, -3.0, 0.0, jnp.nan], dtype)
    y = jnp.asarray([1.0, 0.0, -3.0, 0.0, 0.0], dtype)
    J, by_grad, H, by_hessian = _hand_and_jax(l1)(y_hat[:4], y[:4])
    np.testing.assert_array_equal(J, [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(by_grad, [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(H, np.zeros((4, 4)))
    np.testing.assert_array_equal(by_hessian, np.zeros((4, 4)))
    assert bool(jnp.isnan(l1.fn(y_hat, y)))  # NaN in, NaN out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_binary_cross_entropy_saturated_jax_grad_and_hessian_equal_the_hand_ones(dtype):
    """ŷ ∈ {0, 1} on the matching target: L = 0, J = ∓1, H = 1 by hand; jax.scipy's xlogy
    would give jax.grad NaN there (0 · 1/0)."""
    bce = losses.get("binary_cross_entropy")
    y_hat = jnp.asarray([1.0, 0.0, 0.3, 1.0], dtype)
    y = jnp.asarray([1.0, 0.0, 0.2, 1.0], dtype)
    J, by_grad, H, by_hessian = _hand_and_jax(bce)(y_hat, y)
    chex.assert_trees_all_close(by_grad, J, rtol=1e-6)
    chex.assert_trees_all_close(by_hessian, H, rtol=1e-6)
    chex.assert_trees_all_close(J[jnp.array([0, 1, 3])], jnp.asarray([-1.0, 1.0, -1.0], dtype))
    chex.assert_trees_all_close(jnp.diag(H)[jnp.array([0, 1, 3])], jnp.ones(3, dtype))


def test_where_the_loss_is_infinite_j_l_is_infinite_by_hand_and_by_jax():
    """p_y = 0, or BCE's ŷ = 0 against y = 1: L = ∞, J_L = ∓∞ at that entry, 0 elsewhere (and
    H_L = ∞ there; jax.hessian has NaN beside it: ∞ · 0, the one place it differs)."""
    ce, bce = losses.get("cross_entropy"), losses.get("binary_cross_entropy")
    J, by_grad, H, _ = _hand_and_jax(ce)(jnp.array([0.5, 0.0, 0.5]), 1)
    np.testing.assert_array_equal(J, [0.0, -np.inf, 0.0])
    np.testing.assert_array_equal(by_grad, [0.0, -np.inf, 0.0])
    np.testing.assert_array_equal(H, np.diag([0.0, np.inf, 0.0]))
    J, by_grad, H, _ = _hand_and_jax(bce)(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_array_equal(J, [-np.inf, np.inf])
    np.testing.assert_array_equal(by_grad, [-np.inf, np.inf])
    np.testing.assert_array_equal(H, np.diag([np.inf, np.inf]))


# ---------------------------------------------------------------------------------------
# Chains: CE ∘ softmax = fused softmax cross-entropy; BCE ∘ sigmoid (S15, S16).
# ---------------------------------------------------------------------------------------

CHAIN_LOGITS = [
    (np.array([0.3, -1.2, 2.0, 0.1]), 2),
    (_rng.normal(0, 5, 4), 1),
    (np.array([30.0, 0.0, -30.0, 3.0]), 1),
    (np.array([1e4, 0.0, -1e4, 3.0]), 0),
]


@pytest.mark.parametrize(("a", "y"), CHAIN_LOGITS)
def test_cross_entropy_after_softmax_chain_equals_the_fused_loss(a, y):
    softmax = activations.get("softmax")
    ce, fused = losses.get("cross_entropy"), losses.get("softmax_cross_entropy")
    a = jnp.asarray(a)
    chain = ce.jacobian(softmax.fn(a), y) @ softmax.jacobian(a)  # J_L · J_softmax
    chex.assert_trees_all_close(chain, fused.jacobian(a, y), rtol=1e-9, atol=1e-15)
    chex.assert_trees_all_close(ce.fn(softmax.fn(a), y), fused.fn(a, y), rtol=1e-9, atol=1e-15)


def test_binary_cross_entropy_after_sigmoid_chain_is_y_hat_minus_y():
    sigmoid, bce = activations.get("sigmoid"), losses.get("binary_cross_entropy")
    a = jnp.array([-8.0, -0.5, 0.0, 1.5, 12.0])
    y = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
    chain = bce.jacobian(sigmoid.fn(a), y) @ sigmoid.jacobian(a)
    chex.assert_trees_all_close(chain, sigmoid.fn(a) - y, rtol=1e-9)


# ---------------------------------------------------------------------------------------
# Numerical stability, float32 and float64.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_softmax_cross_entropy_is_stable_at_huge_logits(dtype):
    fused = losses.get("softmax_cross_entropy")
    a = jnp.asarray([1e4, 0.0, -1e4, 3.0], dtype)
    for y, expected in [(0, 0.0), (1, 1e4), (2, 2e4)]:
        L, J, by_jax = fused.fn(a, y), fused.jacobian(a, y), jax.grad(fused.fn)(a, y)
        assert L.dtype == J.dtype == dtype
        assert float(L) == expected
        assert jnp.all(jnp.isfinite(J)) and jnp.all(jnp.isfinite(by_jax))
        chex.assert_trees_all_close(J, by_jax)
        H, by_jax = fused.hessian(a, y), jax.hessian(fused.fn)(a, y)
        assert H.dtype == dtype and jnp.all(jnp.isfinite(H)) and jnp.all(jnp.isfinite(by_jax))
        chex.assert_trees_all_close(H, by_jax)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_binary_cross_entropy_is_finite_where_a_sigmoid_saturates(dtype):
    """float32 σ(30) rounds to exactly 1: with y = 1 the loss is 0 and J = −1/ŷ = −1, where
    the form (ŷ − y)/(ŷ(1 − ŷ)) would give 0/0."""
    bce = losses.get("binary_cross_entropy")
    y_hat = activations.get("sigmoid").fn(jnp.asarray([30.0, -200.0, 0.0], dtype))
    y = jnp.asarray([1.0, 0.0, 1.0], dtype)
    if dtype == jnp.float32:
        assert float(y_hat[0]) == 1.0
    J = bce.jacobian(y_hat, y)
    assert J.dtype == dtype
    chex.assert_trees_all_close(J, jnp.asarray([-1.0, 1.0, -2.0], dtype), rtol=1e-6)
    chex.assert_trees_all_close(bce.fn(y_hat, y), jnp.asarray(math.log(2), dtype), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# jit and vmap (S22); random points (hypothesis).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", losses.names())
def test_batches_through_vmap_and_jit_agree(name):
    loss = losses.get(name)
    keys = jax.random.split(jax.random.key(0), 2)
    y_hat = jax.random.normal(keys[0], (3, 4))
    if loss.on_probabilities:
        y_hat = jax.nn.sigmoid(y_hat)
    if loss.target == "label":
        y = jnp.array([0, 3, 1])
    elif loss.on_probabilities:
        y = jnp.round(jax.random.uniform(keys[1], (3, 4)))
    else:
        y = jax.random.normal(keys[1], (3, 4))
    v = jax.random.normal(keys[0], (3, 4))
    for fun in (loss.fn, loss.jacobian, loss.hessian, lambda a, y: loss.hessian_vp(a, y, v[0])):
        stacked = jnp.stack([fun(y_hat[i], y[i]) for i in range(3)])
        chex.assert_trees_all_close(jax.jit(jax.vmap(fun))(y_hat, y), stacked)


_JIT = {}


@settings(max_examples=25, deadline=None)
@given(
    logits=st.lists(st.floats(-60, 60, allow_nan=False), min_size=5, max_size=5),
    y=st.integers(0, 4),
)
def test_softmax_cross_entropy_jacobian_equals_jax_grad_at_random_points(logits, y):
    fused = losses.get("softmax_cross_entropy")
    if not _JIT:
        _JIT["hand"] = jax.jit(fused.jacobian)
        _JIT["jax"] = jax.jit(jax.grad(fused.fn))
    a = jnp.asarray(logits)
    chex.assert_trees_all_close(_JIT["hand"](a, y), _JIT["jax"](a, y), rtol=1e-12, atol=1e-14)


def _random_case(name, values, label, soft, tie):
    """ŷ and y for `name` from hypothesis draws: probabilities by a softmax or sigmoid of the
    drawn values, labels, 0/1 or soft BCE targets, and L1 targets that hit ŷ = y (the kink)."""
    a = np.asarray(values)
    if name == "cross_entropy":
        return np.asarray(_softmax(list(values))), label
    if name == "softmax_cross_entropy":
        return a, label
    if name == "binary_cross_entropy":
        return 1 / (1 + np.exp(-a / 4)), np.asarray(soft)
    if name == "sigmoid_binary_cross_entropy":
        return a, np.asarray(soft)
    y = a[::-1].copy()
    if tie:
        y[::2] = a[::2]
    return a, y


@pytest.mark.parametrize("name", losses.names())
@settings(max_examples=15, deadline=None)
@given(
    values=st.lists(st.floats(-30, 30, allow_nan=False), min_size=5, max_size=5),
    label=st.integers(0, 4),
    soft=st.lists(st.sampled_from([0.0, 1.0, 0.25, 0.5]), min_size=5, max_size=5),
    tie=st.booleans(),
)
def test_jax_grad_and_hessian_of_fn_equal_the_hand_ones_at_random_points(
    name, values, label, soft, tie
):
    """jax.grad(fn) = J_L and jax.hessian(fn) = H_L for every loss at random points, L1's
    kink ŷ = y among them (S26)."""
    loss = losses.get(name)
    key = "random/" + name
    if key not in _JIT:
        _JIT[key] = jax.jit(
            lambda a, y: (loss.jacobian(a, y), jax.grad(loss.fn)(a, y), loss.hessian(a, y),
                          jax.hessian(loss.fn)(a, y))
        )  # fmt: skip
    J, by_grad, H, by_hessian = _JIT[key](*as_arrays(*_random_case(name, values, label, soft, tie)))
    chex.assert_trees_all_close(J, by_grad, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(H, by_hessian, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Bad targets and predictions: ValueError naming the argument, the expected and the got.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "y_hat_shape", "y", "expected", "got"),
    [
        ("l2", (4,), np.zeros(3), r"shape \(4,\)", r"\(3,\)"),
        ("binary_cross_entropy", (2, 3), np.zeros((3, 2)), r"shape \(2, 3\)", r"\(3, 2\)"),
        ("cross_entropy", (4,), np.array([1, 2]), r"labels of shape \(\)", r"\(2,\)"),
        ("cross_entropy", (4,), 2.0, "integer", "float64"),
        ("softmax_cross_entropy", (4,), True, "integer", "bool"),
        ("cross_entropy", (4,), 4, r"\[0, 4\)", "got 4"),
        ("softmax_cross_entropy", (4,), -1, r"\[0, 4\)", "got -1"),
        ("cross_entropy", (2, 4), np.array([0, 5]), r"\[0, 4\)", r"5 at index \(1,\)"),
        ("binary_cross_entropy", (3,), np.array([0.0, 1.0, 2.0]), r"\[0, 1\]", "2.0"),
        ("binary_cross_entropy", (2,), np.array([-0.5, 1.0]), r"\[0, 1\]", "-0.5"),
        ("binary_cross_entropy", (2,), np.array([np.nan, 1.0]), r"\[0, 1\]", "nan"),
    ],
)
def test_bad_targets_raise(name, y_hat_shape, y, expected, got):
    with pytest.raises(ValueError, match="^y for loss") as info:
        losses.check_target(losses.get(name), y_hat_shape, y)
    assert name in str(info.value)
    for pattern in (expected, got):
        assert re.search(pattern, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("name", "y_hat_shape", "y"),
    [
        ("l2", (2, 3), np.ones((2, 3))),
        ("cross_entropy", (4,), 3),
        ("cross_entropy", (4,), np.int32(0)),
        ("softmax_cross_entropy", (3, 4), jnp.array([0, 3, 2])),
        ("binary_cross_entropy", (3,), np.array([0.0, 1.0, 0.3])),  # soft targets are fine
    ],
)
def test_good_targets_pass(name, y_hat_shape, y):
    assert losses.check_target(losses.get(name), y_hat_shape, y) is None


def test_traced_targets_are_checked_for_shape_and_dtype_only():
    ce = losses.get("cross_entropy")

    @jax.jit
    def checked(y):
        losses.check_target(ce, (4,), y)  # the value 7 is unknown while tracing
        return y

    assert checked(7) == 7
    with pytest.raises(ValueError, match="integer"):
        jax.jit(lambda y: losses.check_target(ce, (4,), y))(2.0)


@pytest.mark.parametrize(
    ("name", "y_hat", "got"),
    [
        ("cross_entropy", np.array([0.5, 1.2]), r"1\.2 at index \(1,\)"),
        ("binary_cross_entropy", np.array([[0.5, -0.1]]), r"-0\.1 at index \(0, 1\)"),
        ("binary_cross_entropy", np.array([np.inf]), "inf"),
    ],
)
def test_predictions_outside_0_1_raise_for_losses_on_probabilities(name, y_hat, got):
    with pytest.raises(ValueError, match=rf"^y_hat for loss '{name}'.*\[0, 1\].*{got}"):
        losses.check_prediction(losses.get(name), y_hat)


def test_predictions_pass_where_they_need_no_check():
    losses.check_prediction(losses.get("l2"), np.array([5.0, -3.0]))
    losses.check_prediction(losses.get("softmax_cross_entropy"), np.array([5.0, -3.0]))
    losses.check_prediction(losses.get("cross_entropy"), np.array([0.0, 1.0]))
    ce = losses.get("cross_entropy")
    y_hat = jax.jit(lambda p: (losses.check_prediction(ce, p), p)[1])(jnp.array([2.0]))
    assert float(y_hat[0]) == 2.0  # traced: unchecked


# ---------------------------------------------------------------------------------------
# Targets out of their domain under jit and vmap: NaN, never a finite number that would pass
# for a loss; the opt-in checked mode names the value and its index under jit (checkify).
# ---------------------------------------------------------------------------------------

# (loss, ŷ of 4 outputs, a batch of targets, which examples are out of the domain)
_P = np.array([0.1, 0.2, 0.3, 0.4])
_LOGITS = np.array([0.3, -1.2, 2.0, 0.1])
OUT_OF_DOMAIN = [
    ("cross_entropy", _P, np.array([0, -1, 3, 4, 7, -100, 2**31 - 1]), [1, 3, 4, 5, 6]),
    ("softmax_cross_entropy", _LOGITS, np.array([2, 4, -1, 1, 9, -(2**31)]), [1, 2, 4, 5]),
    (
        "binary_cross_entropy",
        _P,
        np.array(
            [[0, 1, 0, 1], [0, 1, 2.0, 1], [-0.5, 0, 0, 0], [0.3, 1, 1, np.nan], [1, 1, 1, 1.01]]
        ),
        [1, 2, 3, 4],
    ),
]


@pytest.mark.parametrize(
    ("name", "y_hat", "y", "bad"), OUT_OF_DOMAIN, ids=[c[0] for c in OUT_OF_DOMAIN]
)
def test_targets_out_of_domain_give_nan_under_jit_and_vmap(name, y_hat, y, bad):
    """Every output for a bad example is NaN — loss, J_L, H_L, H_L v, and jax.grad/jax.hessian
    of fn — while the good examples of the same batch keep their eager values."""
    loss = losses.get(name)
    Y_hat = jnp.asarray(np.broadcast_to(y_hat, (len(y), y_hat.size)))
    v = jnp.ones(y_hat.size)

    def everything(a, y):
        return {
            "fn": loss.fn(a, y),
            "jacobian": loss.jacobian(a, y),
            "hessian": loss.hessian(a, y),
            "hessian_vp": loss.hessian_vp(a, y, v),
            "jax.grad(fn)": jax.grad(loss.fn)(a, y),
            "jax.hessian(fn)": jax.hessian(loss.fn)(a, y),
        }

    results = jax.jit(jax.vmap(everything))(Y_hat, jnp.asarray(y))
    for what, value in results.items():
        for b in range(len(y)):
            if b in bad:
                assert bool(jnp.all(jnp.isnan(value[b]))), (what, b, value[b])
            else:
                assert bool(jnp.all(jnp.isfinite(value[b]))), (what, b, value[b])
                eager = everything(Y_hat[b], jnp.asarray(y[b]))[what]
                chex.assert_trees_all_close(value[b], eager)
    # one example under jit alone (no vmap): the same NaN
    b = bad[0]
    assert bool(jnp.isnan(jax.jit(loss.fn)(Y_hat[b], jnp.asarray(y[b]))))


def test_eager_check_target_still_raises_for_the_same_targets():
    for name, y_hat, y, _ in OUT_OF_DOMAIN:
        with pytest.raises(ValueError, match=f"y for loss '{name}'"):
            losses.check_target(losses.get(name), (len(y), y_hat.size), y)


def _run_checked(name, fun, y_hat, y):
    """``checkify.checkify(jax.jit(...))`` of one function of the checked loss, over a batch."""
    loss = losses.checked(name)
    f = {
        "fn": loss.fn,
        "jacobian": loss.jacobian,
        "hessian": loss.hessian,
        "hessian_vp": lambda a, y: loss.hessian_vp(a, y, jnp.ones_like(a)),
    }[fun]
    err, out = checkify.checkify(jax.jit(jax.vmap(f)))(jnp.asarray(y_hat), jnp.asarray(y))
    return err, out


@pytest.mark.parametrize("fun", ["fn", "jacobian", "hessian", "hessian_vp"])
@pytest.mark.parametrize(
    ("name", "y_hat", "y", "message"),
    [
        ("cross_entropy", [_P, _P], [1, 4], r"labels in \[0, 4\) for 4 outputs; got 4\."),
        ("softmax_cross_entropy", [_LOGITS] * 2, [-3, 0], r"labels in \[0, 4\).*; got -3\."),
        (
            "binary_cross_entropy",
            [_P, _P],
            [[0, 1, 1, 0], [0, 1, 2.5, 1]],
            r"targets in \[0, 1\].*; got 2\.5 at index \(2,\)\.",
        ),
        (
            "binary_cross_entropy",
            [_P, [0.1, 0.2, 0.3, 1.5]],
            [[0, 1, 1, 0], [0, 1, 1, 0]],
            r"^y_hat for loss 'binary_cross_entropy' must be probabilities .*; got 1\.5 at index "
            r"\(3,\)\.",
        ),
        ("cross_entropy", [_P, [-0.1, 0.5, 0.3, 0.3]], [0, 1], r"^y_hat .*got -0\.1 at index \(0,"),
    ],
)
def test_checked_loss_raises_under_jit_naming_loss_value_and_index(name, y_hat, y, message, fun):
    err, _ = _run_checked(name, fun, y_hat, y)
    with pytest.raises(checkify.JaxRuntimeError, match=message) as info:
        err.throw()
    assert f"loss '{name}'" in str(info.value)


@pytest.mark.parametrize("name", ["cross_entropy", "softmax_cross_entropy", "binary_cross_entropy"])
def test_checked_loss_passes_good_targets_with_the_plain_numbers(name):
    loss, checked = losses.get(name), losses.checked(name)
    y_hat = jnp.asarray(np.stack([_P, _P[::-1]]))
    y = jnp.array([0, 3]) if loss.target == "label" else jnp.array([[0, 1, 0.5, 1], [1, 0, 0, 0]])
    err, (L, J) = checkify.checkify(
        jax.jit(jax.vmap(lambda a, y: (checked.fn(a, y), checked.jacobian(a, y))))
    )(y_hat, y)
    assert err.get() is None
    chex.assert_trees_all_close(
        (L, J), jax.vmap(lambda a, y: (loss.fn(a, y), loss.jacobian(a, y)))(y_hat, y)
    )
    facts = ("name", "target", "on_logits", "on_probabilities", "kinks", "outputs", "target_range")
    assert all(getattr(checked, f) == getattr(loss, f) for f in facts)  # same name and flags


def test_checked_loss_raises_at_once_eagerly_and_refuses_plain_jit():
    ce = losses.checked("cross_entropy")
    with pytest.raises(checkify.JaxRuntimeError, match="got 7"):
        ce.fn(jnp.asarray(_P), 7)
    with pytest.raises(ValueError, match="checkify"):
        jax.jit(ce.fn)(jnp.asarray(_P), 1)


def test_checked_loss_without_a_domain_is_the_loss_and_get_accepts_a_loss():
    for name in ("l2", "l1"):
        assert losses.checked(name) is losses.get(name)
    checked = losses.checked("softmax_cross_entropy")
    assert losses.get(checked) is checked
    assert losses.get(losses.get("l2")) is losses.get("l2")
    assert losses.checked(checked).name == "softmax_cross_entropy"


def test_unknown_name_suggests_the_nearest_one():
    nearest = r"Unknown loss 'softmax_crossentropy'.*did you mean 'softmax_cross_entropy'\?"
    with pytest.raises(ValueError, match=nearest):
        losses.get("softmax_crossentropy")


@pytest.mark.parametrize(
    ("name", "y_hat", "y", "message"),
    [
        ("cross_entropy", [_P, _P, _P], [1, 3, 9], r"got 9 at index \(2,\)\."),
        ("softmax_cross_entropy", [_LOGITS] * 2, [-1, 0], r"got -1 at index \(0,\)\."),
        (
            "binary_cross_entropy",
            [_P, _P],
            [[0, 1, 1, 0], [0, 1, 1, -2.0]],
            r"targets in \[0, 1\].*got -2\.0 at index \(1, 3\)\.",
        ),
    ],
)
def test_checkify_target_on_a_batch_names_the_example(name, y_hat, y, message):
    f = checkify.checkify(jax.jit(lambda a, y: losses.checkify_target(name, a, y)))
    err, _ = f(jnp.asarray(y_hat), jnp.asarray(y))
    with pytest.raises(checkify.JaxRuntimeError, match=rf"^y for loss '{name}'.*{message}"):
        err.throw()
    good = jnp.zeros_like(jnp.asarray(y)) if name != "binary_cross_entropy" else jnp.ones((2, 4))
    assert f(jnp.asarray(y_hat), good)[0].get() is None
