r"""Loss functions with their hand-written Jacobians ``J_L`` and Hessians ``H_L`` (S16, S26).

The contract: a :class:`Loss` is a record of pure functions of ONE example:

* ``fn(y_hat, y)``             the scalar loss ``L(ŷ, y)``;
* ``jacobian(y_hat, y)``       the row vector ``J_L(ŷ) = ∂L/∂ŷ``, shape ``ŷ.shape``;
* ``hessian(y_hat, y)``        ``H_L(ŷ) = ∂²L/∂ŷ²``, shape ``(M, M)`` for ``ŷ`` of shape ``(M,)``
  (S26): L2 ``2I``; L1 ``0``; cross-entropy ``diag(onehot(y) / p_y²)``; softmax
  cross-entropy ``diag(s) − s sᵀ``; BCE ``diag(y/ŷ² + (1 − y)/(1 − ŷ)²)``;
* ``hessian_vp(y_hat, y, v)``  ``H_L(ŷ) · v`` without building ``H_L`` (S27);
* ``hessian_sqrt(y_hat, y)``  a factor ``S`` ``(M, M)`` with ``S Sᵀ = H_L`` (S28), by hand:
  L2 ``√2 I``; L1 ``0``; cross-entropy ``diag(onehot(y) / p_y)``; softmax cross-entropy
  ``diag(√s) − s √sᵀ``; BCE ``diag(√(y/ŷ² + (1 − y)/(1 − ŷ)²))``; sigmoid BCE
  ``diag(√(σ(ŷ) σ(−ŷ)))``. Every ``H_L`` here is positive semi-definite, so ``S`` exists;
  the Gauss–Newton matrix ``Σ_b J_bᵀ H_L J_b = Σ_b (J_bᵀ S_b)(J_bᵀ S_b)ᵀ`` is then ``M``
  backward passes of the columns of ``S`` (:mod:`fnn.gauss_newton`).

``target`` says what ``y`` is: ``"vector"`` (same shape as ``ŷ``) or ``"label"`` (an
integer class index, shape ``()``). ``on_logits`` marks a loss that takes the output
*before* the softmax or sigmoid (the fused, stable ``softmax_cross_entropy`` and
``sigmoid_binary_cross_entropy``); ``on_probabilities`` marks one whose ``ŷ`` must lie in
[0, 1] (``cross_entropy`` after a softmax output, ``binary_cross_entropy`` after a sigmoid
output). ``outputs`` names the output activations a loss suits and ``target_range`` the
interval a vector target must lie in (BCE's [0, 1]): the facts live in the record.
``sample_gradient(y_hat, key)`` (where the loss is the negative log-likelihood of a
distribution whose Fisher matrix is ``H_L``: L2, softmax cross-entropy, sigmoid BCE) is
``J_L`` at a target drawn from the model's own distribution, ``E[g gᵀ] = H_L``: the
Monte-Carlo column of BackPACK's ``DiagGGNMC``. Batches go through ``jax.vmap``; the batch
loss used everywhere in fnn is the mean of the per-example losses.

Bad targets are refused at three levels:

* eagerly, in Python before tracing: :func:`check_target` checks ``y`` against the output's
  shape (and its values where they are concrete), :func:`check_prediction` a concrete ``ŷ``;
  both raise ``ValueError`` (they live with fnn's other input checks, in :mod:`fnn._checks`);
* under ``jax.jit``/``jax.vmap``, where values are unknown to Python, a target out of its
  domain never gives a finite number: a label ``y < 0`` or ``y ≥ M``
  (``cross_entropy``, ``softmax_cross_entropy``), or a BCE target outside [0, 1], makes the
  loss, every entry of ``J_L``, ``H_L`` and ``H_L v``, and ``jax.grad``/``jax.hessian`` of
  ``fn``, NaN for that example;
* opt-in, :func:`checked` wraps a loss so that each function calls
  ``jax.experimental.checkify.check``: under ``checkify.checkify`` (jit included) a bad
  target — or, for a loss on probabilities, a ``ŷ`` outside [0, 1] — raises an error naming
  the loss, the value and its index (the plain loss leaves such a ``ŷ`` to
  :func:`check_prediction`: inside fnn it is a softmax or sigmoid output).

The formulas live in :mod:`fnn.loss_zoo`, each under its own; the records are made here.
No function of either calls ``jax.grad``: the tests prove every ``J_L`` and ``H_L`` against
``jax.grad``/``jax.hessian``, central differences and the closed form. The other way round
holds too: ``jax.grad`` of every ``fn`` equals ``jacobian`` everywhere, L1's kink at ŷ = y
(sign(0) = 0) and BCE's saturated ŷ ∈ {0, 1} included, and ``jax.hessian`` of it equals
``hessian`` wherever the loss is finite. Where it is infinite (``p_y = 0``; BCE's ŷ = 0
against y = 1) ``J_L`` and ``H_L`` are infinite at that entry by hand and by JAX, and
``jax.hessian`` has NaN beside it (∞ · 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from fnn import loss_zoo as zoo
from fnn._checks import (
    PREDICTION_RULE,
    check_output_activation,
    check_prediction,
    check_target,
    target_rule,
    unknown_name,
)

__all__ = [
    "PROBABILITY_OUTPUTS",
    "Loss",
    "check_output_activation",
    "check_prediction",
    "check_target",
    "checked",
    "checkify_target",
    "get",
    "names",
]


class Loss(NamedTuple):
    """A named per-example loss with its hand-written ``J_L`` and ``H_L`` (S16, S26)."""

    name: str
    """The loss's name, as errors and summaries print it (``"l2"``)."""
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    """``fn(y_hat, y)``: the scalar loss ``L(ŷ, y)`` of one example."""
    jacobian: Callable[[jax.Array, jax.Array], jax.Array]
    """``jacobian(y_hat, y)``: the row vector ``J_L(ŷ) = ∂L/∂ŷ``, shape ``ŷ.shape``."""
    hessian: Callable[[jax.Array, jax.Array], jax.Array]
    """``hessian(y_hat, y)``: ``H_L(ŷ) = ∂²L/∂ŷ²``, shape ``(M, M)`` for ``ŷ`` of shape ``(M,)``."""
    hessian_vp: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    """``hessian_vp(y_hat, y, v)``: ``H_L(ŷ) · v`` without building ``H_L`` (S27)."""
    target: str = "vector"
    """What ``y`` is: ``"vector"`` (same shape as ``ŷ``) or ``"label"`` (a class index)."""
    on_logits: bool = False
    """Whether the loss takes the output before the softmax or sigmoid (fused, stable)."""
    on_probabilities: bool = False
    """Whether the loss's ``ŷ`` must lie in [0, 1] (after a softmax or sigmoid output)."""
    kinks: tuple[float, ...] = ()
    """The residuals ``ŷᵢ − yᵢ`` where the loss has a kink (L1's ``|r|`` at 0).

    The gradient check leaves out a central difference that straddles one.
    """
    hessian_sqrt: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    """``hessian_sqrt(y_hat, y)``: a factor ``S`` of shape ``(M, M)`` with ``S Sᵀ = H_L`` (S28)."""
    sample_gradient: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    """``J_L`` at a target drawn from the model's distribution (``E[g gᵀ] = H_L``), or ``None``."""
    outputs: tuple[str, ...] | None = None
    """The output activations the loss suits, or ``None``: any."""
    target_range: tuple[float, float] | None = None
    """The interval a vector target must lie in (BCE's [0, 1]), or ``None``: any."""


# ---------------------------------------------------------------------------------------
# The target's domain under tracing: outside it, NaN (never a finite wrong number).
# ---------------------------------------------------------------------------------------


def _has_domain(loss: Loss) -> bool:
    """Does ``loss`` restrict its target's values? Labels, and a ``target_range``."""
    return loss.target == "label" or loss.target_range is not None


def _target_inside(loss: Loss, n: int, y):
    """Elementwise: is ``y`` in the domain of ``loss`` for ``n`` outputs? A label in
    ``[0, n)``; a target of a loss on probabilities in ``[0, 1]``; NaN is outside both."""
    if loss.target == "label":
        return (y >= 0) & (y < n)
    lo, hi = loss.target_range
    return (y >= lo) & (y <= hi)


def _nan_unless(inside, x):
    """``x`` if the whole example's target is ``inside``, else NaN — in every derivative too:
    a product with NaN poisons each tangent, where ``jnp.where(inside, x, nan)`` would hand
    ``jax.grad`` finite zeros (and indexing with a bad label clamps or wraps silently)."""
    return x * jnp.where(jnp.all(inside), 1, jnp.nan)


def _loss(name, fn, jacobian, hessian, hessian_vp, target="vector", **flags) -> Loss:
    """A :class:`Loss` whose functions give NaN for a target outside its domain: ``fn`` gets a
    poisoned ``ŷ`` (so ``jax.grad`` and ``jax.hessian`` of it are NaN too), the hand-written
    derivatives a poisoned result."""
    loss = Loss(name, fn, jacobian, hessian, hessian_vp, target, **flags)
    if not _has_domain(loss):
        return loss

    def inside(y_hat, y):
        return _target_inside(loss, y_hat.shape[-1], y)

    sqrt = loss.hessian_sqrt
    return loss._replace(
        fn=lambda y_hat, y: fn(_nan_unless(inside(y_hat, y), y_hat), y),
        jacobian=lambda y_hat, y: _nan_unless(inside(y_hat, y), jacobian(y_hat, y)),
        hessian=lambda y_hat, y: _nan_unless(inside(y_hat, y), hessian(y_hat, y)),
        hessian_vp=lambda y_hat, y, v: _nan_unless(inside(y_hat, y), hessian_vp(y_hat, y, v)),
        hessian_sqrt=lambda y_hat, y: _nan_unless(inside(y_hat, y), sqrt(y_hat, y)),
    )


PROBABILITY_OUTPUTS = ("softmax", "sigmoid")
"""The output activations whose values lie in [0, 1], as a loss on probabilities needs."""


_REGISTRY: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        _loss(
            "l2",
            zoo.l2,
            zoo.l2_jacobian,
            zoo.l2_hessian,
            zoo.l2_hessian_vp,
            hessian_sqrt=zoo.l2_hessian_sqrt,
            sample_gradient=zoo.l2_sample_gradient,
        ),
        _loss(
            "l1",
            zoo.l1,
            zoo.l1_jacobian,
            zoo.l1_hessian,
            zoo.l1_hessian_vp,
            kinks=(0.0,),
            hessian_sqrt=zoo.l1_hessian_sqrt,
        ),
        _loss(
            "cross_entropy",
            zoo.cross_entropy,
            zoo.cross_entropy_jacobian,
            zoo.cross_entropy_hessian,
            zoo.cross_entropy_hessian_vp,
            "label",
            on_probabilities=True,
            hessian_sqrt=zoo.cross_entropy_hessian_sqrt,
            outputs=PROBABILITY_OUTPUTS,
        ),
        _loss(
            "softmax_cross_entropy",
            zoo.softmax_cross_entropy,
            zoo.softmax_cross_entropy_jacobian,
            zoo.softmax_cross_entropy_hessian,
            zoo.softmax_cross_entropy_hessian_vp,
            "label",
            on_logits=True,
            hessian_sqrt=zoo.softmax_cross_entropy_hessian_sqrt,
            sample_gradient=zoo.softmax_cross_entropy_sample_gradient,
            outputs=("identity",),
        ),
        _loss(
            "binary_cross_entropy",
            zoo.binary_cross_entropy,
            zoo.binary_cross_entropy_jacobian,
            zoo.binary_cross_entropy_hessian,
            zoo.binary_cross_entropy_hessian_vp,
            "vector",
            on_probabilities=True,
            hessian_sqrt=zoo.binary_cross_entropy_hessian_sqrt,
            outputs=PROBABILITY_OUTPUTS,
            target_range=(0.0, 1.0),
        ),
        _loss(
            "sigmoid_binary_cross_entropy",
            zoo.sigmoid_binary_cross_entropy,
            zoo.sigmoid_binary_cross_entropy_jacobian,
            zoo.sigmoid_binary_cross_entropy_hessian,
            zoo.sigmoid_binary_cross_entropy_hessian_vp,
            "vector",
            on_logits=True,
            hessian_sqrt=zoo.sigmoid_binary_cross_entropy_hessian_sqrt,
            sample_gradient=zoo.sigmoid_binary_cross_entropy_sample_gradient,
            outputs=("identity",),
        ),
    )
}


def names() -> tuple[str, ...]:
    """All loss names, in registry order (S16)."""
    return tuple(_REGISTRY)


def get(name: str | Loss) -> Loss:
    """Return the :class:`Loss` called ``name``; a :class:`Loss` itself comes back unchanged
    (a :func:`checked` one, say) (S16).

    Raises:
      ValueError: ``name`` is not one of :func:`names` (with the nearest one as a hint).

    >>> get("l1").jacobian(jnp.array([1.0, 2.0]), jnp.array([0.0, 2.0]))
    Array([1., 0.], dtype=float32)
    >>> get("l2").hessian(jnp.zeros(2), jnp.ones(2))
    Array([[2., 0.],
           [0., 2.]], dtype=float32)
    """
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise unknown_name("loss", name, names())
    return _REGISTRY[name]


# ---------------------------------------------------------------------------------------
# The checked mode: the same rules, as checkify checks that survive jax.jit and jax.vmap.
# ---------------------------------------------------------------------------------------


def _check_traced(inside, values, message: str) -> None:
    """``checkify.check`` that every entry of ``values`` is ``inside``; the error names the
    first one that is not and its index, as the eager checks do (``got 5 at index (1,)``)."""
    values = jnp.asarray(values)
    if values.ndim == 0:
        checkify.check(inside, message + "; got {value}.", value=values)
        return
    first = jnp.argmin(jnp.ravel(inside))  # the first False
    index = {f"i{k}": i for k, i in enumerate(jnp.unravel_index(first, values.shape))}
    slots = ", ".join("{" + k + "}" for k in index) + ("," if values.ndim == 1 else "")
    checkify.check(
        jnp.all(inside),
        message + "; got {value} at index (" + slots + ").",
        value=jnp.ravel(values)[first],
        **index,
    )


def checkify_target(loss: str | Loss, y_hat, y) -> None:
    """The traced twin of :func:`check_target` and :func:`check_prediction`: the same value
    rules as ``checkify.check`` calls, for one example or a batch (S16, S22).

    A label outside ``[0, M)``, a BCE target outside [0, 1], and for a loss on probabilities a
    ``ŷ`` outside [0, 1] become a checkify error with the eager checks' message, naming the
    loss, the first bad value and its index in ``y`` (or ``ŷ``) — on a batch, the index of the
    example. Call it inside a function that ``checkify.checkify`` wraps (jit included); called
    eagerly it raises at once. Shapes and dtypes stay :func:`check_target`'s job.

    Args:
      loss: a name from :func:`names` or a :class:`Loss`.
      y_hat: the outputs, ``(M,)`` or ``(B, M)``.
      y: the targets for them (labels ``()`` or ``(B,)``, or vectors like ``y_hat``).
    """
    loss = get(loss)
    if not _has_domain(loss):
        return
    n = jnp.shape(y_hat)[-1]
    target = f"y for loss {loss.name!r} must hold {target_rule(loss, n)}"
    _check_traced(_target_inside(loss, n, y), y, target)
    if loss.on_probabilities:
        prediction = f"y_hat for loss {loss.name!r} must be {PREDICTION_RULE}"
        _check_traced((y_hat >= 0) & (y_hat <= 1), y_hat, prediction)


def checked(loss: str | Loss) -> Loss:
    r"""``loss`` whose functions check their target with ``jax.experimental.checkify`` (S16,
    S22): the opt-in checked mode.

    Under ``jax.jit`` and ``jax.vmap`` the values of ``y`` are unknown to Python, so
    :func:`check_target` cannot see a label out of range; the plain loss then gives NaN. The
    checked loss's ``fn``, ``jacobian``, ``hessian`` and ``hessian_vp`` first call
    ``checkify.check``: a label outside ``[0, M)``, a BCE target outside [0, 1], or (for a loss
    on probabilities) a ``ŷ`` outside [0, 1] becomes an error that names the loss, the value
    and its index within the example (:func:`checkify_target`) — raised by ``err.throw()``
    after ``checkify.checkify(jax.jit(f))``, or at once when called eagerly. Under
    ``jax.vmap`` the error reports one failing example (JAX's checkify picks it; a label has
    no index within its example): for the index in the batch, call :func:`checkify_target`
    on the whole batch. Under a plain ``jax.jit``
    without ``checkify.checkify`` a checked loss refuses to trace (JAX's ``ValueError``). A
    loss without a domain (``l2``, ``l1``) comes back unchanged.

    Args:
      loss: a name from :func:`names` or a :class:`Loss`.

    Returns:
      A :class:`Loss` with the same name and flags.

    >>> from jax.experimental import checkify
    >>> ce = checked("cross_entropy")
    >>> f = checkify.checkify(jax.jit(jax.vmap(ce.fn)))
    >>> err, _ = f(jnp.full((2, 3), 1 / 3), jnp.array([0, 7]))
    >>> print(err.get().split(" (")[0])
    y for loss 'cross_entropy' must hold labels in [0, 3) for 3 outputs; got 7.
    """
    loss = get(loss)
    if not _has_domain(loss):
        return loss

    def check(y_hat, y):
        checkify_target(loss, y_hat, y)

    def fn(y_hat, y):
        check(y_hat, y)
        return loss.fn(y_hat, y)

    def jacobian(y_hat, y):
        check(y_hat, y)
        return loss.jacobian(y_hat, y)

    def hessian(y_hat, y):
        check(y_hat, y)
        return loss.hessian(y_hat, y)

    def hessian_vp(y_hat, y, v):
        check(y_hat, y)
        return loss.hessian_vp(y_hat, y, v)

    def hessian_sqrt(y_hat, y):
        check(y_hat, y)
        return loss.hessian_sqrt(y_hat, y)

    return loss._replace(
        fn=fn, jacobian=jacobian, hessian=hessian, hessian_vp=hessian_vp, hessian_sqrt=hessian_sqrt
    )
