r"""The built-in activations' formulas: f, f′ and f″ of each, side by side (S6, S7, S26).

Pure functions of the pre-activation ``a``, written by hand with the lecture's formula; the
first function of each group states the group's formulas and the numerics that keep them
finite. :mod:`fnn.activations` makes the
records (:class:`fnn.activations.Activation`) and the registry from them; read them there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fnn._checks import check_one_example

LEAKY_RELU_ALPHA = 0.01
"""LeakyReLU's slope ``α`` for ``a ≤ 0``."""
PRELU_ALPHA_INIT = 0.25
"""PReLU's initial slope ``α`` for ``a ≤ 0`` (learnable: it lives in the parameters)."""
ELU_ALPHA = 1.0
"""ELU's ``α`` in ``α (e^a − 1)`` for ``a < 0``."""
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_C = 0.044715


def ones(a):
    """``1`` in the float dtype of ``a`` (integer inputs give the default float)."""
    return jnp.ones_like(a, dtype=jnp.result_type(a, float))


def zeros(a, **p):
    """``f″ = 0``: piecewise linear activations (their kinks too, by convention)."""
    del p
    return jnp.zeros_like(a, dtype=jnp.result_type(a, float))


def sigmoid(a):
    """The logistic sigmoid ``σ(a) = 1 / (1 + e^{−a})``.

    Its derivatives: ``σ′ = σ (1 − σ) = σ(a) σ(−a)``,
    ``σ″ = σ′ (1 − 2σ) = σ(a) σ(−a) (σ(−a) − σ(a)) = −σ(a) σ(−a) tanh(a/2)``.
    ``jax.nn.sigmoid`` is the stable form (it never evaluates ``e^{+|a|}``); ``σ(a) σ(−a)``
    keeps ``σ′`` accurate in both tails, where ``1 − σ`` would round to 0, and ``tanh(a/2)``
    keeps ``σ″`` accurate near 0, where ``σ(−a) − σ(a)`` cancels.
    """
    return jax.nn.sigmoid(a)


def sigmoid_derivative(a):
    """``σ′(a) = σ(a)(1 − σ(a))``, computed as ``σ(a) σ(−a)`` (accurate in both tails)."""
    return jax.nn.sigmoid(a) * jax.nn.sigmoid(-a)


def sigmoid_second_derivative(a):
    """``σ″(a) = σ′(a)(1 − 2σ(a))``, computed as ``−σ′(a) tanh(a/2)`` (accurate near 0)."""
    return -sigmoid_derivative(a) * jnp.tanh(a / 2)


def sigmoid_derivative_from_output(z):
    """``σ′`` from the output ``z = σ(a)``: ``z (1 − z)``."""
    return z * (1 - z)


def tanh_derivative(a):
    """``tanh′(a) = 1 − tanh²(a)``, computed as ``1 / cosh²(a)``.

    The form ``1 / cosh²`` keeps its relative accuracy in the tails, where ``tanh²`` rounds
    to 1 (``1 / cosh² = 1 / ∞ = 0`` where ``cosh`` overflows: finite).
    """
    return 1 / jnp.cosh(a) ** 2


def tanh_second_derivative(a):
    """``tanh″(a) = −2 tanh(a) · tanh′(a)``."""
    return -2 * jnp.tanh(a) * tanh_derivative(a)


def tanh_derivative_from_output(z):
    """``tanh′`` from the output ``z = tanh(a)``: ``1 − z²``, factored as ``jax.grad`` does,
    ``(1 − z)(1 + z)`` (``1 − z`` is exact)."""
    return (1 - z) * (1 + z)


def hard_tanh(a):
    """``hard_tanh(a) = max(−1, min(1, a))``; its ``f″ = 0`` everywhere.

    Convention at the kinks: ``hard_tanh′(±1) = 0`` (the derivative on the flat side).
    Written as a ``jnp.where`` on ``|a| < 1`` so that ``jax.grad`` takes the flat branch at
    ±1 too (``jnp.clip`` gives ½).
    """
    return jnp.where(jnp.abs(a) < 1, a, jnp.sign(a))


def hard_tanh_derivative(a):
    """``hard_tanh′(a) = 1`` if ``|a| < 1`` else 0 (0 at the kinks ±1)."""
    return jnp.where(jnp.abs(a) < 1, 1, 0).astype(jnp.result_type(a, float))


def relu(a):
    """``ReLU(a) = max(0, a)``; its ``f″ = 0`` everywhere.

    Convention at the kink: ``ReLU′(0) = 0``, as ``jax.nn.relu``, whose own JVP rule gives
    ``jax.grad`` that value (``jnp.maximum``'s would give ½).
    """
    return jax.nn.relu(a)


def relu_derivative(a):
    """``ReLU′(a) = 1`` if ``a > 0`` else 0 (0 at the kink ``a = 0``)."""
    return jnp.where(a > 0, 1, 0).astype(jnp.result_type(a, float))


def leaky_relu(a):
    """``LeakyReLU(a) = a`` if ``a > 0`` else ``α a``, with ``α = LEAKY_RELU_ALPHA = 0.01``.

    ``LeakyReLU′(a) = 1`` if ``a > 0`` else ``α``; ``f″ = 0``. Convention at the kink:
    ``LeakyReLU′(0) = α`` (the slope of the left branch), as PReLU.
    """
    return jnp.where(a > 0, a, LEAKY_RELU_ALPHA * a)


def leaky_relu_derivative(a):
    """``LeakyReLU′(a) = 1`` if ``a > 0`` else ``α`` (``α`` at the kink ``a = 0``)."""
    return jnp.where(a > 0, 1, LEAKY_RELU_ALPHA) * ones(a)


def prelu(a, alpha):
    """``PReLU(a) = a`` if ``a > 0`` else ``α a``, with a learnable slope ``α = alpha``.

    ``∂/∂a = 1`` or ``α`` (``α`` at the kink ``a = 0``); ``∂²/∂a² = 0``;
    ``∂/∂α = min(a, 0)`` (the same branches: ``a > 0`` gives 0);
    ``∂²/∂a∂α = 0`` if ``a > 0`` else 1 (1 at the kink, as ``∂/∂α`` of ``PReLU′(0) = α``);
    ``∂²/∂α² = 0``.
    """
    return jnp.where(a > 0, a, alpha * a)


def prelu_derivative(a, alpha):
    """``∂PReLU/∂a = 1`` if ``a > 0`` else ``α`` (``α`` at the kink ``a = 0``)."""
    return jnp.where(a > 0, jnp.ones_like(a), alpha * jnp.ones_like(a))


def prelu_alpha_derivative(a, alpha):
    """``∂PReLU/∂α = min(a, 0)``, on the same branches as ``prelu`` (``a > 0`` gives 0)."""
    del alpha
    return jnp.where(a > 0, jnp.zeros_like(a), a)


def prelu_alpha_second_derivative(a, alpha):
    """The mixed ``∂²PReLU/∂a∂α = 0`` if ``a > 0`` else 1 (1 at the kink ``a = 0``)."""
    del alpha
    return jnp.where(a > 0, 0, 1).astype(jnp.result_type(a, float))


def softplus(a):
    """``softplus(a) = log(1 + e^a)``, whose ``softplus′ = σ(a)`` and ``softplus″ = σ′(a)``.

    ``jnp.logaddexp(a, 0) = log(e⁰ + e^a)`` computes it as ``max(a, 0) + log(1 + e^{−|a|})``:
    ``e^a`` is never evaluated for large ``a`` (no overflow), and its own derivative rule is
    exact at ``a = 0`` (``max`` and ``|·|`` written out would give ``jax.grad`` the value 0
    there instead of ``σ(0) = ½``).
    """
    return jnp.logaddexp(a, 0)


def elu(a):
    """``ELU(a) = a`` if ``a ≥ 0`` else ``α (e^a − 1)``, with ``α = ELU_ALPHA = 1``.

    ``ELU′(a) = 1`` if ``a ≥ 0`` else ``α e^a`` (both branches give 1 at ``a = 0`` for
    ``α = 1``: no kink in ``f``); ``ELU″(a) = 0`` if ``a ≥ 0`` else ``α e^a`` (``f″`` jumps at
    0: 0 there, the right branch, which is also the one ``jax.grad`` takes). The unused
    branch is computed at ``min(a, 0)``: ``e^a`` for ``a = 1e4`` would be ``inf``, and
    ``jnp.where`` passes ``inf · 0 = NaN`` to gradients.
    """
    return jnp.where(a >= 0, a, ELU_ALPHA * jnp.expm1(jnp.minimum(a, 0)))


def elu_derivative(a):
    """``ELU′(a) = 1`` if ``a ≥ 0`` else ``α e^a``."""
    return jnp.where(a >= 0, 1, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * ones(a)


def elu_second_derivative(a):
    """``ELU″(a) = 0`` if ``a ≥ 0`` else ``α e^a`` (0 at ``a = 0``, the right branch)."""
    return jnp.where(a >= 0, 0, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * ones(a)


def Phi(a):
    """The standard normal CDF ``Φ(a) = ½ erfc(−a / √2)``.

    ``erfc`` keeps ``Φ`` accurate in the left tail, where ``1 + erf(·)`` cancels.
    """
    return 0.5 * jax.scipy.special.erfc(-a / math.sqrt(2))


def phi(a):
    """The standard normal density ``φ(a) = e^{−a²/2} / √(2π)``."""
    return jnp.exp(-0.5 * a**2) / math.sqrt(2 * math.pi)


def gelu(a):
    """The exact GELU, ``GELU(a) = a Φ(a)`` with the standard normal CDF ``Φ``."""
    return a * Phi(a)


def gelu_derivative(a):
    """``GELU′(a) = Φ(a) + a φ(a)``."""
    return Phi(a) + a * phi(a)


def gelu_second_derivative(a):
    """``GELU″(a) = 2φ(a) + a φ′(a) = φ(a) (2 − a²)``."""
    return phi(a) * (2 - a**2)


def gelu_tanh_u(a):
    """The argument of the tanh in GELU's tanh approximation, ``u = √(2/π) (a + 0.044715 a³)``.

    Its derivatives: ``u′ = √(2/π) (1 + 3 · 0.044715 a²)``, ``u″ = √(2/π) · 6 · 0.044715 a``.
    """
    return _SQRT_2_OVER_PI * (a + _GELU_TANH_C * a**3)


def gelu_tanh(a):
    """GELU's tanh approximation, ``f(a) = ½ a (1 + tanh u)`` with ``u`` from
    :func:`gelu_tanh_u`.

    Written with ``S = σ(2u) = ½ (1 + tanh u)`` and ``S′ = 2 S σ(−2u) u′ = ½ (1 − tanh² u) u′``:
    ``f = a S``, ``f′ = S + a S′``, ``f″ = 2S′ + a S″``, ``S″ = 2 S σ(−2u) (u″ − 2 u′² tanh u)``,
    so ``f″ = 2 S σ(−2u) (2u′ + a (u″ − 2 u′² tanh u))``. The same numbers as the tanh forms,
    but accurate where ``tanh u → −1`` (``a ≪ 0``), where ``1 + tanh u`` cancels;
    ``S σ(−2u) → 0`` in both tails (its product with ``u′² ~ a⁴`` stays finite: 1e16 at
    ``|a| = 1e4``).
    """
    return a * jax.nn.sigmoid(2 * gelu_tanh_u(a))


def gelu_tanh_derivative(a):
    """``f′ = S + a S′`` of GELU's tanh approximation (``S = σ(2u)``, ``S′ = 2 S σ(−2u) u′``)."""
    u = gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return s + 2 * a * s * s_minus * du


def gelu_tanh_second_derivative(a):
    """``f″ = 2 S σ(−2u) (2u′ + a (u″ − 2 u′² tanh u))`` of GELU's tanh approximation."""
    u = gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    d2u = _SQRT_2_OVER_PI * 6 * _GELU_TANH_C * a
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return 2 * s * s_minus * (2 * du + a * (d2u - 2 * du**2 * jnp.tanh(u)))


def sin_second_derivative(a):
    """``sin″(a) = −sin(a)`` (``sin′ = cos`` is ``jnp.cos`` itself)."""
    return -jnp.sin(a)


def cos_derivative(a):
    """``cos′(a) = −sin(a)``."""
    return -jnp.sin(a)


def cos_second_derivative(a):
    """``cos″(a) = −cos(a)``."""
    return -jnp.cos(a)


def identity(a):
    """The identity ``f(a) = a`` (a linear output layer); its ``f″ = 0``."""
    return a


def identity_derivative(a):
    """``identity′(a) = 1``, in the shape of ``a``."""
    return jnp.ones_like(a)


def softmax(a):
    """``softmax(a)ᵢ = e^{aᵢ} / Σⱼ e^{aⱼ}`` over the last axis, computed as
    ``softmax(a − max a)`` (S7).

    The shift ``max a`` carries no derivative (softmax is shift invariant), so
    ``stop_gradient``: ``jax.grad`` then differentiates exactly ``e / Σe``, the hand
    formulas' own expression.
    """
    e = jnp.exp(a - jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def softmax_diagonal(a):
    """The diagonal of softmax's Jacobian, ``∂sᵢ/∂aᵢ = sᵢ (1 − sᵢ)`` with ``s = softmax(a)``."""
    s = softmax(a)
    return s * (1 - s)


def softmax_jacobian(a):
    """Softmax's Jacobian ``J = diag(s) − s sᵀ`` for one example ``a`` of shape ``(n,)`` (S16)."""
    check_one_example(a)
    s = softmax(a)
    return jnp.diag(s) - jnp.outer(s, s)


def softmax_second_diagonal(a):
    """The diagonal ``∂²sᵢ/∂aᵢ² = sᵢ (1 − sᵢ) (1 − 2sᵢ)``; the rest is in
    :func:`fnn.activations.curvature`."""
    s = softmax(a)
    return s * (1 - s) * (1 - 2 * s)
