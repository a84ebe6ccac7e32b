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
  both raise ``ValueError``;
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

No function here calls ``jax.grad``: the tests prove every ``J_L`` and ``H_L`` against
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
import numpy as np
from jax.experimental import checkify

from fnn import activations
from fnn._checks import unknown_name

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
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    jacobian: Callable[[jax.Array, jax.Array], jax.Array]
    hessian: Callable[[jax.Array, jax.Array], jax.Array]
    hessian_vp: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    target: str = "vector"
    on_logits: bool = False
    on_probabilities: bool = False
    # Residuals ŷᵢ − yᵢ where the loss has a kink (L1's |r| at 0): the gradient check leaves
    # out a central difference that straddles one.
    kinks: tuple[float, ...] = ()
    # S with S Sᵀ = H_L, (M, M) for ŷ of shape (M,).
    hessian_sqrt: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    # J_L at a target drawn from the model's distribution (E[g gᵀ] = H_L), or None.
    sample_gradient: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    # The output activations the loss suits (None: any), and the interval of vector targets.
    outputs: tuple[str, ...] | None = None
    target_range: tuple[float, float] | None = None


def _float(x):
    """The float dtype of ``x`` (integer inputs give the default float)."""
    return jnp.result_type(x, float)


# L2(ŷ, y) = Σᵢ (ŷᵢ − yᵢ)²,   J_L = [2(ŷᵢ − yᵢ)],   H_L = 2I.
def _l2(y_hat, y):
    return jnp.sum((y_hat - y) ** 2)


def _l2_jacobian(y_hat, y):
    return 2 * (y_hat - y)


def _l2_hessian(y_hat, y):
    del y
    return 2 * jnp.eye(y_hat.shape[-1], dtype=_float(y_hat))


def _l2_hessian_vp(y_hat, y, v):
    del y_hat, y
    return 2 * v


def _l2_hessian_sqrt(y_hat, y):
    return jnp.sqrt(2.0).astype(_float(y_hat)) * jnp.eye(y_hat.shape[-1], dtype=_float(y_hat))


# L2 is −log N(y; ŷ, ½I) up to a constant: a target ỹ = ŷ + ε, ε ~ N(0, ½I), has the
# gradient 2(ŷ − ỹ) = −2ε, and E[4 ε εᵀ] = 2I = H_L.
def _l2_sample_gradient(y_hat, key):
    return -jnp.sqrt(2.0).astype(_float(y_hat)) * jax.random.normal(key, y_hat.shape, y_hat.dtype)


# L1(ŷ, y) = Σᵢ |ŷᵢ − yᵢ|,   J_L = [sign(ŷᵢ − yᵢ)] with sign(0) = 0, as the lecture defines
# it (jnp.sign does),   H_L = 0 (at the kink too). |d| is written sign(d) · d: its JAX
# derivative sign(d) + d · 0 is that sign, where jnp.abs's would be 1 at d = 0.
def _l1(y_hat, y):
    d = y_hat - y
    return jnp.sum(jnp.sign(d) * d)


def _l1_jacobian(y_hat, y):
    return jnp.sign(y_hat - y)


def _l1_hessian(y_hat, y):
    del y
    return jnp.zeros((y_hat.shape[-1],) * 2, _float(y_hat))


def _l1_hessian_vp(y_hat, y, v):
    del y_hat, y
    return jnp.zeros_like(v)


def _l1_hessian_sqrt(y_hat, y):
    return _l1_hessian(y_hat, y)


def _one_hot(y, n):
    """``[0, …, 1, …, 0]`` of length ``n`` with the 1 at the label ``y`` (a bool mask)."""
    return jnp.arange(n) == y


# Cross-entropy on probabilities p = ŷ (the output of a softmax), integer label y:
# L_ce(p, y) = −log p(ŷ = y | x) = −log p_y,   J_L = [0, …, −1/p_y, …, 0],
# H_L = diag(onehot(y) / p_y²) (the one entry 1/p_y² at (y, y)).
def _cross_entropy(y_hat, y):
    return -jnp.log(y_hat[y])


def _cross_entropy_jacobian(y_hat, y):
    return jnp.where(_one_hot(y, y_hat.shape[-1]), -1 / y_hat[y], 0)


def _cross_entropy_hessian_vp(y_hat, y, v):
    return jnp.where(_one_hot(y, y_hat.shape[-1]), v / y_hat[y] ** 2, 0)


def _cross_entropy_hessian(y_hat, y):
    return jnp.diag(_cross_entropy_hessian_vp(y_hat, y, jnp.ones_like(y_hat)))


def _cross_entropy_hessian_sqrt(y_hat, y):  # diag(onehot(y) / p_y): (1/p_y)² = H_L's entry
    return jnp.diag(jnp.where(_one_hot(y, y_hat.shape[-1]), 1 / y_hat[y], 0))


# Softmax cross-entropy on logits ŷ, fused: L = −log softmax(ŷ)_y = logsumexp(ŷ) − ŷ_y,
# with logsumexp(ŷ) = m + log Σⱼ e^{ŷⱼ − m}, m = max ŷ (the shift of S7: no overflow; m
# carries no derivative, hence stop_gradient: jax.grad gives exactly s − onehot).
# J_L = softmax(ŷ) − onehot(y)  (= J_ce(softmax(ŷ)) · J_softmax(ŷ), tested);
# H_L = J_softmax(ŷ) = diag(s) − s sᵀ, whatever the label.
def _logsumexp(a):
    m = jax.lax.stop_gradient(jnp.max(a, axis=-1))
    return m + jnp.log(jnp.sum(jnp.exp(a - m[..., None]), axis=-1))


def _softmax_cross_entropy(y_hat, y):
    return _logsumexp(y_hat) - y_hat[y]


def _softmax_cross_entropy_jacobian(y_hat, y):
    s = activations.get("softmax").fn(y_hat)
    return s - _one_hot(y, y_hat.shape[-1]).astype(s.dtype)


def _softmax_cross_entropy_hessian(y_hat, y):
    del y
    return activations.get("softmax").jacobian(y_hat)


def _softmax_cross_entropy_hessian_vp(y_hat, y, v):
    del y
    return activations.jvp(activations.get("softmax"), y_hat, v)


# S = diag(√s) − s √sᵀ: S Sᵀ = diag(s) − 2 s sᵀ + s (Σⱼ sⱼ) sᵀ = diag(s) − s sᵀ, as Σⱼ sⱼ = 1.
def _softmax_cross_entropy_hessian_sqrt(y_hat, y):
    del y
    s = activations.get("softmax").fn(y_hat)
    r = jnp.sqrt(s)
    return jnp.diag(r) - s[:, None] * r[None, :]


# −log softmax(ŷ)_y is the negative log-likelihood of a categorical distribution: a label ỹ
# drawn from softmax(ŷ) has the gradient s − onehot(ỹ), E[(s − e_ỹ)(s − e_ỹ)ᵀ] = diag(s) − s sᵀ.
def _softmax_cross_entropy_sample_gradient(y_hat, key):
    label = jax.random.categorical(key, y_hat)
    return _softmax_cross_entropy_jacobian(y_hat, label)


# Binary cross-entropy on probabilities ŷ ∈ [0, 1] (after a sigmoid), targets y ∈ [0, 1]:
# L = −Σᵢ [yᵢ log ŷᵢ + (1 − yᵢ) log(1 − ŷᵢ)],
# J_L = [−yᵢ/ŷᵢ + (1 − yᵢ)/(1 − ŷᵢ)] = [(ŷᵢ − yᵢ) / (ŷᵢ (1 − ŷᵢ))] for 0 < ŷᵢ < 1,
# H_L = diag(yᵢ/ŷᵢ² + (1 − yᵢ)/(1 − ŷᵢ)²).
# The first forms, with 0 · log 0 = 0 and 0 / 0 = 0, stay finite where a float32 sigmoid
# saturates to ŷ = 1 with y = 1 (J = −1, H = 1), where the second form gives 0 / 0. The loss
# is written with x log y that is 0 for x = 0 in value AND derivative (the inner where keeps
# log away from 0): jax.grad of it is J_L there too (jax.scipy's xlogy gives NaN).
def _xlogy(x, y):
    """``x log y`` with ``0 log y = 0``, and derivative ``0`` there."""
    zero = x == 0
    return jnp.where(zero, 0, x * jnp.log(jnp.where(zero, 1, y)))


def _xlog1py(x, y):
    """``x log(1 + y)`` with ``0 log(1 + y) = 0``, and derivative ``0`` there."""
    zero = x == 0
    return jnp.where(zero, 0, x * jnp.log1p(jnp.where(zero, 0, y)))


def _xdivy(x, d):
    """``x / d`` with ``0 / d = 0`` for every ``d`` (0 / 0 included)."""
    zero = x == 0
    return jnp.where(zero, 0, x / jnp.where(zero, 1, d))


def _binary_cross_entropy(y_hat, y):
    return -jnp.sum(_xlogy(y, y_hat) + _xlog1py(1 - y, -y_hat))


def _binary_cross_entropy_jacobian(y_hat, y):
    return -_xdivy(y, y_hat) + _xdivy(1 - y, 1 - y_hat)


def _binary_cross_entropy_hessian_vp(y_hat, y, v):
    return (_xdivy(y, y_hat**2) + _xdivy(1 - y, (1 - y_hat) ** 2)) * v


def _binary_cross_entropy_hessian(y_hat, y):
    return jnp.diag(_binary_cross_entropy_hessian_vp(y_hat, y, jnp.ones_like(y_hat)))


def _binary_cross_entropy_hessian_sqrt(y_hat, y):
    return jnp.diag(jnp.sqrt(_binary_cross_entropy_hessian_vp(y_hat, y, jnp.ones_like(y_hat))))


# Binary cross-entropy on logits ŷ (the sigmoid fused into the loss), targets y:
# L = −Σᵢ [yᵢ log σ(ŷᵢ) + (1 − yᵢ) log σ(−ŷᵢ)] = Σᵢ softplus(ŷᵢ) − yᵢ ŷᵢ,
# with softplus(a) = log(1 + eᵃ) = logaddexp(0, a): finite for every a (ŷ = 1e4, y = 0 gives
# 1e4, where log(1 − σ(1e4)) = log 0 = −∞). J_L = σ(ŷ) − y;  H_L = diag(σ(ŷ) σ(−ŷ)), which is
# σ(1 − σ) without the cancellation 1 − σ at large ŷ. Linear in y, so defined for every
# real target (meaningful for y in [0, 1]), as in optax and PyTorch's BCEWithLogitsLoss.
def _sigmoid_binary_cross_entropy(y_hat, y):
    return jnp.sum(jnp.logaddexp(0, y_hat) - y * y_hat)


def _sigmoid(a):
    return activations.get("sigmoid").fn(a)


def _sigmoid_binary_cross_entropy_jacobian(y_hat, y):
    return _sigmoid(y_hat) - y


def _sigmoid_curvature(y_hat):
    return _sigmoid(y_hat) * _sigmoid(-y_hat)


def _sigmoid_binary_cross_entropy_hessian_vp(y_hat, y, v):
    del y
    return _sigmoid_curvature(y_hat) * v


def _sigmoid_binary_cross_entropy_hessian(y_hat, y):
    del y
    return jnp.diag(_sigmoid_curvature(y_hat))


def _sigmoid_binary_cross_entropy_hessian_sqrt(y_hat, y):
    del y
    return jnp.diag(jnp.sqrt(_sigmoid_curvature(y_hat)))


# Bernoulli targets ỹ ~ σ(ŷ): the gradient σ − ỹ has E[(σ − ỹ)²] = σ (1 − σ) = H_L's entry.
def _sigmoid_binary_cross_entropy_sample_gradient(y_hat, key):
    draw = jax.random.bernoulli(key, _sigmoid(y_hat)).astype(y_hat.dtype)
    return _sigmoid(y_hat) - draw


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


# Output activations whose values lie in [0, 1], as a loss on probabilities needs.
PROBABILITY_OUTPUTS = ("softmax", "sigmoid")


_REGISTRY: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        _loss(
            "l2",
            _l2,
            _l2_jacobian,
            _l2_hessian,
            _l2_hessian_vp,
            hessian_sqrt=_l2_hessian_sqrt,
            sample_gradient=_l2_sample_gradient,
        ),
        _loss(
            "l1",
            _l1,
            _l1_jacobian,
            _l1_hessian,
            _l1_hessian_vp,
            kinks=(0.0,),
            hessian_sqrt=_l1_hessian_sqrt,
        ),
        _loss(
            "cross_entropy",
            _cross_entropy,
            _cross_entropy_jacobian,
            _cross_entropy_hessian,
            _cross_entropy_hessian_vp,
            "label",
            on_probabilities=True,
            hessian_sqrt=_cross_entropy_hessian_sqrt,
            outputs=PROBABILITY_OUTPUTS,
        ),
        _loss(
            "softmax_cross_entropy",
            _softmax_cross_entropy,
            _softmax_cross_entropy_jacobian,
            _softmax_cross_entropy_hessian,
            _softmax_cross_entropy_hessian_vp,
            "label",
            on_logits=True,
            hessian_sqrt=_softmax_cross_entropy_hessian_sqrt,
            sample_gradient=_softmax_cross_entropy_sample_gradient,
            outputs=("identity",),
        ),
        _loss(
            "binary_cross_entropy",
            _binary_cross_entropy,
            _binary_cross_entropy_jacobian,
            _binary_cross_entropy_hessian,
            _binary_cross_entropy_hessian_vp,
            "vector",
            on_probabilities=True,
            hessian_sqrt=_binary_cross_entropy_hessian_sqrt,
            outputs=PROBABILITY_OUTPUTS,
            target_range=(0.0, 1.0),
        ),
        _loss(
            "sigmoid_binary_cross_entropy",
            _sigmoid_binary_cross_entropy,
            _sigmoid_binary_cross_entropy_jacobian,
            _sigmoid_binary_cross_entropy_hessian,
            _sigmoid_binary_cross_entropy_hessian_vp,
            "vector",
            on_logits=True,
            hessian_sqrt=_sigmoid_binary_cross_entropy_hessian_sqrt,
            sample_gradient=_sigmoid_binary_cross_entropy_sample_gradient,
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


def _target_rule(loss: Loss, n: int | None) -> str:
    """What the targets of ``loss`` must hold for ``n`` outputs, as every message says it."""
    if loss.target == "label":
        return f"labels in [0, {n}) for {n} outputs"
    lo, hi = loss.target_range
    return f"targets in [{lo:g}, {hi:g}] (0/1 labels or probabilities)"


_PREDICTION_RULE = "probabilities in [0, 1] (the output of a softmax or sigmoid)"


def check_output_activation(loss: Loss, f_out: str) -> None:
    """Raise ``ValueError`` unless the network's output activation ``f_out`` is one of
    ``loss.outputs`` (S7, S16): a loss on logits (``softmax_cross_entropy``,
    ``sigmoid_binary_cross_entropy``) needs ``"identity"`` (the softmax or sigmoid is part of
    the loss), a loss on probabilities one of :data:`PROBABILITY_OUTPUTS`."""
    if loss.outputs is None or f_out in loss.outputs:
        return
    if loss.on_logits:
        raise ValueError(
            f"loss {loss.name!r} is applied to logits, so the output activation must be "
            f"'identity'; got {f_out!r} (the softmax or sigmoid is part of the loss)."
        )
    what = "takes probabilities" if loss.on_probabilities else "suits"
    raise ValueError(
        f"loss {loss.name!r} {what}, so the output activation must be one of "
        f"{loss.outputs}; got {f_out!r}."
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
        if loss.target_range is not None and values is not None:
            bad = _first_outside(values, *loss.target_range)
            if bad is not None:
                raise ValueError(
                    f"y for loss {loss.name!r} must hold {_target_rule(loss, None)}; got {bad}."
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
        raise ValueError(f"y for loss {loss.name!r} must hold {_target_rule(loss, n)}; got {bad}.")


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
        raise ValueError(f"y_hat for loss {loss.name!r} must be {_PREDICTION_RULE}; got {bad}.")


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
    target = f"y for loss {loss.name!r} must hold {_target_rule(loss, n)}"
    _check_traced(_target_inside(loss, n, y), y, target)
    if loss.on_probabilities:
        prediction = f"y_hat for loss {loss.name!r} must be {_PREDICTION_RULE}"
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
