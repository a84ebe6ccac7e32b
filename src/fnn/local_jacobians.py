r"""The explicit Jacobian matrices of every building block, and the chain rule (S15, S16).

For ``f : Rⁿ → Rᵐ`` the Jacobian is the ``(m, n)`` matrix of partial derivatives

.. math::  (J_f(x))_{ij} = ∂f_i / ∂x_j ,

and the chain rule in several dimensions is a matrix product (S15):

.. math::  J_{g∘f}(x) = J_g(f(x)) \, J_f(x).

One function per Jacobian of the lecture, for ONE example (vectors, no batch axis):

* ``affine_x(W)``        ``J_a(x) = W``, ``(M, D)``;
* ``affine_b(b)``        ``J_a(b) = I_M``, ``(M, M)``;
* ``affine_W(W, x)``     ``J_a(W) = I_M ⊗ x``, i.e. ``∂aᵢ/∂w_kl = δᵢₖ x_l``, ``(M, M, D)``;
* ``activation(f, a)``   ``J_f(a) = diag(f′(a))``, or ``diag(s) − s sᵀ`` for softmax, ``(M, M)``;
* ``activation_param``   ``J_z(p) = ∂f(a)/∂p`` for a learnable scalar ``p``, ``(M,)``;
* ``loss(L, ŷ, y)``      the row ``J_L(ŷ)``, e.g. ``[2(ŷᵢ − yᵢ)]`` for L2, ``(M,)``;

These are what the lecture's backpropagation multiplies (S17) and what
``backprop.explicit`` uses literally. They are built from the hand-written derivatives of
:mod:`fnn.activations` and :mod:`fnn.losses`; nothing here calls ``jax.jacfwd``: the tests
prove each one equal to ``jax.jacfwd``/``jax.jacrev`` of the function it differentiates.
Shapes are checked in Python (also while tracing): a batch where one example belongs, or
factors that do not chain, raise ``ValueError`` instead of a silently wrong matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnn import activations, losses

__all__ = [
    "activation",
    "activation_param",
    "affine_W",
    "affine_b",
    "affine_x",
    "chain",
    "loss",
    "row_times",
]


def _check_shape(name: str, value, expected: tuple) -> None:
    """Raise ``ValueError`` unless ``value`` has the ``expected`` shape; an int entry must
    match, a str entry (a named size such as ``"M"``) matches any size."""
    got = tuple(np.shape(value))
    if len(got) != len(expected) or any(
        isinstance(e, int) and e != g for e, g in zip(expected, got)
    ):
        want = "(" + ", ".join(map(str, expected)) + (",)" if len(expected) == 1 else ")")
        raise ValueError(f"{name} must have shape {want}; got {got}.")


def chain(J_g: jax.Array, J_f: jax.Array) -> jax.Array:
    """The multi-dimensional chain rule (S15): ``J_{g∘f}(x) = J_g(f(x)) · J_f(x)``.

    Args:
      J_g: ``(k, m)``, the Jacobian of the outer function at ``f(x)``.
      J_f: ``(m, n)``, the Jacobian of the inner function at ``x``.

    Returns:
      ``(k, n)``, the Jacobian of the composition.

    Raises:
      ValueError: the two are not matrices whose inner sizes ``m`` agree.
    """
    _check_shape("J_g", J_g, ("k", "m"))
    _check_shape("J_f", J_f, (np.shape(J_g)[1], "n"))
    return J_g @ J_f


def affine_x(W: jax.Array) -> jax.Array:
    """``J_a(x) = W`` for ``a = W x + b`` (S16): ``∂aᵢ/∂xⱼ = wᵢⱼ``; shape ``(M, D)``."""
    _check_shape("W", W, ("M", "D"))
    return W


def affine_b(b: jax.Array) -> jax.Array:
    """``J_a(b) = I_M`` for ``a = W x + b`` (S16): ``∂aᵢ/∂bₖ = δᵢₖ``; shape ``(M, M)``."""
    _check_shape("b", b, ("M",))
    return jnp.eye(b.shape[0], dtype=b.dtype)


def affine_W(W: jax.Array, x: jax.Array) -> jax.Array:
    r"""``J_a(W) = I_M ⊗ x`` for ``a = W x + b``, a third-order tensor (S16).

    .. math::  ∂a_i / ∂w_{kl} = δ_{ik} \, x_l ,

    of shape ``(M, M, D)`` (index order ``i, k, l``). Built literally, so it costs
    ``M² D`` numbers; backpropagation never needs it, because a row vector ``δ`` times it
    is the outer product ``δ ⊗ x`` (see :func:`row_times`).

    Raises:
      ValueError: ``W`` is not a matrix, or ``x`` is not one input ``(D,)`` of its width.

    >>> affine_W(jnp.zeros((2, 3)), jnp.array([1.0, 2.0, 3.0]))[1, 1]
    Array([1., 2., 3.], dtype=float32)
    """
    _check_shape("W", W, ("M", "D"))
    _check_shape("x", x, (W.shape[1],))
    return jnp.eye(W.shape[0], dtype=x.dtype)[:, :, None] * x[None, None, :]


def activation(f: str, a: jax.Array, **p) -> jax.Array:
    """``J_f(a)`` of the activation named ``f`` at the pre-activation ``a`` (S16), ``(M, M)``.

    Elementwise ``f``: ``diag(f′(a₁), …, f′(a_M))``; softmax: ``diag(s) − s sᵀ`` with
    ``s = softmax(a)``. ``p`` are the activation's learnable parameters (PReLU's ``alpha``).

    >>> activation("identity", jnp.zeros(2))
    Array([[1., 0.],
           [0., 1.]], dtype=float32)
    """
    return activations.get(f).jacobian(a, **p)


def activation_param(f: str, name: str, a: jax.Array, **p) -> jax.Array:
    """``J_z(p) = ∂f(a)/∂p`` for the learnable scalar parameter ``p[name]`` of ``f`` (S16),
    ``(M,)``.

    A column of length M (one entry per unit: ``z = f(a)`` depends on the shared ``p`` in
    every unit); for PReLU, ``∂f/∂α = min(a, 0)``.

    Raises:
      ValueError: ``f`` has no learnable parameter called ``name``, or ``a`` is not one
        example ``(M,)``.
    """
    _check_shape("a", a, ("M",))
    act = activations.get(f)
    if name not in act.param_derivatives:
        raise ValueError(
            f"name must be a learnable parameter of activation {f!r}, one of "
            f"{tuple(act.param_derivatives)}; got {name!r}."
        )
    return act.param_derivatives[name](a, **p)


def loss(L: str, y_hat: jax.Array, y: jax.Array) -> jax.Array:
    """The row vector ``J_L(ŷ) = ∂L/∂ŷ`` of the loss named ``L`` (S16), shape ``ŷ.shape``.

    E.g. L2: ``[2(ŷᵢ − yᵢ)]``; L1: ``[sign(ŷᵢ − yᵢ)]``; cross-entropy on probabilities:
    ``[0, …, −1/p(ŷ = y|x), …, 0]``.

    Raises:
      ValueError: an unknown ``L``, a ``y_hat`` that is not one example ``(M,)``, or a ``y``
        that is not a valid target for it (:func:`fnn.losses.check_target`).

    >>> loss("l2", jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
    Array([2., 4.], dtype=float32)
    """
    loss_fn = losses.get(L)
    _check_shape("y_hat", y_hat, ("M",))
    losses.check_target(loss_fn, np.shape(y_hat), y)
    return loss_fn.jacobian(y_hat, y)


def row_times(delta: jax.Array, J: jax.Array) -> jax.Array:
    """A row vector times a Jacobian: ``(δ · J)_{…} = Σᵢ δᵢ J_{i…}`` (S17).

    For a matrix ``J`` this is ``δ @ J``; for the tensor ``J_a(W) = I_M ⊗ x`` of
    :func:`affine_W` it gives ``Σᵢ δᵢ δᵢₖ x_l = δₖ x_l``, the outer product ``δ ⊗ x``: the
    ``(M, D)`` gradient ``∂L/∂W`` that the lecture writes without the identity.

    Raises:
      ValueError: ``delta`` is not a row ``(M,)`` matching the first axis of ``J``.
    """
    _check_shape("delta", delta, (np.shape(J)[0] if np.ndim(J) else "M",))
    return jnp.tensordot(delta, J, axes=1)
