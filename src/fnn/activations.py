r"""Activation functions, each with its derivative and Jacobian written by hand (S6, S7).

The contract, stated once (as in stax): an :class:`Activation` is a record of pure
functions of the pre-activation ``a`` (any shape; the last axis is the unit axis):

* ``fn(a, **p)``          ``z = f(a)``
* ``derivative(a, **p)``  ``f′(a)`` elementwise, same shape as ``a``. For softmax, which is
  not elementwise, this is the diagonal of its Jacobian, ``s ⊙ (1 − s)``.
* ``jacobian(a, **p)``    the dense ``(n, n)`` matrix ``J_f(a)`` for one example ``a`` of
  shape ``(n,)``: ``diag(f′(a))`` (S16), or ``diag(s) − s sᵀ`` for softmax. Any other
  shape raises ``ValueError`` (``jax.vmap`` it over a batch).
* ``derivative_from_output(z, **p)``  optional (tanh, sigmoid): the same ``f′`` from the
  output ``z = f(a)``, ``1 − z²`` or ``z (1 − z)``, which the reverse engine reads from
  its cache (S17); ``derivative`` stays the reference, accurate in the tails too.

``p`` are the activation's learnable parameters (only PReLU has one, ``alpha``); they live
in the network's parameters next to ``W`` and ``b`` and ``param_derivatives[name](a, **p)``
gives ``∂f/∂p`` elementwise. No function here calls ``jax.grad``: every derivative is
written out, and the tests prove each one against ``jax.jacfwd``, ``jax.grad`` and
central differences.

The zoo, in registry order (:func:`names`): sigmoid, tanh, hard_tanh, relu, leaky_relu
(α = 0.01), prelu (α learnable, starts at 0.25), softplus, elu (α = 1), gelu (exact, erf),
gelu_tanh (tanh approximation), sin, cos, identity, softmax.

Conventions at the kinks, where f′ does not exist: ReLU′(0) = 0, LeakyReLU′(0) = α,
PReLU′(0) = α (the left branch's slope), hard_tanh′(±1) = 0. Every ``fn`` and ``derivative``
is finite for |a| up to 1e4 in float32 and float64, and so is ``jax.grad`` of every ``fn``:
no branch that ``jnp.where`` discards ever overflows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Activation", "get", "jvp", "names", "vjp"]

_NO_PARAMS: Mapping[str, float] = MappingProxyType({})


class Activation(NamedTuple):
    """A named activation ``f`` with its hand-written derivative and Jacobian (S6, S7)."""

    name: str
    fn: Callable[..., jax.Array]
    derivative: Callable[..., jax.Array]
    jacobian: Callable[..., jax.Array]
    elementwise: bool = True
    params: Mapping[str, float] = _NO_PARAMS
    param_derivatives: Mapping[str, Callable[..., jax.Array]] = _NO_PARAMS
    # f′ from the output z = f(a) where that is cheaper (tanh: 1 − z², sigmoid: z (1 − z)):
    # the reverse engine reuses the cached z, as jax.grad does. `derivative` stays the
    # accurate reference (these forms lose relative accuracy in the tails, where z → ±1).
    derivative_from_output: Callable[..., jax.Array] | None = None


def _check_one_example(a) -> None:
    """A dense Jacobian is for one example: ``jnp.diag`` and ``jnp.outer`` would silently
    take a diagonal of, or flatten, a batch."""
    if jnp.ndim(a) != 1:
        raise ValueError(
            "a must be one example of shape (n,) for the dense Jacobian (jax.vmap it over a "
            f"batch); got shape {jnp.shape(a)}."
        )


def _elementwise(
    name, fn, derivative, params=_NO_PARAMS, param_derivatives=_NO_PARAMS, from_output=None
):
    """An elementwise activation: its Jacobian is ``diag(f′(a))`` (S16)."""

    def jacobian(a, **p):
        _check_one_example(a)
        return jnp.diag(derivative(a, **p))

    return Activation(
        name,
        fn,
        derivative,
        jacobian,
        True,
        MappingProxyType(dict(params)),
        MappingProxyType(dict(param_derivatives)),
        from_output,
    )


# ---------------------------------------------------------------------------------------
# The zoo. Each entry: the formula, f, f′ side by side.
# ---------------------------------------------------------------------------------------

LEAKY_RELU_ALPHA = 0.01
PRELU_ALPHA_INIT = 0.25
ELU_ALPHA = 1.0
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_C = 0.044715


def _ones(a):
    """``1`` in the float dtype of ``a`` (integer inputs give the default float)."""
    return jnp.ones_like(a, dtype=jnp.result_type(a, float))


# σ(a) = 1 / (1 + e^{−a}),  σ′ = σ (1 − σ) = σ(a) σ(−a). jax.nn.sigmoid is the stable form
# (it never evaluates e^{+|a|}); σ(a) σ(−a) keeps σ′ accurate in both tails, where 1 − σ
# would round to 0.
def _sigmoid(a):
    return jax.nn.sigmoid(a)


def _sigmoid_derivative(a):
    return jax.nn.sigmoid(a) * jax.nn.sigmoid(-a)


def _sigmoid_derivative_from_output(z):
    return z * (1 - z)


# tanh′ = 1 − tanh² = 1 / cosh². The second form keeps its relative accuracy in the tails,
# where tanh² rounds to 1 (1 / cosh² = 1 / ∞ = 0 where cosh overflows: finite).
def _tanh_derivative(a):
    return 1 / jnp.cosh(a) ** 2


def _tanh_derivative_from_output(z):  # 1 − z², factored as jax.grad does: 1 − z is exact
    return (1 - z) * (1 + z)


# hard_tanh(a) = max(−1, min(1, a)),  hard_tanh′(a) = 1 if |a| < 1 else 0.
# Convention at the kinks: hard_tanh′(±1) = 0 (the derivative on the flat side).
def _hard_tanh(a):
    return jnp.clip(a, -1, 1)


def _hard_tanh_derivative(a):
    return jnp.where(jnp.abs(a) < 1, 1, 0).astype(jnp.result_type(a, float))


# ReLU(a) = max(0, a), ReLU′(a) = 1 if a > 0 else 0. Convention at the kink: ReLU′(0) = 0
# (as jax.nn.relu).
def _relu(a):
    return jnp.maximum(a, 0)


def _relu_derivative(a):
    return jnp.where(a > 0, 1, 0).astype(jnp.result_type(a, float))


# LeakyReLU(a) = a if a > 0 else α a, α = 0.01;  LeakyReLU′(a) = 1 if a > 0 else α.
# Convention at the kink: LeakyReLU′(0) = α (the slope of the left branch), as PReLU.
def _leaky_relu(a):
    return jnp.where(a > 0, a, LEAKY_RELU_ALPHA * a)


def _leaky_relu_derivative(a):
    return jnp.where(a > 0, 1, LEAKY_RELU_ALPHA) * _ones(a)


# PReLU(a) = a if a > 0 else α a;  ∂/∂a = 1 or α (α at the kink a = 0);  ∂/∂α = min(a, 0).
def _prelu(a, alpha):
    return jnp.where(a > 0, a, alpha * a)


def _prelu_derivative(a, alpha):
    return jnp.where(a > 0, jnp.ones_like(a), alpha * jnp.ones_like(a))


def _prelu_alpha_derivative(a, alpha):
    del alpha
    return jnp.minimum(a, 0)


# softplus(a) = log(1 + e^a) = log(e⁰ + e^a),  softplus′ = σ(a). jnp.logaddexp computes
# it as max(a, 0) + log(1 + e^{−|a|}): e^{a} is never evaluated for large a (no overflow),
# and its own derivative rule is exact at a = 0 (max and |·| written out would give
# jax.grad the value 0 there instead of σ(0) = ½).
def _softplus(a):
    return jnp.logaddexp(a, 0)


# ELU(a) = a if a ≥ 0 else α (e^a − 1), α = 1;  ELU′(a) = 1 if a > 0 else α e^a
# (both branches give 1 at a = 0 for α = 1: no kink). The unused branch is computed at
# min(a, 0): e^a for a = 1e4 would be inf, and jnp.where passes inf · 0 = NaN to gradients.
def _elu(a):
    return jnp.where(a > 0, a, ELU_ALPHA * jnp.expm1(jnp.minimum(a, 0)))


def _elu_derivative(a):
    return jnp.where(a > 0, 1, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * _ones(a)


# GELU(a) = a Φ(a) with the standard normal CDF Φ(a) = ½ erfc(−a / √2) (erfc keeps Φ
# accurate in the left tail, where 1 + erf(·) cancels);  GELU′(a) = Φ(a) + a φ(a),
# φ(a) = e^{−a²/2} / √(2π).
def _Phi(a):
    return 0.5 * jax.scipy.special.erfc(-a / math.sqrt(2))


def _gelu(a):
    return a * _Phi(a)


def _gelu_derivative(a):
    phi = jnp.exp(-0.5 * a**2) / math.sqrt(2 * math.pi)
    return _Phi(a) + a * phi


# GELU, tanh approximation: ½ a (1 + tanh u),  u = √(2/π) (a + 0.044715 a³);
# derivative ½ (1 + tanh u) + ½ a (1 − tanh² u) u′,  u′ = √(2/π) (1 + 3 · 0.044715 a²).
# Written with 1 + tanh u = 2σ(2u) and 1 − tanh² u = 4σ(2u)σ(−2u): the same numbers, but
# accurate where tanh u → −1 (a ≪ 0), where 1 + tanh u cancels.
def _gelu_tanh_u(a):
    return _SQRT_2_OVER_PI * (a + _GELU_TANH_C * a**3)


def _gelu_tanh(a):
    return a * jax.nn.sigmoid(2 * _gelu_tanh_u(a))


def _gelu_tanh_derivative(a):
    u = _gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return s + 2 * a * s * s_minus * du


# sin′ = cos,  cos′ = −sin.
def _cos_derivative(a):
    return -jnp.sin(a)


def _identity(a):
    return a


def _identity_derivative(a):
    return jnp.ones_like(a)


# softmax(a)ᵢ = e^{aᵢ} / Σⱼ e^{aⱼ}, computed as softmax(a − max a) (S7);
# J = diag(s) − s sᵀ (S16).
def _softmax(a):
    e = jnp.exp(a - jnp.max(a, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_diagonal(a):
    s = _softmax(a)
    return s * (1 - s)


def _softmax_jacobian(a):
    _check_one_example(a)
    s = _softmax(a)
    return jnp.diag(s) - jnp.outer(s, s)


_REGISTRY: dict[str, Activation] = {
    act.name: act
    for act in (
        _elementwise(
            "sigmoid", _sigmoid, _sigmoid_derivative, from_output=_sigmoid_derivative_from_output
        ),
        _elementwise("tanh", jnp.tanh, _tanh_derivative, from_output=_tanh_derivative_from_output),
        _elementwise("hard_tanh", _hard_tanh, _hard_tanh_derivative),
        _elementwise("relu", _relu, _relu_derivative),
        _elementwise("leaky_relu", _leaky_relu, _leaky_relu_derivative),
        _elementwise(
            "prelu",
            _prelu,
            _prelu_derivative,
            params={"alpha": PRELU_ALPHA_INIT},
            param_derivatives={"alpha": _prelu_alpha_derivative},
        ),
        _elementwise("softplus", _softplus, _sigmoid),
        _elementwise("elu", _elu, _elu_derivative),
        _elementwise("gelu", _gelu, _gelu_derivative),
        _elementwise("gelu_tanh", _gelu_tanh, _gelu_tanh_derivative),
        _elementwise("sin", jnp.sin, jnp.cos),
        _elementwise("cos", jnp.cos, _cos_derivative),
        _elementwise("identity", _identity, _identity_derivative),
        Activation("softmax", _softmax, _softmax_diagonal, _softmax_jacobian, elementwise=False),
    )
}


def names() -> tuple[str, ...]:
    """All activation names, in registry order (S6, S7)."""
    return tuple(_REGISTRY)


def get(name: str) -> Activation:
    """Return the :class:`Activation` called ``name`` (S6, S7).

    Raises:
      ValueError: ``name`` is not one of :func:`names`.

    >>> get("tanh").derivative(jnp.zeros(2))
    Array([1., 1.], dtype=float32)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown activation {name!r}; expected one of {names()}.")
    return _REGISTRY[name]


def jvp(act: Activation, a: jax.Array, t: jax.Array, **p) -> jax.Array:
    """``J_f(a) · t`` without building ``J_f`` (S16, S18): ``f′(a) ⊙ t``, or
    ``s ⊙ (t − ⟨s, t⟩)`` for softmax. Works on the last axis, so ``a`` and ``t`` may carry
    batch axes."""
    if act.elementwise:
        return act.derivative(a, **p) * t
    s = act.fn(a, **p)
    return s * (t - jnp.sum(s * t, axis=-1, keepdims=True))


def vjp(act: Activation, a: jax.Array, g: jax.Array, **p) -> jax.Array:
    """``g · J_f(a)`` without building ``J_f`` (S16, S17). Every Jacobian here is symmetric
    (diagonal, or ``diag(s) − s sᵀ``), so this equals :func:`jvp`."""
    return jvp(act, a, g, **p)
