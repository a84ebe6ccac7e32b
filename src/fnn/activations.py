r"""Activation functions, each with its first and second derivative written by hand (S6, S7, S26).

The contract, stated once (as in stax): an :class:`Activation` is a record of pure
functions of the pre-activation ``a`` (any shape; the last axis is the unit axis):

* ``fn(a, **p)``          ``z = f(a)``
* ``derivative(a, **p)``  ``f′(a)`` elementwise, same shape as ``a``. For softmax, which is
  not elementwise, this is the diagonal of its Jacobian, ``s ⊙ (1 − s)``.
* ``jacobian(a, **p)``    the dense ``(n, n)`` matrix ``J_f(a)`` for one example ``a`` of
  shape ``(n,)``: ``diag(f′(a))`` (S16), or ``diag(s) − s sᵀ`` for softmax. Any other
  shape raises ``ValueError`` (``jax.vmap`` it over a batch).
* ``second_derivative(a, **p)``  ``f″(a)`` elementwise (S26). For softmax the diagonal
  ``∂²sᵢ/∂aᵢ² = s (1 − s) (1 − 2s)``; its full second-order term is :func:`curvature`.
* ``derivative_from_output(z, **p)``  optional (tanh, sigmoid): the same ``f′`` from the
  output ``z = f(a)``, ``1 − z²`` or ``z (1 − z)``, which the reverse engine reads from
  its cache (S17); ``derivative`` stays the reference, accurate in the tails too.

``p`` are the activation's learnable parameters (only PReLU has one, ``alpha``); they live
in the network's parameters next to ``W`` and ``b``: ``param_derivatives[name](a, **p)``
gives ``∂f/∂p`` and ``param_second_derivatives[name](a, **p)`` the mixed ``∂²f/∂a∂p``,
elementwise (PReLU's ``∂²f/∂α² = 0``). The curvature engines (Hessian backpropagation and
the R-operator, S27–S28) need the second-order term of the chain rule,
``Σₖ gₖ ∇²fₖ(a)`` for a row ``g = ∂L/∂z``: :func:`curvature` gives it as a dense matrix for
one example, :func:`curvature_vp` times a vector without building it.

No function here calls ``jax.grad``: every derivative is written out, and the tests prove
each one against ``jax.grad``/``jax.jacfwd``/``jax.hessian``, central differences and the
closed form. The other way round holds too: ``jax.grad`` of every ``fn`` equals
``derivative``, and ``jax.grad(jax.grad(fn))`` equals ``second_derivative``, everywhere, kinks
included, because each ``fn`` is written so that JAX's own rules take the documented branch
(``jnp.where(a > 0, …)`` rather than ``jnp.maximum``/``jnp.clip``/``jnp.minimum``, whose
derivative at a tie is ½).

The zoo, in registry order (:func:`names`): sigmoid, tanh, hard_tanh, relu, leaky_relu
(α = 0.01), prelu (α learnable, starts at 0.25), softplus, elu (α = 1), gelu (exact, erf),
gelu_tanh (tanh approximation), sin, cos, identity, softmax.

Conventions at the kinks, where f′ does not exist: ReLU′(0) = 0, LeakyReLU′(0) = α,
PReLU′(0) = α (the left branch's slope, so ∂²f/∂a∂α = 1 there), hard_tanh′(±1) = 0,
ELU′(0) = 1. Where f′ jumps or f″ does not exist, f″ = 0 (ReLU, LeakyReLU, PReLU at 0,
hard_tanh at ±1, ELU at 0). Every ``fn``, ``derivative``, ``second_derivative`` is finite for
|a| up to 1e4 in float32 and float64, and so are ``jax.grad`` and ``jax.hessian`` of every
``fn``: no branch that ``jnp.where`` discards ever overflows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn._checks import unknown_name

__all__ = ["Activation", "curvature", "curvature_vp", "get", "jvp", "names", "vjp"]

_NO_PARAMS: Mapping[str, float] = MappingProxyType({})


class Activation(NamedTuple):
    """A named activation ``f`` with its hand-written derivatives and Jacobian (S6, S7, S26)."""

    name: str
    fn: Callable[..., jax.Array]
    derivative: Callable[..., jax.Array]
    jacobian: Callable[..., jax.Array]
    second_derivative: Callable[..., jax.Array]
    elementwise: bool = True
    params: Mapping[str, float] = _NO_PARAMS
    param_derivatives: Mapping[str, Callable[..., jax.Array]] = _NO_PARAMS
    # ∂²f/∂a∂p per learnable parameter p (PReLU: ∂²f/∂a∂α); every ∂²f/∂p² here is 0.
    param_second_derivatives: Mapping[str, Callable[..., jax.Array]] = _NO_PARAMS
    # f′ from the output z = f(a) where that is cheaper (tanh: 1 − z², sigmoid: z (1 − z)):
    # the reverse engine reuses the cached z, as jax.grad does. `derivative` stays the
    # accurate reference (these forms lose relative accuracy in the tails, where z → ±1).
    derivative_from_output: Callable[..., jax.Array] | None = None
    # f″ = 0 everywhere (ReLU, LeakyReLU, PReLU, hard_tanh, identity: piecewise linear, their
    # kinks by convention): the R-operator skips the curvature term, which is zero.
    piecewise_linear: bool = False
    # Where f′ jumps (ReLU at 0, hard_tanh at ±1): a central difference that straddles one
    # of these points measures neither side's derivative, so the gradient check leaves it out.
    kinks: tuple[float, ...] = ()
    # c with f(−a) = c − f(a) (0 for odd f, 1 for sigmoid), or None: a unit's sign can be
    # flipped without changing the network only when this holds (S8).
    flip_offset: float | None = None


def _check_one_example(a, name: str = "a") -> None:
    """A dense Jacobian is for one example: ``jnp.diag`` and ``jnp.outer`` would silently
    take a diagonal of, or flatten, a batch."""
    if jnp.ndim(a) != 1:
        raise ValueError(
            f"{name} must be one example of shape (n,) for a dense (n, n) matrix (jax.vmap it "
            f"over a batch); got shape {jnp.shape(a)}."
        )


def _elementwise(
    name,
    fn,
    derivative,
    second_derivative,
    params=_NO_PARAMS,
    param_derivatives=_NO_PARAMS,
    param_second_derivatives=_NO_PARAMS,
    from_output=None,
    kinks=(),
    flip_offset=None,
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
        second_derivative,
        True,
        MappingProxyType(dict(params)),
        MappingProxyType(dict(param_derivatives)),
        MappingProxyType(dict(param_second_derivatives)),
        from_output,
        second_derivative is _zeros,
        tuple(kinks),
        flip_offset,
    )


# ---------------------------------------------------------------------------------------
# The zoo. Each entry: the formula, then f, f′, f″ side by side.
# ---------------------------------------------------------------------------------------

LEAKY_RELU_ALPHA = 0.01
PRELU_ALPHA_INIT = 0.25
ELU_ALPHA = 1.0
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_C = 0.044715


def _ones(a):
    """``1`` in the float dtype of ``a`` (integer inputs give the default float)."""
    return jnp.ones_like(a, dtype=jnp.result_type(a, float))


def _zeros(a, **p):
    """``f″ = 0``: piecewise linear activations (their kinks too, by convention)."""
    del p
    return jnp.zeros_like(a, dtype=jnp.result_type(a, float))


# σ(a) = 1 / (1 + e^{−a}),  σ′ = σ (1 − σ) = σ(a) σ(−a),
# σ″ = σ′ (1 − 2σ) = σ(a) σ(−a) (σ(−a) − σ(a)) = −σ(a) σ(−a) tanh(a/2).
# jax.nn.sigmoid is the stable form (it never evaluates e^{+|a|}); σ(a) σ(−a) keeps σ′
# accurate in both tails, where 1 − σ would round to 0, and tanh(a/2) keeps σ″ accurate
# near 0, where σ(−a) − σ(a) cancels.
def _sigmoid(a):
    return jax.nn.sigmoid(a)


def _sigmoid_derivative(a):
    return jax.nn.sigmoid(a) * jax.nn.sigmoid(-a)


def _sigmoid_second_derivative(a):
    return -_sigmoid_derivative(a) * jnp.tanh(a / 2)


def _sigmoid_derivative_from_output(z):
    return z * (1 - z)


# tanh′ = 1 − tanh² = 1 / cosh²,  tanh″ = −2 tanh · tanh′. The form 1 / cosh² keeps its
# relative accuracy in the tails, where tanh² rounds to 1 (1 / cosh² = 1 / ∞ = 0 where cosh
# overflows: finite).
def _tanh_derivative(a):
    return 1 / jnp.cosh(a) ** 2


def _tanh_second_derivative(a):
    return -2 * jnp.tanh(a) * _tanh_derivative(a)


def _tanh_derivative_from_output(z):  # 1 − z², factored as jax.grad does: 1 − z is exact
    return (1 - z) * (1 + z)


# hard_tanh(a) = max(−1, min(1, a)),  hard_tanh′(a) = 1 if |a| < 1 else 0,  hard_tanh″ = 0.
# Convention at the kinks: hard_tanh′(±1) = 0 (the derivative on the flat side). Written as
# a where on |a| < 1 so that jax.grad takes the flat branch at ±1 too (jnp.clip gives ½).
def _hard_tanh(a):
    return jnp.where(jnp.abs(a) < 1, a, jnp.sign(a))


def _hard_tanh_derivative(a):
    return jnp.where(jnp.abs(a) < 1, 1, 0).astype(jnp.result_type(a, float))


# ReLU(a) = max(0, a), ReLU′(a) = 1 if a > 0 else 0, ReLU″ = 0. Convention at the kink:
# ReLU′(0) = 0, as jax.nn.relu, whose own JVP rule gives jax.grad that value (jnp.maximum's
# would give ½).
def _relu(a):
    return jax.nn.relu(a)


def _relu_derivative(a):
    return jnp.where(a > 0, 1, 0).astype(jnp.result_type(a, float))


# LeakyReLU(a) = a if a > 0 else α a, α = 0.01;  LeakyReLU′(a) = 1 if a > 0 else α;  f″ = 0.
# Convention at the kink: LeakyReLU′(0) = α (the slope of the left branch), as PReLU.
def _leaky_relu(a):
    return jnp.where(a > 0, a, LEAKY_RELU_ALPHA * a)


def _leaky_relu_derivative(a):
    return jnp.where(a > 0, 1, LEAKY_RELU_ALPHA) * _ones(a)


# PReLU(a) = a if a > 0 else α a;  ∂/∂a = 1 or α (α at the kink a = 0);  ∂²/∂a² = 0;
# ∂/∂α = min(a, 0) (the same branches: a > 0 gives 0);  ∂²/∂a∂α = 0 if a > 0 else 1
# (1 at the kink, as ∂/∂α of PReLU′(0) = α);  ∂²/∂α² = 0.
def _prelu(a, alpha):
    return jnp.where(a > 0, a, alpha * a)


def _prelu_derivative(a, alpha):
    return jnp.where(a > 0, jnp.ones_like(a), alpha * jnp.ones_like(a))


def _prelu_alpha_derivative(a, alpha):
    del alpha
    return jnp.where(a > 0, jnp.zeros_like(a), a)


def _prelu_alpha_second_derivative(a, alpha):
    del alpha
    return jnp.where(a > 0, 0, 1).astype(jnp.result_type(a, float))


# softplus(a) = log(1 + e^a) = log(e⁰ + e^a),  softplus′ = σ(a),  softplus″ = σ′(a).
# jnp.logaddexp computes it as max(a, 0) + log(1 + e^{−|a|}): e^{a} is never evaluated for
# large a (no overflow), and its own derivative rule is exact at a = 0 (max and |·| written
# out would give jax.grad the value 0 there instead of σ(0) = ½).
def _softplus(a):
    return jnp.logaddexp(a, 0)


# ELU(a) = a if a ≥ 0 else α (e^a − 1), α = 1;  ELU′(a) = 1 if a ≥ 0 else α e^a (both
# branches give 1 at a = 0 for α = 1: no kink in f);  ELU″(a) = 0 if a ≥ 0 else α e^a
# (f″ jumps at 0: 0 there, the right branch, which is also the one jax.grad takes). The
# unused branch is computed at min(a, 0): e^a for a = 1e4 would be inf, and jnp.where passes
# inf · 0 = NaN to gradients.
def _elu(a):
    return jnp.where(a >= 0, a, ELU_ALPHA * jnp.expm1(jnp.minimum(a, 0)))


def _elu_derivative(a):
    return jnp.where(a >= 0, 1, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * _ones(a)


def _elu_second_derivative(a):
    return jnp.where(a >= 0, 0, ELU_ALPHA * jnp.exp(jnp.minimum(a, 0))) * _ones(a)


# GELU(a) = a Φ(a) with the standard normal CDF Φ(a) = ½ erfc(−a / √2) (erfc keeps Φ
# accurate in the left tail, where 1 + erf(·) cancels);  GELU′(a) = Φ(a) + a φ(a),
# φ(a) = e^{−a²/2} / √(2π);  GELU″(a) = 2φ(a) + a φ′(a) = φ(a) (2 − a²).
def _Phi(a):
    return 0.5 * jax.scipy.special.erfc(-a / math.sqrt(2))


def _phi(a):
    return jnp.exp(-0.5 * a**2) / math.sqrt(2 * math.pi)


def _gelu(a):
    return a * _Phi(a)


def _gelu_derivative(a):
    return _Phi(a) + a * _phi(a)


def _gelu_second_derivative(a):
    return _phi(a) * (2 - a**2)


# GELU, tanh approximation: ½ a (1 + tanh u),  u = √(2/π) (a + 0.044715 a³),
# u′ = √(2/π) (1 + 3 · 0.044715 a²),  u″ = √(2/π) · 6 · 0.044715 a.
# Written with S = σ(2u) = ½ (1 + tanh u) and S′ = 2 S σ(−2u) u′ = ½ (1 − tanh² u) u′:
# f = a S,  f′ = S + a S′,  f″ = 2S′ + a S″,  S″ = 2 S σ(−2u) (u″ − 2 u′² tanh u), so
# f″ = 2 S σ(−2u) (2u′ + a (u″ − 2 u′² tanh u)). The same numbers as the tanh forms, but
# accurate where tanh u → −1 (a ≪ 0), where 1 + tanh u cancels; S σ(−2u) → 0 in both tails
# (its product with u′² ~ a⁴ stays finite: 1e16 at |a| = 1e4).
def _gelu_tanh_u(a):
    return _SQRT_2_OVER_PI * (a + _GELU_TANH_C * a**3)


def _gelu_tanh(a):
    return a * jax.nn.sigmoid(2 * _gelu_tanh_u(a))


def _gelu_tanh_derivative(a):
    u = _gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return s + 2 * a * s * s_minus * du


def _gelu_tanh_second_derivative(a):
    u = _gelu_tanh_u(a)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * a**2)
    d2u = _SQRT_2_OVER_PI * 6 * _GELU_TANH_C * a
    s, s_minus = jax.nn.sigmoid(2 * u), jax.nn.sigmoid(-2 * u)
    return 2 * s * s_minus * (2 * du + a * (d2u - 2 * du**2 * jnp.tanh(u)))


# sin′ = cos, sin″ = −sin;  cos′ = −sin, cos″ = −cos;  identity′ = 1, identity″ = 0.
def _sin_second_derivative(a):
    return -jnp.sin(a)


def _cos_derivative(a):
    return -jnp.sin(a)


def _cos_second_derivative(a):
    return -jnp.cos(a)


def _identity(a):
    return a


def _identity_derivative(a):
    return jnp.ones_like(a)


# softmax(a)ᵢ = e^{aᵢ} / Σⱼ e^{aⱼ}, computed as softmax(a − max a) (S7); J = diag(s) − s sᵀ
# (S16); ∂²sᵢ/∂aᵢ² = sᵢ (1 − sᵢ) (1 − 2sᵢ) (the diagonal; the rest is in `curvature`). The
# shift max a carries no derivative (softmax is shift invariant), so stop_gradient: jax.grad
# then differentiates exactly e / Σe, the hand formulas' own expression.
def _softmax(a):
    e = jnp.exp(a - jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_diagonal(a):
    s = _softmax(a)
    return s * (1 - s)


def _softmax_jacobian(a):
    _check_one_example(a)
    s = _softmax(a)
    return jnp.diag(s) - jnp.outer(s, s)


def _softmax_second_diagonal(a):
    s = _softmax(a)
    return s * (1 - s) * (1 - 2 * s)


_REGISTRY: dict[str, Activation] = {
    act.name: act
    for act in (
        _elementwise(
            "sigmoid",
            _sigmoid,
            _sigmoid_derivative,
            _sigmoid_second_derivative,
            from_output=_sigmoid_derivative_from_output,
            flip_offset=1.0,
        ),
        _elementwise(
            "tanh",
            jnp.tanh,
            _tanh_derivative,
            _tanh_second_derivative,
            from_output=_tanh_derivative_from_output,
            flip_offset=0.0,
        ),
        _elementwise(
            "hard_tanh",
            _hard_tanh,
            _hard_tanh_derivative,
            _zeros,
            kinks=(-1.0, 1.0),
            flip_offset=0.0,
        ),
        _elementwise("relu", _relu, _relu_derivative, _zeros, kinks=(0.0,)),
        _elementwise("leaky_relu", _leaky_relu, _leaky_relu_derivative, _zeros, kinks=(0.0,)),
        _elementwise(
            "prelu",
            _prelu,
            _prelu_derivative,
            _zeros,
            params={"alpha": PRELU_ALPHA_INIT},
            param_derivatives={"alpha": _prelu_alpha_derivative},
            param_second_derivatives={"alpha": _prelu_alpha_second_derivative},
            kinks=(0.0,),
        ),
        _elementwise("softplus", _softplus, _sigmoid, _sigmoid_derivative),
        _elementwise("elu", _elu, _elu_derivative, _elu_second_derivative),
        _elementwise("gelu", _gelu, _gelu_derivative, _gelu_second_derivative),
        _elementwise("gelu_tanh", _gelu_tanh, _gelu_tanh_derivative, _gelu_tanh_second_derivative),
        _elementwise("sin", jnp.sin, jnp.cos, _sin_second_derivative, flip_offset=0.0),
        _elementwise("cos", jnp.cos, _cos_derivative, _cos_second_derivative),
        _elementwise("identity", _identity, _identity_derivative, _zeros, flip_offset=0.0),
        Activation(
            "softmax",
            _softmax,
            _softmax_diagonal,
            _softmax_jacobian,
            _softmax_second_diagonal,
            elementwise=False,
        ),
    )
}


def names() -> tuple[str, ...]:
    """All activation names, in registry order (S6, S7)."""
    return tuple(_REGISTRY)


def get(name: str) -> Activation:
    """Return the :class:`Activation` called ``name`` (S6, S7).

    Raises:
      ValueError: ``name`` is not one of :func:`names` (with the nearest one as a hint).

    >>> get("tanh").derivative(jnp.zeros(2))
    Array([1., 1.], dtype=float32)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("activation", name, names())
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


# The second-order term of the chain rule (S26–S28). For L(f(a)) with g = ∂L/∂z:
#   ∇²_a L = J_fᵀ H_z J_f + Σₖ gₖ ∇²fₖ(a),
# and the second term is what these two give. Elementwise f: ∇²fₖ = f″(aₖ) eₖeₖᵀ, so the sum
# is diag(g ⊙ f″(a)). Softmax, from ∂sₖ/∂aᵢ = sₖ (δₖᵢ − sᵢ) differentiated once more:
#   Σₖ gₖ ∇²sₖ = diag(u) − s uᵀ − u sᵀ,  u = s ⊙ (g − ⟨s, g⟩) = J_sᵀ g,
# symmetric, with diagonal sᵢ (1 − sᵢ)(1 − 2sᵢ) for g = eᵢ (second_derivative).
def curvature(act: Activation, a: jax.Array, g: jax.Array, **p) -> jax.Array:
    r"""The dense ``(n, n)`` matrix ``Σₖ gₖ ∇²fₖ(a)`` for ONE example (S26, S28).

    The residual term of Hessian backpropagation: ``∇²_a L = J_fᵀ H_z J_f + Σₖ gₖ ∇²fₖ(a)``
    with ``g = ∂L/∂z``. Elementwise: ``diag(g ⊙ f″(a))``; softmax:
    ``diag(u) − s uᵀ − u sᵀ`` with ``u = s ⊙ (g − ⟨s, g⟩)``.

    Args:
      act: the activation.
      a: one example's pre-activation, shape ``(n,)``.
      g: ``∂L/∂z`` at ``z = f(a)``, shape ``(n,)``.
      **p: the activation's parameters (PReLU: ``alpha``).

    Returns:
      The symmetric ``(n, n)`` matrix.

    Raises:
      ValueError: ``a`` or ``g`` is not one example of shape ``(n,)``, or their shapes differ.

    >>> curvature(get("tanh"), jnp.array([0.5, -0.5]), jnp.array([1.0, 2.0])).round(4)
    Array([[-0.7269,  0.    ],
           [ 0.    ,  1.4537]], dtype=float32)
    """
    _check_one_example(a)
    _check_one_example(g, "g")
    if jnp.shape(g) != jnp.shape(a):
        raise ValueError(f"g must have the shape of a, {jnp.shape(a)}; got {jnp.shape(g)}.")
    if act.elementwise:
        return jnp.diag(g * act.second_derivative(a, **p))
    s, u = act.fn(a, **p), vjp(act, a, g, **p)  # u = J_sᵀ g
    return jnp.diag(u) - jnp.outer(s, u) - jnp.outer(u, s)


def curvature_vp(act: Activation, a: jax.Array, g: jax.Array, t: jax.Array, **p) -> jax.Array:
    r"""``(Σₖ gₖ ∇²fₖ(a)) · t`` without building the matrix (S26, S27).

    The residual term of the R-operator's backward pass, ``R{δ} = … + (Σₖ gₖ ∇²fₖ(a)) R{a}``.
    Elementwise: ``g ⊙ f″(a) ⊙ t``; softmax: ``u ⊙ t − s ⟨u, t⟩ − u ⟨s, t⟩`` with
    ``u = s ⊙ (g − ⟨s, g⟩)``.

    Args:
      act: the activation.
      a: the pre-activation, shape ``(..., n)``: batch axes allowed.
      g: ``∂L/∂z`` at ``z = f(a)``, the shape of ``a``.
      t: the vector to multiply (``R{a}`` in the R-operator), the shape of ``a``.
      **p: the activation's parameters (PReLU: ``alpha``).

    Returns:
      ``(Σₖ gₖ ∇²fₖ(a)) · t`` on the last axis, the shape of ``a``.

    The softmax at ``a = 0`` (``s = 1/3``) with ``g = t = e₁``: ``∂²s₁/∂a₁² = 2/27`` first.

    >>> e1 = jnp.array([1.0, 0.0, 0.0])
    >>> curvature_vp(get("softmax"), jnp.zeros(3), e1, e1).round(4)
    Array([ 0.0741, -0.037 , -0.037 ], dtype=float32)
    """
    if act.elementwise:
        return g * act.second_derivative(a, **p) * t
    s, u = act.fn(a, **p), vjp(act, a, g, **p)  # u = J_sᵀ g
    return (
        u * t
        - s * jnp.sum(u * t, axis=-1, keepdims=True)
        - u * jnp.sum(s * t, axis=-1, keepdims=True)
    )
