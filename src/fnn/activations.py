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

The built-ins' formulas live in :mod:`fnn.activation_zoo`, f, f′ and f″ side by side; the
records are made here. The zoo, in registry order (:func:`names`): sigmoid, tanh,
hard_tanh, relu, leaky_relu (α = 0.01), prelu (α learnable, starts at 0.25), softplus,
elu (α = 1), gelu (exact, erf), gelu_tanh (tanh approximation), sin, cos, identity, softmax.

Conventions at the kinks, where f′ does not exist: ReLU′(0) = 0, LeakyReLU′(0) = α,
PReLU′(0) = α (the left branch's slope, so ∂²f/∂a∂α = 1 there), hard_tanh′(±1) = 0,
ELU′(0) = 1. Where f′ jumps or f″ does not exist, f″ = 0 (ReLU, LeakyReLU, PReLU at 0,
hard_tanh at ±1, ELU at 0). Every ``fn``, ``derivative``, ``second_derivative`` is finite for
|a| up to 1e4 in float32 and float64, and so are ``jax.grad`` and ``jax.hessian`` of every
``fn``: no branch that ``jnp.where`` discards ever overflows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnn import activation_zoo as zoo
from fnn._checks import check_one_example, unknown_name

__all__ = [
    "Activation",
    "FrozenMapping",
    "canonical",
    "curvature",
    "curvature_vp",
    "elementwise",
    "get",
    "jvp",
    "name_of",
    "names",
    "vjp",
]


class FrozenMapping(Mapping):
    """A read-only, hashable mapping: an :class:`Activation` is static configuration of a
    network (its :class:`fnn.MLP` is a static jit argument), so every field must hash.

    >>> FrozenMapping({"alpha": 0.25}) == FrozenMapping(alpha=0.25)
    True
    """

    def __init__(self, *args, **kwargs):
        self._items = dict(*args, **kwargs)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._items!r})"


_NO_PARAMS: Mapping[str, float] = FrozenMapping()


class Activation(NamedTuple):
    """A named activation ``f`` with its hand-written derivatives and Jacobian (S6, S7, S26).

    Build an elementwise one with :func:`elementwise`; a record works wherever a name does
    (``MLP(sizes, activations=(record, …))``, every engine, :func:`get`). Its fields are
    hashable (functions, tuples, :class:`FrozenMapping`), so a network holding it stays a
    static jit argument: two networks built with the same record share their compilation.
    """

    name: str
    """The activation's name, as errors and summaries print it (``"relu"``)."""
    fn: Callable[..., jax.Array]
    """``f(a, **p)``: the activation ``z = f(a)``."""
    derivative: Callable[..., jax.Array]
    """``f′(a, **p)`` elementwise, same shape as ``a`` (softmax: its Jacobian's diagonal)."""
    jacobian: Callable[..., jax.Array]
    """``J_f(a, **p)``: the dense ``(n, n)`` Jacobian for one example ``a`` of shape ``(n,)``."""
    second_derivative: Callable[..., jax.Array]
    """``f″(a, **p)`` elementwise (S26); for softmax the diagonal ``∂²sᵢ/∂aᵢ²``."""
    elementwise: bool = True
    """Whether ``f`` acts on each unit alone (``False`` for softmax)."""
    params: Mapping[str, float] = _NO_PARAMS
    """The learnable parameters with their initial values (PReLU: ``{"alpha": 0.25}``)."""
    param_derivatives: Mapping[str, Callable[..., jax.Array]] = _NO_PARAMS
    """``∂f/∂p`` per learnable parameter ``p``, elementwise."""
    param_second_derivatives: Mapping[str, Callable[..., jax.Array]] = _NO_PARAMS
    """The mixed ``∂²f/∂a∂p`` per learnable parameter ``p`` (PReLU: ``∂²f/∂a∂α``).

    Every ``∂²f/∂p²`` here is 0.
    """
    derivative_from_output: Callable[..., jax.Array] | None = None
    """``f′`` from the output ``z = f(a)`` where that is cheaper, or ``None``.

    tanh: ``1 − z²``, sigmoid: ``z (1 − z)``: the reverse engine reuses the cached ``z``, as
    ``jax.grad`` does. ``derivative`` stays the accurate reference (these forms lose relative
    accuracy in the tails, where ``z → ±1``).
    """
    piecewise_linear: bool = False
    """Whether ``f″ = 0`` everywhere, so that the R-operator skips the zero curvature term.

    ReLU, LeakyReLU, PReLU, hard_tanh, identity: piecewise linear, their kinks by convention.
    """
    kinks: tuple[float, ...] = ()
    """The points where ``f′`` jumps (ReLU at 0, hard_tanh at ±1).

    A central difference that straddles one of these points measures neither side's
    derivative, so the gradient check leaves it out.
    """
    flip_offset: float | None = None
    """The ``c`` with ``f(−a) = c − f(a)`` (0 for odd ``f``, 1 for sigmoid), or ``None``.

    A unit's sign can be flipped without changing the network only when this holds (S8).
    """


@functools.cache
def _diagonal_jacobian(derivative: Callable) -> Callable:
    """``J_f(a) = diag(f′(a))`` for one example (S16); one function per ``derivative``, so
    that two records built from the same functions are equal (and hash alike)."""

    def jacobian(a, **p):
        check_one_example(a)
        return jnp.diag(derivative(a, **p))

    return jacobian


def elementwise(
    name: str,
    fn: Callable,
    derivative: Callable,
    second_derivative: Callable,
    *,
    kinks: tuple[float, ...] = (),
    flip_offset: float | None = None,
    derivative_from_output: Callable | None = None,
    params: Mapping[str, float] = _NO_PARAMS,
    param_derivatives: Mapping[str, Callable] = _NO_PARAMS,
    param_second_derivatives: Mapping[str, Callable] = _NO_PARAMS,
) -> Activation:
    r"""An elementwise activation record from ``f``, ``f′`` and ``f″`` (S6, S16, S26): its
    Jacobian is ``diag(f′(a))``.

    Args:
      name: how errors and summaries call it (not one of :func:`names`: those are taken).
      fn, derivative, second_derivative: ``f(a, **p)``, ``f′(a, **p)``, ``f″(a, **p)``,
        elementwise on arrays of any shape.
      kinks: the points where ``f′`` jumps (a gradient check leaves out central differences
        that straddle one).
      flip_offset: ``c`` with ``f(−a) = c − f(a)`` (0 for odd ``f``), or ``None`` (S8).
      derivative_from_output: optional ``f′`` from the output ``z = f(a)``.
      params, param_derivatives, param_second_derivatives: learnable parameters with their
        initial values, ``∂f/∂p`` and ``∂²f/∂a∂p`` (PReLU's ``alpha``).

    Returns:
      The :class:`Activation`.

    Raises:
      TypeError: ``name`` is not a string, or a function is not callable.

    SiLU (swish), ``f = a σ(a)``, ``f′ = σ (1 + a σ(−a))``, ``f″ = σ σ(−a) (2 + a (σ(−a) − σ))``:

    >>> sig = jax.nn.sigmoid
    >>> silu = elementwise("silu", lambda a: a * sig(a), lambda a: sig(a) * (1 + a * sig(-a)),
    ...                    lambda a: sig(a) * sig(-a) * (2 + a * (sig(-a) - sig(a))))
    >>> float(silu.derivative(jnp.array(0.0)))
    0.5
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string; got {type(name).__name__}.")
    for arg, f in (
        ("fn", fn),
        ("derivative", derivative),
        ("second_derivative", second_derivative),
    ):
        if not callable(f):
            raise TypeError(f"{arg} must be a function of a; got {type(f).__name__}.")
    return Activation(
        name,
        fn,
        derivative,
        _diagonal_jacobian(derivative),
        second_derivative,
        True,
        FrozenMapping(params),
        FrozenMapping(param_derivatives),
        FrozenMapping(param_second_derivatives),
        derivative_from_output,
        second_derivative is zoo.zeros,
        tuple(float(k) for k in kinks),
        flip_offset,
    )


_REGISTRY: dict[str, Activation] = {
    act.name: act
    for act in (
        elementwise(
            "sigmoid",
            zoo.sigmoid,
            zoo.sigmoid_derivative,
            zoo.sigmoid_second_derivative,
            derivative_from_output=zoo.sigmoid_derivative_from_output,
            flip_offset=1.0,
        ),
        elementwise(
            "tanh",
            jnp.tanh,
            zoo.tanh_derivative,
            zoo.tanh_second_derivative,
            derivative_from_output=zoo.tanh_derivative_from_output,
            flip_offset=0.0,
        ),
        elementwise(
            "hard_tanh",
            zoo.hard_tanh,
            zoo.hard_tanh_derivative,
            zoo.zeros,
            kinks=(-1.0, 1.0),
            flip_offset=0.0,
        ),
        elementwise("relu", zoo.relu, zoo.relu_derivative, zoo.zeros, kinks=(0.0,)),
        elementwise(
            "leaky_relu", zoo.leaky_relu, zoo.leaky_relu_derivative, zoo.zeros, kinks=(0.0,)
        ),
        elementwise(
            "prelu",
            zoo.prelu,
            zoo.prelu_derivative,
            zoo.zeros,
            params={"alpha": zoo.PRELU_ALPHA_INIT},
            param_derivatives={"alpha": zoo.prelu_alpha_derivative},
            param_second_derivatives={"alpha": zoo.prelu_alpha_second_derivative},
            kinks=(0.0,),
        ),
        elementwise("softplus", zoo.softplus, zoo.sigmoid, zoo.sigmoid_derivative),
        elementwise("elu", zoo.elu, zoo.elu_derivative, zoo.elu_second_derivative),
        elementwise("gelu", zoo.gelu, zoo.gelu_derivative, zoo.gelu_second_derivative),
        elementwise(
            "gelu_tanh", zoo.gelu_tanh, zoo.gelu_tanh_derivative, zoo.gelu_tanh_second_derivative
        ),
        elementwise("sin", jnp.sin, jnp.cos, zoo.sin_second_derivative, flip_offset=0.0),
        elementwise("cos", jnp.cos, zoo.cos_derivative, zoo.cos_second_derivative),
        elementwise("identity", zoo.identity, zoo.identity_derivative, zoo.zeros, flip_offset=0.0),
        Activation(
            "softmax",
            zoo.softmax,
            zoo.softmax_diagonal,
            zoo.softmax_jacobian,
            zoo.softmax_second_diagonal,
            elementwise=False,
        ),
    )
}


def names() -> tuple[str, ...]:
    """All activation names, in registry order (S6, S7)."""
    return tuple(_REGISTRY)


def get(f: str | Activation) -> Activation:
    """The :class:`Activation` called ``f``, or ``f`` itself when it is a record (S6, S7).

    Raises:
      TypeError: ``f`` is neither a name nor an :class:`Activation`.
      ValueError: ``f`` is not one of :func:`names` (with the nearest one as a hint).

    >>> get("tanh").derivative(jnp.zeros(2))
    Array([1., 1.], dtype=float32)
    >>> get(get("relu")).name
    'relu'
    """
    if isinstance(f, Activation):
        return f
    if not isinstance(f, str):
        raise TypeError(
            f"activation must be a name from fnn.activations.names() or an "
            f"fnn.activations.Activation; got {type(f).__name__}."
        )
    if f not in _REGISTRY:
        raise unknown_name("activation", f, names())
    return _REGISTRY[f]


def name_of(f: str | Activation) -> str:
    """The name of an activation given by name or by record."""
    return f if isinstance(f, str) else f.name


def canonical(f: str | Activation) -> str | Activation:
    """How a network stores ``f``: a built-in by its name (so ``MLP`` built from the name or
    the record are equal), a user-defined record as itself.

    Raises:
      TypeError: ``f`` is neither a name nor an :class:`Activation`.
      ValueError: an unknown name, or a user record that takes a built-in's name.
    """
    act = get(f)
    if act.name in _REGISTRY and act != _REGISTRY[act.name]:
        raise ValueError(
            f"activation {act.name!r} is a built-in name; give the user-defined record "
            f"another name."
        )
    return act.name if act.name in _REGISTRY else act


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
    check_one_example(a)
    check_one_example(g, "g")
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
