"""Activations and their hand-written derivatives and Jacobians (S6, S7, S16, S19, S22).

Three witnesses for every derivative, in float64, at many points including |a| = 1e4:
``jax.grad``/``jax.jacfwd`` of ``.fn`` (away from the kinks), central differences, and the
closed form written independently here with Python's ``math``.
"""

import json
import math
import re
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from conftest import load_script
from fnn import activations

NAMES = activations.names()
ELEMENTWISE = [n for n in NAMES if activations.get(n).elementwise]
EPS64 = np.finfo(np.float64).eps
H = 1e-5  # central-difference step
# JAX differentiates σ as σ (1 − σ), expm1 as expm1 + 1 and tanh as (1 + t)(1 − t): exact
# only to a few ε absolute in the tails (σ′(50) = 0 by JAX), times the size of the other
# factor (|a| u′ ≲ 20 for gelu_tanh): hence an absolute tolerance for the JAX witness. The
# hand forms are exact relatively there: the closed-form witness checks with rtol alone.
JAX_ATOL = 1e-14

# Away from every kink (0 for the ReLUs, ±1 for hard tanh), from −1e4 to 1e4.
POINTS = np.concatenate(
    [
        [-1e4, -1e3, -50, -20, -5, -2.5, -1.3, -0.7, -1e-3, 1e-3, 0.3, 0.7, 1.3, 2.5, 5, 20, 50],
        [1e3, 1e4],
        np.random.default_rng(0).normal(0, 3, 12),
    ]
)
SOFTMAX_POINTS = [
    np.array([0.3, -1.2, 2.0, 0.0, 0.7]),
    np.random.default_rng(1).normal(0, 10, 5),
    np.array([1e4, 0.0, -1e4, 3.0, 3.0]),
    np.array([-1e4, -1e4 + 1, -1e4 + 2, -1e4, -1e4 - 5]),
]


def params_of(act, dtype=jnp.float64):
    return {k: jnp.asarray(v, dtype) for k, v in act.params.items()}


def central_difference_jacobian(f, a, h=H):
    """Column j = (f(a + h eⱼ) − f(a − h eⱼ)) / (the step as actually represented)."""
    a = np.asarray(a, np.float64)
    columns = []
    for j in range(a.size):
        up, down = a.copy(), a.copy()
        up[j] += h
        down[j] -= h
        columns.append((np.asarray(f(up)) - np.asarray(f(down))) / (up[j] - down[j]))
    return np.stack(columns, axis=1)


def central_difference_tolerance(f_values, h=H):
    """Round-off bound of a central difference, ε|f|/h per entry, with a 4× margin, plus
    the truncation error h² f‴/6 (f‴ = O(1) here)."""
    return 4 * EPS64 * np.maximum(1, np.abs(f_values)) / h + h**2


# ---------------------------------------------------------------------------------------
# The closed forms, written independently with Python's math, stable at |a| = 1e4.
# ---------------------------------------------------------------------------------------


def _sigmoid(a):
    return 1 / (1 + math.exp(-a)) if a >= 0 else math.exp(a) / (1 + math.exp(a))


def _gelu_tanh_derivative(a):
    """½ (1 + tanh u) + ½ a sech²(u) u′, with 1 + tanh u = 2σ(2u), sech² u = 4σ(2u)σ(−2u)."""
    u = math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a**2)
    return _sigmoid(2 * u) + 2 * a * _sigmoid(2 * u) * _sigmoid(-2 * u) * du


CLOSED_FORM = {
    "sigmoid": lambda a: math.exp(-abs(a)) / (1 + math.exp(-abs(a))) ** 2,  # e^{−a}/(1+e^{−a})²
    "tanh": lambda a: 4 * math.exp(-2 * abs(a)) / (1 + math.exp(-2 * abs(a))) ** 2,  # 1 − tanh²
    "hard_tanh": lambda a: 1.0 if abs(a) < 1 else 0.0,
    "relu": lambda a: 1.0 if a > 0 else 0.0,
    "leaky_relu": lambda a: 1.0 if a > 0 else 0.01,
    "prelu": lambda a: 1.0 if a > 0 else 0.25,
    "softplus": _sigmoid,
    "elu": lambda a: 1.0 if a > 0 else math.exp(a),
    "gelu": lambda a: (
        0.5 * math.erfc(-a / math.sqrt(2)) + a * math.exp(-(a**2) / 2) / math.sqrt(2 * math.pi)
    ),
    "gelu_tanh": _gelu_tanh_derivative,
    "sin": math.cos,
    "cos": lambda a: -math.sin(a),
    "identity": lambda a: 1.0,
}


def softmax_jacobian_closed_form(a):
    """The lecture's matrix: J_ij = s_i (1 − s_i) on the diagonal, −s_i s_j off it."""
    m = max(a)
    e = [math.exp(ai - m) for ai in a]
    s = [ei / sum(e) for ei in e]
    return np.array([[s[i] * ((i == j) - s[j]) for j in range(len(a))] for i in range(len(a))])


# ---------------------------------------------------------------------------------------
# The registry.
# ---------------------------------------------------------------------------------------


def test_names_are_the_zoo_in_spec_order():
    assert NAMES == (
        "sigmoid", "tanh", "hard_tanh", "relu", "leaky_relu", "prelu", "softplus",
        "elu", "gelu", "gelu_tanh", "sin", "cos", "identity", "softmax",
    )  # fmt: skip
    assert set(CLOSED_FORM) == set(ELEMENTWISE)


@pytest.mark.parametrize("name", [None, 3, 1.5])
def test_neither_a_name_nor_a_record_is_a_type_error(name):
    with pytest.raises(TypeError, match="activation must be a name .* or an .*Activation"):
        activations.get(name)


@pytest.mark.parametrize("name", ["swish", "ReLU", ""])
def test_unknown_name_raises_listing_the_valid_ones(name):
    with pytest.raises(ValueError, match="Unknown activation") as info:
        activations.get(name)
    for valid in NAMES:
        assert repr(valid) in str(info.value)


# ---------------------------------------------------------------------------------------
# The three witnesses (S19), float64.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_equals_jax_grad_and_jacobian_equals_jacfwd(name):
    act = activations.get(name)
    p = params_of(act)
    a = jnp.asarray(POINTS)
    f = lambda a: act.fn(a, **p)  # noqa: E731
    by_grad, by_jacfwd = jax.jit(lambda a: (jax.vmap(jax.grad(f))(a), jax.jacfwd(f)(a)))(a)
    chex.assert_trees_all_close(act.derivative(a, **p), by_grad, rtol=1e-12, atol=JAX_ATOL)
    chex.assert_trees_all_close(act.jacobian(a, **p), by_jacfwd, rtol=1e-12, atol=JAX_ATOL)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_equals_central_differences(name):
    act = activations.get(name)
    p = params_of(act)
    f = lambda a: act.fn(jnp.asarray(a), **p)  # noqa: E731
    fd = np.diag(central_difference_jacobian(f, POINTS))
    tol = central_difference_tolerance(np.asarray(f(POINTS)))
    error = np.abs(fd - np.asarray(act.derivative(jnp.asarray(POINTS), **p)))
    assert np.all(error <= tol), (POINTS[error > tol], error[error > tol])


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_and_jacobian_equal_the_closed_form(name):
    act = activations.get(name)
    p = params_of(act)
    expected = np.array([CLOSED_FORM[name](float(a)) for a in POINTS])
    a = jnp.asarray(POINTS)
    chex.assert_trees_all_close(act.derivative(a, **p), expected, rtol=1e-12, atol=1e-300)
    # J_f(a) = diag(f′(a₁), …, f′(aₙ)) (S16)
    chex.assert_trees_all_close(act.jacobian(a, **p), np.diag(expected), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("point", range(len(SOFTMAX_POINTS)))
def test_softmax_jacobian_three_witnesses(point):
    softmax = activations.get("softmax")
    a = SOFTMAX_POINTS[point]
    J = softmax.jacobian(jnp.asarray(a))
    chex.assert_trees_all_close(J, jax.jacfwd(softmax.fn)(jnp.asarray(a)), rtol=1e-12, atol=1e-15)
    chex.assert_trees_all_close(J, jax.jacrev(softmax.fn)(jnp.asarray(a)), rtol=1e-12, atol=1e-15)
    chex.assert_trees_all_close(J, softmax_jacobian_closed_form(a), rtol=1e-12, atol=1e-15)
    f = lambda a: softmax.fn(jnp.asarray(a))  # noqa: E731
    fd = central_difference_jacobian(f, a)
    # Row i is ∂sᵢ/∂a: its round-off scale is |sᵢ| ≤ 1, not the size of the logits.
    tol = central_difference_tolerance(np.asarray(f(a)))[:, None]
    assert np.all(np.abs(fd - np.asarray(J)) <= tol), np.abs(fd - np.asarray(J)).max()
    chex.assert_trees_all_close(softmax.derivative(jnp.asarray(a)), jnp.diag(J))


# ---------------------------------------------------------------------------------------
# Softmax (S7): stable, shift invariant, rows of J sum to zero.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [-1e3, -2.5, 7.0, 1e3])
@pytest.mark.parametrize("point", range(len(SOFTMAX_POINTS)))
def test_softmax_shift_invariance(point, c):
    softmax = activations.get("softmax")
    a = jnp.asarray(SOFTMAX_POINTS[point])
    chex.assert_trees_all_close(softmax.fn(a + c), softmax.fn(a), rtol=1e-10, atol=1e-15)
    chex.assert_trees_all_close(softmax.jacobian(a + c), softmax.jacobian(a), rtol=0, atol=1e-12)


@pytest.mark.parametrize("point", range(len(SOFTMAX_POINTS)))
def test_softmax_is_a_distribution_and_its_jacobian_rows_sum_to_zero(point):
    softmax = activations.get("softmax")
    a = jnp.asarray(SOFTMAX_POINTS[point])
    s, J = softmax.fn(a), softmax.jacobian(a)
    assert jnp.all(s >= 0)
    chex.assert_trees_all_close(jnp.sum(s), 1.0)
    chex.assert_trees_all_close(jnp.sum(J, axis=1), jnp.zeros(5), atol=1e-15)
    chex.assert_trees_all_close(J, J.T)


def test_softmax_matches_the_naive_formula_where_that_does_not_overflow():
    a = jnp.asarray(SOFTMAX_POINTS[0])
    naive = jnp.exp(a) / jnp.sum(jnp.exp(a))
    chex.assert_trees_all_close(activations.get("softmax").fn(a), naive, rtol=1e-14)
    assert not jnp.all(jnp.isfinite(jnp.exp(jnp.asarray(SOFTMAX_POINTS[2]))))  # why S7 shifts


# ---------------------------------------------------------------------------------------
# Kinks, PReLU's learnable α.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "a", "expected"),
    [
        ("relu", 0.0, 0.0),
        ("leaky_relu", 0.0, 0.01),
        ("prelu", 0.0, 0.25),
        ("hard_tanh", 1.0, 0.0),
        ("hard_tanh", -1.0, 0.0),
        ("hard_tanh", 1 - 1e-12, 1.0),
        ("hard_tanh", -1 + 1e-12, 1.0),
        ("elu", 0.0, 1.0),  # no kink in f for α = 1 (both slopes 1); f″ jumps from 1 to 0
    ],
)
def test_derivative_at_the_kinks_follows_the_documented_convention(name, a, expected):
    act = activations.get(name)
    assert float(act.derivative(jnp.asarray(a), **params_of(act))) == expected


# Every kink, with the documented f′ there (f″ = 0 at all of them).
KINKS = [
    ("relu", 0.0, 0.0),
    ("leaky_relu", 0.0, 0.01),
    ("prelu", 0.0, 0.25),
    ("hard_tanh", 1.0, 0.0),
    ("hard_tanh", -1.0, 0.0),
    ("elu", 0.0, 1.0),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize(("name", "a", "expected"), KINKS)
def test_jax_grad_of_fn_at_the_kinks_is_the_documented_derivative(name, a, expected, dtype):
    """jax.grad of fn takes fnn's branch at a kink (jnp.maximum, jnp.clip and
    jnp.minimum would give ½); f″ = 0 there, by hand and by jax.grad(jax.grad(fn)) (S26)."""
    act = activations.get(name)
    p = params_of(act, dtype)
    a = jnp.asarray(a, dtype)
    f = lambda a: act.fn(a, **p)  # noqa: E731
    expected = float(jnp.asarray(expected, dtype))
    four = jax.jit(
        lambda a: (
            act.derivative(a, **p),
            jax.grad(f)(a),
            act.second_derivative(a, **p),
            jax.grad(jax.grad(f))(a),
        )
    )(a)
    assert [float(v) for v in four] == [expected, expected, 0.0, 0.0]


def test_prelu_alpha_derivatives_at_the_kink():
    """At a = 0: ∂f/∂α = min(0, 0) = 0, ∂²f/∂a∂α = 1 (∂/∂α of PReLU′(0) = α), ∂²f/∂α² = 0,
    by hand and by JAX in both orders."""
    prelu = activations.get("prelu")
    a, alpha = jnp.asarray(0.0), jnp.asarray(0.25)
    assert float(prelu.param_derivatives["alpha"](a, alpha=alpha)) == 0.0
    assert float(jax.grad(prelu.fn, argnums=1)(a, alpha)) == 0.0
    assert float(prelu.param_second_derivatives["alpha"](a, alpha=alpha)) == 1.0
    assert float(jax.grad(jax.grad(prelu.fn, argnums=0), argnums=1)(a, alpha)) == 1.0
    assert float(jax.grad(jax.grad(prelu.fn, argnums=1), argnums=0)(a, alpha)) == 1.0
    assert float(jax.grad(jax.grad(prelu.fn, argnums=1), argnums=1)(a, alpha)) == 0.0


@pytest.mark.parametrize("alpha", [0.25, -0.5, 0.0, 2.0])
def test_prelu_derivatives_in_a_and_alpha(alpha):
    prelu = activations.get("prelu")
    a, alpha = jnp.asarray(POINTS), jnp.asarray(alpha)
    d_alpha = prelu.param_derivatives["alpha"]
    chex.assert_trees_all_close(
        prelu.derivative(a, alpha=alpha), jax.vmap(jax.grad(prelu.fn), (0, None))(a, alpha)
    )
    by_jax = jax.vmap(jax.grad(prelu.fn, argnums=1), (0, None))(a, alpha)
    chex.assert_trees_all_close(d_alpha(a, alpha=alpha), by_jax)
    f_of_alpha = lambda al: prelu.fn(a, alpha=jnp.asarray(al[0]))  # noqa: E731
    fd = central_difference_jacobian(f_of_alpha, [float(alpha)])[:, 0]
    tol = central_difference_tolerance(np.asarray(prelu.fn(a, alpha=alpha)))
    assert np.all(np.abs(fd - np.asarray(d_alpha(a, alpha=alpha))) <= tol)
    chex.assert_trees_all_close(d_alpha(a, alpha=alpha), np.minimum(POINTS, 0))  # closed form


def test_prelu_alpha_is_a_network_parameter():
    assert dict(activations.get("prelu").params) == {"alpha": 0.25}
    assert set(activations.get("prelu").param_derivatives) == {"alpha"}
    assert all(not activations.get(n).params for n in NAMES if n != "prelu")


# ---------------------------------------------------------------------------------------
# Numerical stability at |a| up to 1e4, float32 and float64.
# ---------------------------------------------------------------------------------------

EXTREMES = [-1e4, -1e3, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1e3, 1e4]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_derivatives_and_jax_derivatives_are_finite_at_extremes(name, dtype):
    act = activations.get(name)
    p = params_of(act, dtype)
    a = jnp.asarray(EXTREMES, dtype)
    f = lambda a: act.fn(a, **p)  # noqa: E731

    @jax.jit
    def evaluate(a):
        results = {"fn": f(a), "derivative": act.derivative(a, **p)}
        results["jacobian"] = act.jacobian(a, **p)
        results["second_derivative"] = act.second_derivative(a, **p)
        results["curvature"] = activations.curvature(act, a, jnp.ones_like(a), **p)
        if act.elementwise:  # the jnp.where trap: an overflowing unused branch gives NaN here
            results["jax.grad(fn)"] = jax.vmap(jax.grad(f))(a)
            results["jax.grad(jax.grad(fn))"] = jax.vmap(jax.grad(jax.grad(f)))(a)
        else:
            results["jax.jacrev(fn)"] = jax.jacrev(f)(a)
            results["jax.hessian(fn)"] = jax.hessian(f)(a)
        return results

    results = evaluate(a)
    for what, value in results.items():
        assert value.dtype == dtype, what
        assert jnp.all(jnp.isfinite(value)), (what, value)


def test_the_naive_elu_would_fail_the_where_trap_check():
    """The test above can fail: ELU's naive form passes NaN to jax.grad at a = 1e4."""
    naive_elu = lambda a: jnp.where(a > 0, a, jnp.expm1(a))  # noqa: E731
    assert jnp.isnan(jax.grad(naive_elu)(1e4))
    assert jax.grad(activations.get("elu").fn)(1e4) == 1.0


@pytest.mark.parametrize(
    ("name", "a", "limit"),
    [
        ("sigmoid", 1e4, 1.0),
        ("sigmoid", -1e4, 0.0),
        ("softplus", 1e4, 1e4),
        ("softplus", -1e4, 0.0),
        ("elu", -1e4, -1.0),
        ("gelu", 1e4, 1e4),
        ("gelu", -1e4, 0.0),
        ("gelu_tanh", 1e4, 1e4),
        ("gelu_tanh", -1e4, 0.0),
    ],
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_values_at_extremes_are_the_limits(name, a, limit, dtype):
    assert float(activations.get(name).fn(jnp.asarray(a, dtype))) == limit


# ---------------------------------------------------------------------------------------
# jvp/vjp helpers, jit and vmap (S22).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_jvp_and_vjp_equal_products_with_the_dense_jacobian(name):
    act = activations.get(name)
    p = params_of(act)
    keys = jax.random.split(jax.random.key(2), 3)
    a, t, g = (jax.random.normal(k, (4, 6)) for k in keys)
    J = jax.vmap(lambda a: act.jacobian(a, **p))(a)
    chex.assert_trees_all_close(activations.jvp(act, a, t, **p), jnp.einsum("bij,bj->bi", J, t))
    chex.assert_trees_all_close(activations.vjp(act, a, g, **p), jnp.einsum("bi,bij->bj", g, J))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, 3), ()])
def test_dense_jacobian_refuses_anything_but_one_example(name, shape):
    """jnp.diag of a batch is its diagonal and jnp.outer flattens it: silently wrong."""
    act = activations.get(name)
    expected = r"a must be one example of shape \(n,\).*got shape " + re.escape(str(shape))
    with pytest.raises(ValueError, match=expected):
        act.jacobian(jnp.ones(shape), **params_of(act))


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap_agree_with_eager(name):
    act = activations.get(name)
    p = params_of(act)
    a = jax.random.normal(jax.random.key(3), (4, 6)) * 4
    for fun in (act.fn, act.derivative):
        chex.assert_trees_all_close(jax.jit(fun)(a, **p), fun(a, **p))
    stacked = jnp.stack([act.jacobian(row, **p) for row in a])
    chex.assert_trees_all_close(jax.jit(jax.vmap(lambda a: act.jacobian(a, **p)))(a), stacked)


_kink_free = st.floats(-40, 40, allow_nan=False).filter(
    lambda v: abs(v) > 1e-6 and abs(abs(v) - 1) > 1e-6
)
_GRAD = {}  # one compiled witness per activation: hypothesis draws keep the shape (6,)


@pytest.mark.parametrize("name", ELEMENTWISE)
@settings(max_examples=20, deadline=None)
@given(values=st.lists(_kink_free, min_size=6, max_size=6))
def test_derivative_equals_jax_grad_at_random_points(name, values):
    act = activations.get(name)
    p = params_of(act)
    if name not in _GRAD:
        _GRAD[name] = jax.jit(jax.vmap(jax.grad(lambda a: act.fn(a, **p))))
        _GRAD[name + "/hand"] = jax.jit(lambda a: act.derivative(a, **p))
    a = jnp.asarray(values)
    chex.assert_trees_all_close(_GRAD[name + "/hand"](a), _GRAD[name](a), rtol=1e-12, atol=JAX_ATOL)


# ---------------------------------------------------------------------------------------
# Second derivatives (S26): f″ with three witnesses, the curvature term Σₖ gₖ ∇²fₖ.
# ---------------------------------------------------------------------------------------


def _sigmoid_second(a):
    """σ″ = e^{−a} (e^{−a} − 1) / (1 + e^{−a})³ for a ≥ 0; σ″ is odd."""
    if a < 0:
        return -_sigmoid_second(-a)
    e = math.exp(-a)
    return e * math.expm1(-a) / (1 + e) ** 3


def _sech2(u):
    return 4 * math.exp(-2 * abs(u)) / (1 + math.exp(-2 * abs(u))) ** 2


def _gelu_tanh_second(a):
    """From ½ a (1 + tanh u): f″ = sech² u · (u′ + ½ a (u″ − 2 tanh u · u′²))."""
    c = math.sqrt(2 / math.pi)
    u = c * (a + 0.044715 * a**3)
    du, d2u = c * (1 + 3 * 0.044715 * a**2), c * 6 * 0.044715 * a
    return _sech2(u) * (du + 0.5 * a * (d2u - 2 * math.tanh(u) * du**2))


SECOND_CLOSED_FORM = {
    "sigmoid": _sigmoid_second,
    "tanh": lambda a: -2 * math.tanh(a) * _sech2(a),
    "hard_tanh": lambda a: 0.0,
    "relu": lambda a: 0.0,
    "leaky_relu": lambda a: 0.0,
    "prelu": lambda a: 0.0,
    "softplus": lambda a: math.exp(-abs(a)) / (1 + math.exp(-abs(a))) ** 2,  # σ′
    "elu": lambda a: 0.0 if a >= 0 else math.exp(a),
    "gelu": lambda a: math.exp(-(a**2) / 2) / math.sqrt(2 * math.pi) * (2 - a**2),
    "gelu_tanh": _gelu_tanh_second,
    "sin": lambda a: -math.sin(a),
    "cos": lambda a: -math.cos(a),
    "identity": lambda a: 0.0,
}


def test_every_elementwise_activation_has_a_second_derivative_closed_form():
    assert set(SECOND_CLOSED_FORM) == set(ELEMENTWISE)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_second_derivative_three_witnesses(name):
    """f″ against jax.grad(jax.grad(fn)) and jax.hessian(fn), central differences of the hand
    f′ (float64), and the closed form written here with math (S26)."""
    act = activations.get(name)
    p = params_of(act)
    a = jnp.asarray(POINTS)
    f = lambda a: act.fn(a, **p)  # noqa: E731
    d2 = act.second_derivative(a, **p)
    by_grad, by_hessian = jax.jit(
        lambda a: (jax.vmap(jax.grad(jax.grad(f)))(a), jax.hessian(lambda a: jnp.sum(f(a)))(a))
    )(a)
    # JAX's forms of f″ (σ′(1 − 2σ), …) lose a few ε absolute in the tails, times u′² ≲ 400
    # for gelu_tanh; the hand forms are exact relatively there (closed form: rtol alone).
    chex.assert_trees_all_close(d2, by_grad, rtol=1e-12, atol=100 * JAX_ATOL)
    chex.assert_trees_all_close(jnp.diag(d2), by_hessian, rtol=1e-12, atol=100 * JAX_ATOL)
    df = lambda a: act.derivative(jnp.asarray(a), **p)  # noqa: E731
    fd = np.diag(central_difference_jacobian(df, POINTS))
    tol = central_difference_tolerance(np.asarray(df(POINTS)))
    error = np.abs(fd - np.asarray(d2))
    assert np.all(error <= tol), (POINTS[error > tol], error[error > tol])
    expected = np.array([SECOND_CLOSED_FORM[name](float(v)) for v in POINTS])
    chex.assert_trees_all_close(d2, expected, rtol=1e-11, atol=1e-300)


@pytest.mark.parametrize("alpha", [0.25, -0.5, 2.0])
def test_prelu_second_derivatives_in_a_and_alpha(alpha):
    """∂²f/∂a∂α = 0 if a > 0 else 1: JAX in both orders, central differences of the hand f′ in
    α, the closed form; ∂²f/∂α² = 0 and ∂²f/∂a² = 0 by JAX."""
    prelu = activations.get("prelu")
    a, alpha = jnp.asarray(POINTS), jnp.asarray(alpha)
    mixed = prelu.param_second_derivatives["alpha"](a, alpha=alpha)
    d = lambda i, j: jax.vmap(jax.grad(jax.grad(prelu.fn, i), j), (0, None))(a, alpha)  # noqa: E731
    chex.assert_trees_all_close(mixed, d(0, 1), rtol=0, atol=0)
    chex.assert_trees_all_close(mixed, d(1, 0), rtol=0, atol=0)
    chex.assert_trees_all_close(d(1, 1), jnp.zeros_like(a), rtol=0, atol=0)
    chex.assert_trees_all_close(d(0, 0), prelu.second_derivative(a, alpha=alpha), rtol=0, atol=0)
    df = lambda al: prelu.derivative(a, alpha=jnp.asarray(al[0]))  # noqa: E731
    fd = central_difference_jacobian(df, [float(alpha)])[:, 0]
    assert np.all(np.abs(fd - np.asarray(mixed)) <= central_difference_tolerance(np.ones(1)))
    chex.assert_trees_all_close(mixed, np.where(POINTS > 0, 0.0, 1.0), rtol=0, atol=0)
    assert set(prelu.param_second_derivatives) == set(prelu.param_derivatives)
    assert all(not activations.get(n).param_second_derivatives for n in NAMES if n != "prelu")


def softmax_curvature_closed_form(a, g):
    """Σₖ gₖ ∂²sₖ/∂aᵢ∂aⱼ, entry by entry, with ∂²sₖ/∂aᵢ∂aⱼ = sₖ[(δₖᵢ − sᵢ)(δₖⱼ − sⱼ) −
    sᵢ(δᵢⱼ − sⱼ)] (∂sₖ/∂aᵢ = sₖ(δₖᵢ − sᵢ) differentiated by the product rule)."""
    m = max(a)
    e = [math.exp(ai - m) for ai in a]
    s = [ei / sum(e) for ei in e]
    n = len(a)

    def d2(k, i, j):
        return s[k] * (((k == i) - s[i]) * ((k == j) - s[j]) - s[i] * ((i == j) - s[j]))

    return np.array(
        [[sum(g[k] * d2(k, i, j) for k in range(n)) for j in range(n)] for i in range(n)]
    )


@pytest.mark.parametrize("point", range(len(SOFTMAX_POINTS)))
def test_softmax_second_order_three_witnesses(point):
    """curvature(softmax, a, g) = Σₖ gₖ ∇²sₖ(a): jax.hessian, central differences of the hand
    J_sᵀ g (vjp), the closed form; second_derivative is its diagonal for g = eᵢ."""
    softmax = activations.get("softmax")
    a = SOFTMAX_POINTS[point]
    g = np.random.default_rng(point).normal(size=a.size)
    C = activations.curvature(softmax, jnp.asarray(a), jnp.asarray(g))
    by_jax = jax.hessian(lambda a: jnp.dot(jnp.asarray(g), softmax.fn(a)))(jnp.asarray(a))
    chex.assert_trees_all_close(C, by_jax, rtol=1e-12, atol=1e-15)
    vjp = lambda a: activations.vjp(softmax, jnp.asarray(a), jnp.asarray(g))  # noqa: E731
    fd = central_difference_jacobian(vjp, a)
    tol = central_difference_tolerance(np.abs(g).sum() * np.ones(a.size))[:, None]
    assert np.all(np.abs(fd - np.asarray(C)) <= tol), np.abs(fd - np.asarray(C)).max()
    chex.assert_trees_all_close(C, softmax_curvature_closed_form(a, g), rtol=1e-11, atol=1e-15)
    chex.assert_trees_all_close(C, C.T)
    diagonal = [
        activations.curvature(softmax, jnp.asarray(a), e)[i, i]
        for i, e in enumerate(np.eye(a.size))
    ]
    chex.assert_trees_all_close(
        softmax.second_derivative(jnp.asarray(a)), jnp.stack(diagonal), atol=1e-15
    )


@pytest.mark.parametrize("name", NAMES)
def test_curvature_equals_the_hessian_of_g_dot_f_and_curvature_vp_its_product(name):
    """curvature = ∇²_a ⟨g, f(a)⟩ by jax.hessian for every activation; curvature_vp is its
    product with t, on batches too, without the matrix (S26–S28)."""
    act = activations.get(name)
    p = params_of(act)
    keys = jax.random.split(jax.random.key(4), 3)
    a, g, t = (2 * jax.random.normal(k, (3, 5)) for k in keys)

    @jax.jit
    def evaluate(a, g, t):
        C = jax.vmap(lambda a, g: activations.curvature(act, a, g, **p))(a, g)
        by_jax = jax.vmap(jax.hessian(lambda a, g: jnp.dot(g, act.fn(a, **p))))(a, g)
        return C, by_jax, activations.curvature_vp(act, a, g, t, **p)

    C, by_jax, Ct = evaluate(a, g, t)
    chex.assert_trees_all_close(C, by_jax, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(C, jnp.swapaxes(C, 1, 2))
    chex.assert_trees_all_close(Ct, jnp.einsum("bij,bj->bi", C, t), rtol=1e-12, atol=1e-14)
    if act.elementwise:
        chex.assert_trees_all_close(C, jax.vmap(jnp.diag)(g * act.second_derivative(a, **p)))


@pytest.mark.parametrize(
    ("a", "g", "message"),
    [
        (jnp.ones((2, 3)), jnp.ones((2, 3)), r"a must be one example .*got shape \(2, 3\)"),
        (jnp.ones(3), jnp.ones((1, 3)), r"g must be one example .*got shape \(1, 3\)"),
        (jnp.ones(3), jnp.ones(4), r"g must have the shape of a, \(3,\); got \(4,\)"),
    ],
)
def test_dense_curvature_refuses_anything_but_one_example(a, g, message):
    for name in ("tanh", "softmax"):
        with pytest.raises(ValueError, match=message):
            activations.curvature(activations.get(name), a, g)


_HESS = {}


@pytest.mark.parametrize("name", ELEMENTWISE)
@settings(max_examples=10, deadline=None)
@given(values=st.lists(_kink_free, min_size=6, max_size=6))
def test_second_derivative_equals_jax_at_random_points(name, values):
    act = activations.get(name)
    p = params_of(act)
    if name not in _HESS:
        _HESS[name] = jax.jit(jax.vmap(jax.grad(jax.grad(lambda a: act.fn(a, **p)))))
        _HESS[name + "/hand"] = jax.jit(lambda a: act.second_derivative(a, **p))
    a = jnp.asarray(values)
    chex.assert_trees_all_close(
        _HESS[name + "/hand"](a), _HESS[name](a), rtol=1e-12, atol=100 * JAX_ATOL
    )


def test_nan_in_nan_out():
    a = jnp.array([0.5, jnp.nan, -0.5])
    z = jax.jit(
        lambda a: {n: activations.get(n).fn(a, **params_of(activations.get(n))) for n in NAMES}
    )(a)
    for name, value in z.items():
        assert bool(jnp.isnan(value[1])), (name, value)
        if name != "softmax":
            assert bool(jnp.all(jnp.isfinite(value[::2]))), (name, value)


def test_unknown_name_suggests_the_nearest_one():
    with pytest.raises(ValueError, match=r"Unknown activation 'tahn'.*did you mean 'tanh'\?"):
        activations.get("tahn")
    with pytest.raises(ValueError, match="did you mean 'leaky_relu'"):
        activations.get("leaky_rely")


# ---------------------------------------------------------------------------------------
# The figure script, end to end.
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_plot_activations_script_writes_png_and_json(tmp_path):
    path = Path(__file__).parents[1] / "scripts" / "plot_activations.py"
    script = load_script(path)
    script.main(["--out", str(tmp_path), "--quick"])
    assert (tmp_path / "activations.png").stat().st_size > 10_000
    rows = json.loads((tmp_path / "activations.json").read_text())
    assert [row["name"] for row in rows] == list(NAMES)
    # float64 grid, away from the kinks: f′ and jax.grad agree to rounding (measured ≤ 3e-15).
    assert all(row["max_abs_error_vs_jax_grad"] < 1e-12 for row in rows)


@pytest.mark.parametrize(
    "name", [n for n in activations.names() if activations.get(n).derivative_from_output]
)
def test_derivative_from_output_equals_derivative(name):
    act = activations.get(name)
    a = jnp.linspace(-8.0, 8.0, 161)
    # f′ from z: the rounding of z (ε|z|) is all the error, absolute, not relative to f′.
    chex.assert_trees_all_close(
        act.derivative_from_output(act.fn(a)), act.derivative(a), rtol=1e-12, atol=1e-15
    )
    # Far in the tails z rounds to ±1 (or 1): f′ from z is 0, the reference is tiny.
    a = jnp.array([-40.0, 40.0], jnp.float32)
    np.testing.assert_allclose(act.derivative_from_output(act.fn(a)), act.derivative(a), atol=1e-7)


@pytest.mark.parametrize("name", activations.names())
def test_piecewise_linear_means_f_second_is_zero_everywhere(name):
    """The flag the R-operator uses to skip the curvature term: set exactly where f″ ≡ 0."""
    act = activations.get(name)
    a = jnp.linspace(-3.0, 3.0, 61)
    p = {k: jnp.asarray(v) for k, v in act.params.items()}
    zero = bool(jnp.all(act.second_derivative(a[None, :], **p) == 0))
    assert act.piecewise_linear == zero


# ---------------------------------------------------------------------------------------
# A user-defined activation: a record works wherever a name does.
# ---------------------------------------------------------------------------------------


def _sig(a):
    return jax.nn.sigmoid(a)


# SiLU (swish): f = a σ(a), f′ = σ (1 + a σ(−a)), f″ = σ σ(−a) (2 + a (σ(−a) − σ)).
SILU = activations.elementwise(
    "silu",
    lambda a: a * _sig(a),
    lambda a: _sig(a) * (1 + a * _sig(-a)),
    lambda a: _sig(a) * _sig(-a) * (2 + a * (_sig(-a) - _sig(a))),
)


def test_a_user_record_has_the_derivatives_jax_finds():
    a = jnp.linspace(-6.0, 6.0, 25, dtype=jnp.float64)
    d = jax.vmap(jax.grad(SILU.fn))(a)
    chex.assert_trees_all_close(SILU.derivative(a), d, rtol=1e-12)
    chex.assert_trees_all_close(
        SILU.second_derivative(a), jax.vmap(jax.grad(jax.grad(SILU.fn)))(a), rtol=1e-10
    )
    chex.assert_trees_all_close(SILU.jacobian(a[:3]), jnp.diag(d[:3]), rtol=1e-12)


def test_a_user_record_is_static_and_hashable_two_equal_nets_share_a_compilation():
    twin = activations.elementwise("silu", SILU.fn, SILU.derivative, SILU.second_derivative)
    assert twin == SILU and hash(twin) == hash(SILU)
    a, b = fnn.MLP((3, 4, 2), (SILU, "identity")), fnn.MLP((3, 4, 2), (twin, "identity"))
    assert a == b and hash(a) == hash(b)
    assert fnn.MLP((3, 2), (activations.get("tanh"),)) == fnn.MLP((3, 2), ("tanh",))
    traces = []

    @jax.jit
    def f(net, params, x):
        traces.append(1)
        return fnn.apply(net, params, x)

    params = fnn.init(jax.random.key(0), a)
    f(a, params, jnp.ones(3))
    f(b, params, jnp.ones(3))
    assert len(traces) == 1


def test_a_user_record_under_a_built_in_name_is_refused():
    fake = activations.elementwise("relu", SILU.fn, SILU.derivative, SILU.second_derivative)
    with pytest.raises(ValueError, match=r"activations\[0\]: activation 'relu' is a built-in"):
        fnn.MLP((3, 2), (fake,))
    with pytest.raises(TypeError, match=r"activations\[0\]: activation must be a name"):
        fnn.MLP((3, 2), (jnp.tanh,))


@pytest.mark.parametrize("method", ["reverse", "explicit", "forward"])
def test_a_user_activation_runs_in_every_engine(method):
    net = fnn.MLP((3, 5, 4, 2), (SILU, "tanh", SILU))
    params = fnn.init(jax.random.key(1), net, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
    y = jax.random.normal(jax.random.key(3), (4, 2), jnp.float64)

    def f(p, x):
        z = x
        for layer_params, act in zip(p, (SILU.fn, jnp.tanh, SILU.fn)):
            z = act(z @ layer_params["W"].T + layer_params["b"])
        return z

    def mean_loss(p, x):
        return jnp.mean(jnp.sum((f(p, x) - y) ** 2, axis=-1))

    chex.assert_trees_all_close(fnn.apply(net, params, x), f(params, x), rtol=1e-12)
    value, grads = fnn.value_and_grad(net, params, x, y, method=method)
    want_value, (want_p, want_x) = jax.value_and_grad(mean_loss, argnums=(0, 1))(params, x)
    chex.assert_trees_all_close((value, grads["params"], grads["x"]), (want_value, want_p, want_x),
                                rtol=1e-10, atol=1e-12)  # fmt: skip
    jac_method = "auto" if method == "reverse" else method
    chex.assert_trees_all_close(
        fnn.jacobian(net, params, x[0], method=jac_method),
        jax.jacrev(lambda x: f(params, x))(x[0]),
        rtol=1e-10,
    )
    _, y_dot = fnn.forward_mode.jvp(net, params, x[0], x_dot=jnp.ones(3, jnp.float64))
    chex.assert_trees_all_close(
        y_dot, jax.jvp(lambda x: f(params, x), (x[0],), (jnp.ones(3, jnp.float64),))[1], rtol=1e-10
    )
    assert "silu" in str(fnn.summary(net))
