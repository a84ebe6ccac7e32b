r"""Loss functions with their hand-written Jacobians ``J_L`` (S16).

The contract: a :class:`Loss` is a record of pure functions of ONE example:

* ``fn(y_hat, y)``        the scalar loss ``L(ŷ, y)``;
* ``jacobian(y_hat, y)``  the row vector ``J_L(ŷ) = ∂L/∂ŷ``, shape ``ŷ.shape``.

``target`` says what ``y`` is: ``"vector"`` (same shape as ``ŷ``) or ``"label"`` (an
integer class index, shape ``()``). ``on_logits`` marks a loss that takes the output
*before* the softmax (the fused, stable ``softmax_cross_entropy``); ``on_probabilities``
marks one whose ``ŷ`` must lie in [0, 1] (``cross_entropy`` after a softmax output,
``binary_cross_entropy`` after a sigmoid output). Batches go through ``jax.vmap``; the batch
loss used everywhere in fnn is the mean of the per-example losses.

The functions themselves never check their input (they are traced under ``jax.jit``):
:func:`check_target` checks ``y`` against the output's shape, and :func:`check_prediction`
checks a concrete ``ŷ``, in Python, before tracing. No function here calls ``jax.grad``:
the tests prove every ``J_L`` against ``jax.grad``, central differences and the lecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlog1py, xlogy

from fnn import activations

__all__ = [
    "PROBABILITY_OUTPUTS",
    "Loss",
    "check_output_activation",
    "check_prediction",
    "check_target",
    "get",
    "names",
]


class Loss(NamedTuple):
    """A named per-example loss with its hand-written Jacobian row ``J_L`` (S16)."""

    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    jacobian: Callable[[jax.Array, jax.Array], jax.Array]
    target: str = "vector"
    on_logits: bool = False
    on_probabilities: bool = False


# L2(ŷ, y) = Σᵢ (ŷᵢ − yᵢ)²,   J_L = [2(ŷᵢ − yᵢ)].
def _l2(y_hat, y):
    return jnp.sum((y_hat - y) ** 2)


def _l2_jacobian(y_hat, y):
    return 2 * (y_hat - y)


# L1(ŷ, y) = Σᵢ |ŷᵢ − yᵢ|,   J_L = [sign(ŷᵢ − yᵢ)] with sign(0) = 0, as the lecture defines
# it (jnp.sign does).
def _l1(y_hat, y):
    return jnp.sum(jnp.abs(y_hat - y))


def _l1_jacobian(y_hat, y):
    return jnp.sign(y_hat - y)


def _one_hot(y, n):
    """``[0, …, 1, …, 0]`` of length ``n`` with the 1 at the label ``y`` (a bool mask)."""
    return jnp.arange(n) == y


# Cross-entropy on probabilities p = ŷ (the output of a softmax), integer label y:
# L_ce(p, y) = −log p(ŷ = y | x) = −log p_y,   J_L = [0, …, −1/p_y, …, 0].
def _cross_entropy(y_hat, y):
    return -jnp.log(y_hat[y])


def _cross_entropy_jacobian(y_hat, y):
    return jnp.where(_one_hot(y, y_hat.shape[-1]), -1 / y_hat[y], 0)


# Softmax cross-entropy on logits ŷ, fused: L = −log softmax(ŷ)_y = logsumexp(ŷ) − ŷ_y,
# with logsumexp(ŷ) = m + log Σⱼ e^{ŷⱼ − m}, m = max ŷ (the shift of S7: no overflow).
# J_L = softmax(ŷ) − onehot(y)  (= J_ce(softmax(ŷ)) · J_softmax(ŷ), tested).
def _logsumexp(a):
    m = jnp.max(a, axis=-1)
    return m + jnp.log(jnp.sum(jnp.exp(a - m[..., None]), axis=-1))


def _softmax_cross_entropy(y_hat, y):
    return _logsumexp(y_hat) - y_hat[y]


def _softmax_cross_entropy_jacobian(y_hat, y):
    s = activations.get("softmax").fn(y_hat)
    return s - _one_hot(y, y_hat.shape[-1]).astype(s.dtype)


# Binary cross-entropy on probabilities ŷ ∈ [0, 1] (after a sigmoid), targets y ∈ [0, 1]:
# L = −Σᵢ [yᵢ log ŷᵢ + (1 − yᵢ) log(1 − ŷᵢ)],
# J_L = [−yᵢ/ŷᵢ + (1 − yᵢ)/(1 − ŷᵢ)] = [(ŷᵢ − yᵢ) / (ŷᵢ (1 − ŷᵢ))] for 0 < ŷᵢ < 1.
# The first form, with 0 · log 0 = 0 and 0 / 0 = 0, stays finite where a float32 sigmoid
# saturates to ŷ = 1 with y = 1 (J = −1), where the second form gives 0 / 0.
def _binary_cross_entropy(y_hat, y):
    return -jnp.sum(xlogy(y, y_hat) + xlog1py(1 - y, -y_hat))


def _xdivy(x, d):
    """``x / d`` with ``0 / d = 0`` for every ``d`` (0 / 0 included)."""
    zero = x == 0
    return jnp.where(zero, 0, x / jnp.where(zero, 1, d))


def _binary_cross_entropy_jacobian(y_hat, y):
    return -_xdivy(y, y_hat) + _xdivy(1 - y, 1 - y_hat)


_REGISTRY: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("l2", _l2, _l2_jacobian),
        Loss("l1", _l1, _l1_jacobian),
        Loss(
            "cross_entropy", _cross_entropy, _cross_entropy_jacobian, "label", on_probabilities=True
        ),
        Loss(
            "softmax_cross_entropy",
            _softmax_cross_entropy,
            _softmax_cross_entropy_jacobian,
            "label",
            on_logits=True,
        ),
        Loss(
            "binary_cross_entropy",
            _binary_cross_entropy,
            _binary_cross_entropy_jacobian,
            "vector",
            on_probabilities=True,
        ),
    )
}


def names() -> tuple[str, ...]:
    """All loss names, in registry order (S16)."""
    return tuple(_REGISTRY)


def get(name: str) -> Loss:
    """Return the :class:`Loss` called ``name`` (S16).

    Raises:
      ValueError: ``name`` is not one of :func:`names`.

    >>> get("l1").jacobian(jnp.array([1.0, 2.0]), jnp.array([0.0, 2.0]))
    Array([1., 0.], dtype=float32)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown loss {name!r}; expected one of {names()}.")
    return _REGISTRY[name]


def _concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` while it is traced (its values are unknown)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _first_outside(values: np.ndarray, lo: float, hi: float, hi_open: bool = False):
    """The first entry of ``values`` outside [lo, hi] (or [lo, hi)), as text, or None."""
    inside = (values >= lo) & ((values < hi) if hi_open else (values <= hi))
    if np.all(inside):
        return None
    if values.ndim == 0:
        return f"{values}"
    index = tuple(int(i) for i in np.argwhere(~inside)[0])
    return f"{values[index]} at index {index}"


# Output activations whose values lie in [0, 1], as a loss on probabilities needs.
PROBABILITY_OUTPUTS = ("softmax", "sigmoid")


def check_output_activation(loss: Loss, f_out: str) -> None:
    """Raise ``ValueError`` unless the network's output activation ``f_out`` suits ``loss``
    (S7, S16): a loss on logits (``softmax_cross_entropy``) needs ``"identity"`` (the softmax
    is part of the loss), a loss on probabilities one of :data:`PROBABILITY_OUTPUTS`."""
    if loss.on_logits and f_out != "identity":
        raise ValueError(
            f"loss {loss.name!r} is applied to logits, so the output activation must be "
            f"'identity'; got {f_out!r} (the softmax is part of the loss)."
        )
    if loss.on_probabilities and f_out not in PROBABILITY_OUTPUTS:
        raise ValueError(
            f"loss {loss.name!r} takes probabilities, so the output activation must be one of "
            f"{PROBABILITY_OUTPUTS}; got {f_out!r}."
        )


def check_target(loss: Loss, y_hat_shape: tuple[int, ...], y) -> None:
    """Raise ``ValueError`` unless ``y`` is a valid target for outputs of ``y_hat_shape``
    (S16).

    ``y_hat_shape`` is ``(n,)`` for one example or ``(B, n)`` for a batch. Always checked
    (static): the shape of ``y``, and for ``target="label"`` an integer dtype. Checked where
    ``y`` is concrete (never on tracers): labels in ``[0, n)``; for a loss on probabilities
    with vector targets (``binary_cross_entropy``) ``y`` in ``[0, 1]`` (0/1 labels, or soft
    targets). The predictions ``ŷ`` are checked by :func:`check_prediction`.

    Raises:
      ValueError: naming ``y``, the expected and the actual shape, dtype or value.
    """
    shape = tuple(np.shape(y))
    if loss.target == "vector":
        if shape != tuple(y_hat_shape):
            raise ValueError(
                f"y for loss {loss.name!r} must have the output's shape {tuple(y_hat_shape)}; "
                f"got {shape}."
            )
        values = _concrete(y)
        if loss.on_probabilities and values is not None:
            bad = _first_outside(values, 0, 1)
            if bad is not None:
                raise ValueError(
                    f"y for loss {loss.name!r} must hold targets in [0, 1] (0/1 labels or "
                    f"probabilities); got {bad}."
                )
        return
    expected = tuple(y_hat_shape[:-1])
    if shape != expected:
        raise ValueError(
            f"y for loss {loss.name!r} must be integer labels of shape {expected}; got {shape}."
        )
    dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"y for loss {loss.name!r} must be integer class labels; got dtype {dtype}."
        )
    values = _concrete(y)
    n = y_hat_shape[-1]
    bad = None if values is None else _first_outside(values, 0, n, hi_open=True)
    if bad is not None:
        raise ValueError(
            f"y for loss {loss.name!r} must hold labels in [0, {n}) for {n} outputs; got {bad}."
        )


def check_prediction(loss: Loss, y_hat) -> None:
    """Raise ``ValueError`` if a loss on probabilities gets a concrete ``ŷ`` outside [0, 1]
    (S16).

    ``cross_entropy`` and ``binary_cross_entropy`` take probabilities (the output of a
    softmax, or of a sigmoid); any other ŷ, or one that is traced, passes unchecked. This
    lives apart from :func:`check_target`, which sees only the shape of ``ŷ``: call it where
    ``ŷ`` comes from the user rather than from the network's own output activation.

    Raises:
      ValueError: naming ``y_hat``, the expected range and the first value outside it.
    """
    values = _concrete(y_hat) if loss.on_probabilities else None
    bad = None if values is None else _first_outside(values, 0, 1)
    if bad is not None:
        raise ValueError(
            f"y_hat for loss {loss.name!r} must be probabilities in [0, 1] (the output of a "
            f"softmax or sigmoid); got {bad}."
        )
