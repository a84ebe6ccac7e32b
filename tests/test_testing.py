"""fnn.testing (S11, S19, S29): a wrong custom derivative rule — sign, factor, transposed, a
dropped term — planted in real functions is caught, with a message that points at it; the
correct rules pass in float32 and float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import testing

# ---------------------------------------------------------------------------------------
# Real functions with hand-written rules; `bug` plants a mistake in the rule.
# ---------------------------------------------------------------------------------------


def make_logsumexp(bug=None):
    """log Σ exp(x), stable; ∂/∂x = softmax(x)."""

    @jax.custom_vjp
    def lse(x):
        m = jnp.max(x)
        return m + jnp.log(jnp.sum(jnp.exp(x - m)))

    def fwd(x):
        value = lse(x)
        return value, (x, value)

    def bwd(res, g):
        x, value = res
        p = jnp.exp(x - value)
        if bug == "sign":
            return (-g * p,)
        if bug == "factor":
            return (2 * g * p,)
        if bug == "dropped":  # the normalisation by Σ exp forgotten
            return (g * jnp.exp(x - jnp.max(x)),)
        return (g * p,)

    lse.defvjp(fwd, bwd)
    return lse


def make_normalize(bug=None):
    """y = x / ‖x‖; uᵀJ = (u − y ⟨y, u⟩) / ‖x‖."""

    @jax.custom_vjp
    def normalize(x):
        return x / jnp.linalg.norm(x)

    def fwd(x):
        n = jnp.linalg.norm(x)
        return x / n, (x / n, n)

    def bwd(res, u):
        y, n = res
        if bug == "dropped":  # the projection term left out
            return (u / n,)
        if bug == "sign":
            return ((y * jnp.vdot(y, u) - u) / n,)
        return ((u - y * jnp.vdot(y, u)) / n,)

    normalize.defvjp(fwd, bwd)
    return normalize


def make_dense(bug=None):
    """z = tanh(W x + b) with its VJP by hand: δ = (1 − z²) ⊙ u, ∂W = δ xᵀ, ∂x = Wᵀ δ."""

    @jax.custom_vjp
    def dense(W, b, x):
        return jnp.tanh(W @ x + b)

    def fwd(W, b, x):
        z = dense(W, b, x)
        return z, (W, x, z)

    def bwd(res, u):
        W, x, z = res
        delta = (1 - z**2) * u
        if bug == "transposed":  # W δ instead of Wᵀ δ (W square), δ xᵀ transposed
            return jnp.outer(x, delta), delta, W @ delta
        if bug == "factor":
            return jnp.outer(delta, x), 0.5 * delta, W.T @ delta
        return jnp.outer(delta, x), delta, W.T @ delta

    dense.defvjp(fwd, bwd)
    return dense


def make_softplus(bug=None):
    """softplus(x) = log(1 + eˣ) with a custom JVP: ṫ σ(x)."""

    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    @softplus.defjvp
    def rule(primals, tangents):
        (x,), (t,) = primals, tangents
        s = jax.nn.sigmoid(x)
        if bug == "sign":
            return softplus(x), -t * s
        if bug == "mirrored":  # σ(−x) for σ(x)
            return softplus(x), t * jax.nn.sigmoid(-x)
        if bug == "second order":  # first derivative right, its derivative lost
            return softplus(x), t * jax.lax.stop_gradient(s)
        return softplus(x), t * s

    return softplus


DTYPES = [jnp.float32, jnp.float64]


def point(dtype, n=5, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=n), dtype)


# ---------------------------------------------------------------------------------------
# Correct rules pass, in float32 and float64.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_correct_rules_pass(dtype):
    x = point(dtype)
    W = jnp.asarray(np.random.default_rng(1).normal(size=(5, 5)), dtype)
    b = point(dtype, seed=2)
    testing.assert_grad(make_logsumexp(), x)
    testing.assert_vjp(make_logsumexp(), x)
    testing.assert_vjp(make_normalize(), x)
    testing.assert_vjp(make_dense(), W, b, x)
    testing.assert_grad(lambda W, b, x: jnp.sum(make_dense()(W, b, x) ** 2), W, b, x)
    softplus = make_softplus()
    testing.assert_jvp(softplus, x)
    testing.assert_vjp(softplus, x)
    report = testing.assert_hvp(lambda x: jnp.sum(softplus(x)), x)
    assert report.passed and report.kind == "HVP" and report.oracle_dtype == "float64"
    testing.assert_hvp(make_logsumexp(), x)


def test_a_correct_float32_gradient_is_judged_against_float64():
    x = point(jnp.float32)
    report = testing.assert_grad(make_logsumexp(), x)
    assert report.dtype == "float32" and report.oracle_dtype == "float64"


# ---------------------------------------------------------------------------------------
# Wrong rules are caught.
# ---------------------------------------------------------------------------------------

PLANTED = [
    ("logsumexp", "sign"),
    ("logsumexp", "factor"),
    ("logsumexp", "dropped"),
    ("normalize", "dropped"),
    ("normalize", "sign"),
    ("dense", "transposed"),
    ("dense", "factor"),
    ("softplus", "sign"),
    ("softplus", "mirrored"),
]


def call(name, bug, dtype):
    x = point(dtype)
    if name == "dense":
        W = jnp.asarray(np.random.default_rng(1).normal(size=(5, 5)), dtype)
        return make_dense(bug), (W, point(dtype, seed=2), x)
    maker = {"logsumexp": make_logsumexp, "normalize": make_normalize,
             "softplus": make_softplus}[name]  # fmt: skip
    return maker(bug), (x,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "bug"), PLANTED)
def test_every_planted_wrong_rule_is_caught(name, bug, dtype):
    f, args = call(name, bug, dtype)
    with pytest.raises(AssertionError, match="disagrees with float64 central differences"):
        testing.assert_vjp(f, *args)
    if name == "softplus":
        with pytest.raises(
            AssertionError, match=r"(?s)the JVP J t disagrees .* at the output, leaf"
        ):
            testing.assert_jvp(f, *args)


def test_a_lost_second_derivative_is_caught_by_assert_hvp_only():
    softplus = make_softplus("second order")
    x = point(jnp.float64)
    testing.assert_grad(lambda x: jnp.sum(softplus(x)), x)  # first order is right
    with pytest.raises(AssertionError, match=r"(?s)the HVP ∇²f v disagrees .* argument 'x'"):
        testing.assert_hvp(lambda x: jnp.sum(softplus(x)), x)


def test_a_wrong_hvp_given_by_hand_is_caught():
    def f(w):
        return jnp.sum(w**3)

    w = jnp.array([1.0, -2.0, 0.5])
    v = jnp.array([1.0, 1.0, 1.0])
    testing.assert_hvp(f, w, v=v, hvp=lambda w, v: 6 * w * v)
    with pytest.raises(AssertionError, match=r"index \(1,\)"):
        testing.assert_hvp(f, w, v=v, hvp=lambda w, v: (6 * w * v).at[1].add(0.1))


# ---------------------------------------------------------------------------------------
# The message: argument, leaf, index, both numbers, the tolerance.
# ---------------------------------------------------------------------------------------


def test_the_message_points_at_the_culprit():
    dense = make_dense("factor")  # ∂b halved
    W = jnp.asarray(np.random.default_rng(1).normal(size=(5, 5)))
    x, b = point(jnp.float64), point(jnp.float64, seed=2)

    def loss(W, params, x):
        return jnp.sum(dense(W, params["b"], x) ** 2)

    with pytest.raises(AssertionError) as caught:
        testing.assert_grad(loss, W, {"b": b}, x)
    message = str(caught.value)
    assert "argument 'params', leaf ['b'], index (" in message, message
    assert "gradient" in message and "central differences" in message and "tolerance" in message
    assert len(message.splitlines()) <= 5


def test_nan_fails_and_nan_inputs_are_errors():
    def f(x):
        return jnp.sum(jnp.sqrt(x))  # ∂/∂x at 0 is inf

    with pytest.raises(AssertionError, match="not finite: hand"):
        testing.assert_grad(f, jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"x must be finite; got nan at index \(1,\)"):
        testing.assert_grad(f, jnp.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"argnums must index the 1 arguments"):
        testing.assert_grad(f, jnp.ones(2), argnums=3)


def test_fixed_arguments_are_held_fixed():
    def f(w, labels, scale):
        return scale * jnp.sum(w[labels] ** 2)

    report = testing.assert_grad(f, jnp.arange(4.0), jnp.array([0, 2]), 3.0, argnums=0)
    assert report.passed


@functools.partial(jax.jit, static_argnames=())
def _jitted(x):
    return jnp.sum(jnp.cos(x) * x)


def test_a_jitted_function_can_be_checked():
    testing.assert_grad(_jitted, point(jnp.float32))
