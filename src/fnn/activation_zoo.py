r"""The built-in activations' formulas: f, f′ and f″ of each, side by side (S6, S7, S26).

Pure functions of the pre-activation ``a``, written by hand with the lecture's formula and
the numerics that keep them finite above each group. :mod:`fnn.activations` makes the
records (:class:`fnn.activations.Activation`) and the registry from them; read them there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fnn._checks import check_one_example

LEAKY_RELU_ALPHA = 0.01
PRELU_ALPHA_INIT = 0.25
ELU_ALPHA = 1.0
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_C = 0.044715


def ones(a):
    """``1`` in the float dtype of ``a`` (integer inputs give the default float)."""
    return jnp.ones_like(a, dtype=jnp.result_type(a, float))


def zeros(a, **p):
    """``f″ = 0``: piecewise linear activations (their kinks too, by convention)."""
    del p
    return jnp.zeros_like(a, dtype=jnp.result_type(a, float))


# σ(a) = 1 / (1 + e^{−a}),  σ′ = σ (1 − σ) = σ(a) σ(−a),
# σ″ = σ′ (1 − 2σ) = σ(a) σ(−a) (σ(−a) − σ(a)) = −σ(a) σ(−a) tanh(a/2).
# jax.nn.sigmoid is the stable form (it never evaluates e^{+|a|}); σ(a) σ(−a) keeps σ′
# accurate in both tails, where 1 − σ would round to 0, and tanh(a/2) keeps σ″ accurate
# near 0, where σ(−a) − σ(a) cancels.
def sigmoid(a):
    return jax.nn.sigmoid(a)


def sigmoid_derivative(a):
    return jax.nn.sigmoid(a) * jax.nn.sigmoid(-a)


def sigmoid_second_derivative(a):
    return -sigmoid_derivative(a) * jnp.tanh(a / 2)


def sigmoid_derivative_from_output(z):
    return z * (1 - z)


# tanh′ = 1 − tanh² = 1 / cosh²,  tanh″ = −2 tanh · tanh′. The form 1 / cosh² keeps its
# relative accuracy in the tails, where tanh² rounds to 1 (1 / cosh² = 1 / ∞ = 0 where cosh
# overflows: finite).
def tanh_derivative(a):
    return 1 / jnp.cosh(a) ** 2


def tanh_second_derivative(a):
    return -2 * jnp.tanh(a) * tanh_derivative(a)


def tanh_derivative_from_output(z):  # 1 − z², factored as jax.grad does: 1 − z is exact
    return (1 - z) * (1 + z)


# hard_tanh(a) = max(−1, min(1, a)),  hard_tanh′(a) = 1 if |a| < 1 else 0,  hard_tanh″ = 0.
# Convention at the kinks: hard_tanh′(±1) = 0 (the derivative on the flat side). Written as
# a where on |a| < 1 so that jax.grad takes the flat branch at ±1 too (jnp.clip gives ½).
def hard_tanh(a):
    return jnp.where(jnp.abs(a) < 1, a, jnp.sign(a))


def hard_tanh_derivative(a):
    return jnp.where(jnp.abs(a) < 1, 1, 0).astype(jnp.result_type(a, float))


# ReLU(a) = max(0, a), ReLU′(a) = 1 if a > 0 else 0, ReLU″ = 0. Convention at the kink:
# ReLU′(0) = 0, as jax.nn.relu, whose own JVP rule gives jax.grad that value (jnp.maximum's
# would give ½).
def relu(a):
    return jax.nn.relu(a)


def relu_derivative(a):
    return jnp.where(a > 0, 1, 0).astype(jnp.result_type(a, float))


# LeakyReLU(a) = a if a > 0 else α a, α = 0.01;  LeakyReLU′(a) = 1 if a > 0 else α;  f″ = 0.
# Convention at the kink: LeakyReLU′(0) = α (the slope of the left branch), as PReLU.
def leaky_relu(a):
    return jnp.where(a > 0, a, LEAKY_RELU_ALPHA * a)


def leaky_relu_derivative(a):
    return jnp.where(a > 0, 1, LEAKY_RELU_ALPHA) * ones(a)


# PReLU(a) = a if a > 0 else α a;  ∂/∂a = 1 or α (α at the kink a = 0);  ∂²/∂a² = 0;
# ∂/∂α = min(a, 0) (the same branches: a > 0 gives 0);  ∂²/∂a∂α = 0 if a > 0 else 1
# (1 at the kink, as ∂/∂α of PReLU′(0) = α);  ∂²/∂α² = 0.
def prelu(a, alpha):
    return jnp.where(a > 0, a, alpha * a)


def prelu_derivative(a, alpha):
    return jnp.where(a > 0, jnp.ones_like(a), alpha * jnp.ones_like(a))


def prelu_alpha_derivative(a, alpha):
    del alpha
    return jnp.where(a > 0, jnp.zeros_like(a), a)


def prelu_alpha_second_derivative(a, alpha):
    del alpha
    return jnp.where(a > 0, 0, 1).astype(jnp.result_type(a, float))


# softplus(a) = log(1 + e^a) = log(e⁰ + e^a),  softplus′ = σ(a),  softplus″ = σ′(a).
# jnp.logaddexp computes it as max(a, 0) + log(1 + e^{−|a|}): e^{a} is never evaluated for
# large a (no overflow), and its own derivative rule is exact at a = 0 (max and |·| written
# out would give jax.grad the value 0 there instead of σ(0) = ½).
def softplus(a):
    return jnp.logaddexp(a, 0)


# ELU(a) = a if a ≥ 0 else α (e^a − 1), α = 1;  ELU′(a) = 1 if a ≥ 0 else α e^a (both
# branches give 1 at a = 0 for α = 1: no kink in f);  ELU″(a) = 0 if a ≥ 0 else α e^a
# (f″ jumps at 0: 0 there, the right branch, which is also the one jax.grad takes). The
# unused branch is computed at min(a, 0): e^a for a = 1e4 would be inf, and jnp.where passes
# inf · 0 = NaN to gradients.
def elu(a):
    return jnp.where(a >= 0, a, ELU_ALPHA * jnp.expm1(jnp.minimum(a, 0)))


def elu_derivative(a):
    return jnp.where(a >= 0, 1, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * ones(a)


def elu_second_derivative(a):
    return jnp.where(a >= 0, 0, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * ones(a)


# GELU(a) = a Φ(a) with the standard normal CDF Φ(a) = ½ erfc(−a / √2) (erfc keeps Φ
# accurate in the left tail, where 1 + erf(·) cancels);  GELU′(a) = Φ(a) + a φ(a),
# φ(a) = e^{−a²/2} / √(2π);  GELU″(a) = 2φ(a) + a φ′(a) = φ(a) (2 − a²).
def Phi(a):
    return 0.5 * jax.scipy.special.erfc(-a / math.sqrt(2))


def phi(a):
    return jnp.exp(-0.5 * a**2) / math.sqrt(2 * math.pi)


def gelu(a):
    return a * Phi(a)


def gelu_derivative(a):
    return Phi(a) + a * phi(a)


def gelu_second_derivative(a):
    return phi(a) * (2 - a**2)


# GELU, tanh approximation: ½ a (1 + tanh u),  u = √(2/π) (a + 0.044715 a³),
# u′ = √(2/π) (1 + 3 · 0.044715 a²),  u″ = √(2/π) · 6 · 0.044715 a.
# Written with S = σ(2u) = ½ (1 + tanh u) and S′ = 2 S σ(−2u) u′ = ½ (1 − tanh² u) u′:
# f = a S,  f′ = S + a S′,  f″ = 2S′ + a S″,  S″ = 2 S σ(−2u) (u″ − 2 u′² tanh u), so
# f″ = 2 S σ(−2u) (2u′ + a (u″ − 2 u′² tanh u)). The same numbers as the tanh forms, but
# accurate where tanh u → −1 (a ≪ 0), where 1 + tanh u cancels; S σ(−2u) → 0 in both tails
# (its product with u′² ~ a⁴ stays finite: 1e16 at |a| = 1e4).
def gelu_tanh_u(a):
    return _SQRT_2_OVER_PI * (a + _GELU_TANH_C * a**3)


def gelu_tanh(a):
    return a * jax.nn.sigmoid(2 * gelu_tanh_u(a))


def gelu_tanh_derivative(a):
    u = gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return s + 2 * a * s * s_minus * du


def gelu_tanh_second_derivative(a):
    u = gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    d2u = _SQRT_2_OVER_PI * 6 * _GELU_TANH_C * a
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return 2 * s * s_minus * (2 * du + a * (d2u - 2 * du**2 * jnp.tanh(u)))


# sin′ = cos, sin″ = −sin;  cos′ = −sin, cos″ = −cos;  identity′ = 1, identity″ = 0.
def sin_second_derivative(a):
    return -jnp.sin(a)


def cos_derivative(a):
    return -jnp.sin(a)


def cos_second_derivative(a):
    return -jnp.cos(a)


def identity(a):
    return a


def identity_derivative(a):
    return jnp.ones_like(a)


# softmax(a)ᵢ = e^{aᵢ} / Σⱼ e^{aⱼ}, computed as softmax(a − max a) (S7); J = diag(s) − s sᵀ
# (S16); ∂²sᵢ/∂aᵢ² = sᵢ (1 − sᵢ) (1 − 2sᵢ) (the diagonal; the rest is in `curvature`). The
# shift max a carries no derivative (softmax is shift invariant), so stop_gradient: jax.grad
# then differentiates exactly e / Σe, the hand formulas' own expression.
def softmax(a):
    e = jnp.exp(a - jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def softmax_diagonal(a):
    s = softmax(a)
    return s * (1 - s)


def softmax_jacobian(a):
    check_one_example(a)
    s = softmax(a)
    return jnp.diag(s) - jnp.outer(s, s)


def softmax_second_diagonal(a):
    s = softmax(a)
    return s * (1 - s) * (1 - 2 * s)
