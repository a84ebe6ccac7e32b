r"""Training with curvature: K-FAC and Hessian-free steps as optax transformations (S21, S27,
S28).

Gradient descent steps along ``−∇L``. A second-order step solves a local quadratic model of
the loss instead,

.. math::  L(θ + d) ≈ L(θ) + gᵀd + ½\, dᵀ G d, \qquad (G + λ I)\, d = −g,

with ``G`` the Gauss–Newton matrix ``(1/B) Σ_b J_bᵀ H_L J_b`` (positive semi-definite for a
convex loss; for softmax-cross-entropy it is the Fisher, and the step the natural gradient)
and ``λ`` the Levenberg–Marquardt damping. Both optimizers here take ``G`` from fnn's own
hand-written passes:

* :func:`kfac` (Martens & Grosse 2015) approximates each layer's block of ``G`` by a
  Kronecker product ``G⁽ⁱ⁾ ⊗ A⁽ⁱ⁾`` (:func:`fnn.kfac_factors`: ``A = E[z̄ z̄ᵀ]``,
  ``G = E[J_aᵀ H_L J_a]``) and inverts it factor by factor
  (:func:`fnn.gauss_newton.kfac_precondition`): for ``Ŵ = [b, W]``,
  ``Δ Ŵ = −η (G + √λ I)⁻¹ ∇_Ŵ L (A + √λ I)⁻¹``.
* :func:`hessian_free` (Martens 2010) never forms ``G``: conjugate gradient solves
  ``(G + λ I) d = −g`` with one :func:`fnn.ggn_vp` per iteration.

The damping follows the Levenberg–Marquardt rule: with the reduction ratio

.. math::  ρ = \frac{L(θ + u) − L(θ)}{gᵀu + ½\, uᵀ G u},

``λ ← ω λ`` when ``ρ < ¼`` (the model promised more than the loss gave: trust it less),
``λ ← λ / ω`` when ``ρ > ¾``, kept between ``min_damping`` and :data:`MAX_DAMPING`. The ratio
is measured on the step's own mini-batch, which flatters the model: on noisy mini-batches a
``min_damping`` well above 0 keeps ``λ`` from falling to where one batch's step undoes the
others (Martens 2010 used large batches for the same reason).

Both are ``optax.GradientTransformationExtraArgs`` whose ``update`` needs the mini-batch:
``update(grads, state, params, x=x, y=y)``. :func:`fnn.training.fit` passes it to every
optimizer that takes extra arguments, and ``optax.chain`` passes it on, so they train with
``fit``, inside chains (clipping, schedules) and under ``jax.jit``. Their states are
``NamedTuple``\ s of arrays, which ``fit``'s checkpoints save and resume exactly. Tutorial 8
shows both at work.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from fnn import _checks, curvature, losses
from fnn.gauss_newton import kfac_decompose, kfac_precondition
from fnn.network import MLP, Params, apply, check_net

__all__ = [
    "INVERSES",
    "MAX_DAMPING",
    "HessianFreeState",
    "KFACState",
    "conjugate_gradient",
    "hessian_free",
    "kfac",
    "levenberg_marquardt",
    "reduction_ratio",
]

INVERSES = ("eigh", "cholesky")
"""The ways :func:`kfac` can invert its damped factors (``inverse=``)."""
MAX_DAMPING = 1e8
"""The ceiling of the adapted damping ``λ``: a step of about ``g/λ`` is then no step at all."""


class KFACState(NamedTuple):
    """The state of :func:`kfac`: steps taken, the damping ``λ``, every layer's running
    averages ``{"A", "G"}`` and their decompositions ``{"A", "G"}`` (``(eigenvalues,
    eigenvectors)`` for ``"eigh"``, ``(cholesky factor of F + √λ I,)`` for ``"cholesky"``)."""

    count: jax.Array
    """The number of steps taken."""
    damping: jax.Array
    """The current damping ``λ``."""
    factors: list
    """Every layer's running averages ``{"A", "G"}`` of the Kronecker factors."""
    inverses: list
    """Every layer's decompositions ``{"A", "G"}`` of its damped factors."""


class HessianFreeState(NamedTuple):
    """The state of :func:`hessian_free`: steps taken, the damping ``λ`` and the last step
    ``d`` (like ``params``; conjugate gradient starts from ``warm_start · d``)."""

    count: jax.Array
    """The number of steps taken."""
    damping: jax.Array
    """The current damping ``λ``."""
    direction: Params
    """The last step ``d``, like ``params`` (conjugate gradient starts from ``warm_start · d``)."""


# ---------------------------------------------------------------------------------------
# The Levenberg–Marquardt rule, shared by both.
# ---------------------------------------------------------------------------------------


def _batch_loss(net: MLP, params: Params, x, y, loss: losses.Loss) -> jax.Array:
    """``(1/B) Σ_b L(nn_θ(x_b), y_b)``."""
    return jnp.mean(jax.vmap(loss.fn)(apply(net, params, x), y))


def _dot(a, b) -> jax.Array:
    return sum(jnp.vdot(s, t) for s, t in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def reduction_ratio(net: MLP, params: Params, x, y, grads, updates, *, loss="l2") -> jax.Array:
    r"""The Levenberg–Marquardt reduction ratio of the step ``u`` on the batch ``(x, y)``:

    .. math::  ρ = \frac{L(θ + u) − L(θ)}{gᵀu + ½\, uᵀ G u}

    actual over predicted change, the prediction by the undamped Gauss–Newton model
    (:func:`fnn.ggn_vp`; Martens & Grosse 2015 §6.5). ``ρ ≈ 1``: the model is right; a
    prediction that is not a decrease (``≥ 0``) gives ``ρ = 0``. Two forward passes and one
    Gauss–Newton product.

    Args:
      net, params, x, y, loss: as in :func:`fnn.value_and_grad`.
      grads: ``g = ∇θ L``, like ``params``.
      updates: the step ``u``, like ``params``.

    Returns:
      ``ρ``, a scalar.
    """
    loss_fn = losses.get(loss)
    actual = _batch_loss(net, optax.apply_updates(params, updates), x, y, loss_fn)
    actual = actual - _batch_loss(net, params, x, y, loss_fn)
    Gu = curvature.ggn_vp(net, params, x, y, updates, loss=loss)
    predicted = _dot(grads, updates) + 0.5 * _dot(updates, Gu)
    safe = jnp.where(predicted < 0, predicted, -1.0)
    return jnp.where(predicted < 0, actual / safe, 0.0)


def levenberg_marquardt(
    damping, rho, *, factor: float, min_damping: float = 1e-8, max_damping: float = MAX_DAMPING
) -> jax.Array:
    """``λ ω`` if ``ρ < ¼``, ``λ / ω`` if ``ρ > ¾``, else ``λ``; clipped to ``[min_damping,
    max_damping]`` (Martens & Grosse 2015 §6.5; Martens 2010 §4.1). ``ρ`` NaN (a step to a
    NaN loss) counts as ``ρ < ¼``.

    >>> float(levenberg_marquardt(1.0, 0.1, factor=1.5))
    1.5
    >>> float(levenberg_marquardt(1.0, 0.9, factor=2.0))
    0.5
    """
    damping = jnp.asarray(damping)
    new = jnp.where(rho > 0.75, damping / factor, damping)
    new = jnp.where((rho < 0.25) | jnp.isnan(rho), damping * factor, new)
    return jnp.clip(new, min_damping, max_damping).astype(damping.dtype)


# ---------------------------------------------------------------------------------------
# Checks, in Python, when an optimizer is built or called.
# ---------------------------------------------------------------------------------------


def _check_common(net, loss, learning_rate, damping, damping_factor, min_damping) -> losses.Loss:
    check_net(net)
    loss_fn = losses.get(loss)
    losses.check_output_activation(loss_fn, net.activations[-1])
    if not callable(learning_rate):
        _checks.check_number(learning_rate, "learning_rate", positive=True)
    _checks.check_number(damping, "damping", positive=True)
    _checks.check_number(damping_factor, "damping_factor", positive=True)
    if not damping_factor > 1:
        raise ValueError(
            f"damping_factor must be > 1 (λ is multiplied or divided by it); got {damping_factor}."
        )
    _checks.check_number(min_damping, "min_damping", positive=True)
    if not min_damping <= damping <= MAX_DAMPING:
        raise ValueError(
            f"damping must be in [min_damping, MAX_DAMPING] = [{min_damping}, {MAX_DAMPING}]; "
            f"got {damping}."
        )
    return loss_fn


def _check_batch(what: str, params, x, y):
    """``x``, ``y`` as a batch; ``TypeError`` when the batch or the parameters are missing."""
    if params is None or x is None or y is None:
        raise TypeError(
            f"{what}'s update needs the parameters and the mini-batch: "
            "update(grads, state, params, x=x, y=y) (fnn.training.fit passes them); got "
            f"params={'None' if params is None else '…'}, x={'None' if x is None else '…'}, "
            f"y={'None' if y is None else '…'}."
        )
    x, y = jnp.asarray(x), jnp.asarray(y)
    return (x, y) if x.ndim == 2 else (x[None], y[None])


def _learning_rate(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


# ---------------------------------------------------------------------------------------
# K-FAC (Martens & Grosse 2015).
# ---------------------------------------------------------------------------------------


def _kfac_init(net: MLP, damping: float, inverse: str):
    def init(params: Params) -> KFACState:
        dtype = jnp.result_type(params[0]["W"])
        factors = [
            {"A": jnp.zeros((D + 1, D + 1), dtype), "G": jnp.zeros((M, M), dtype)}
            for D, M in zip(net.sizes[:-1], net.sizes[1:])
        ]
        identity = jax.tree.map(lambda F: F + jnp.eye(F.shape[0], dtype=dtype), factors)
        inverses = kfac_decompose(identity, jnp.sqrt(jnp.asarray(damping, dtype)), inverse)
        return KFACState(jnp.zeros((), jnp.int32), jnp.asarray(damping, dtype), factors, inverses)

    return init


def _refresh(net, loss, options, state: KFACState, params, x, y):
    """New running averages ``F ← w F + (1 − w) F_batch``, ``w = min(1 − 1/(r+1), decay)`` at
    the ``r``-th refresh (so the first ones are plain means), and their decompositions."""
    decay, update_every, inverse, mc_samples, key, max_bytes = options
    extra = {"max_bytes": max_bytes}
    if mc_samples is not None:
        extra.update(mc_samples=mc_samples, key=jax.random.fold_in(key, state.count))
    fresh = curvature.kfac_factors(net, params, x, y, loss=loss, **extra)
    r = (state.count // update_every).astype(state.damping.dtype)
    w = jnp.minimum(1 - 1 / (r + 1), decay)
    factors = jax.tree.map(lambda F, f: w * F + (1 - w) * f.astype(F.dtype), state.factors, fresh)
    inverses = kfac_decompose(factors, jnp.sqrt(state.damping), inverse)
    return factors, inverses


def kfac(
    net: MLP,
    *,
    learning_rate,
    damping: float = 1e-2,
    loss="l2",
    update_every: int = 1,
    decay: float = 0.95,
    inverse: str = "eigh",
    adapt_damping: bool = True,
    damping_factor: float = 1.5,
    min_damping: float = 1e-8,
    mc_samples: int | None = None,
    key=None,
    max_bytes: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""K-FAC as an optax transformation (Martens & Grosse 2015; S28's factors).

    Per layer, with ``Ŵ = [b, W]`` and ``A``, ``G`` the running averages of
    :func:`fnn.kfac_factors` (``G ⊗ A`` ≈ the layer's block of the Gauss–Newton matrix):

    .. math::  ΔŴ = −η\, (G + \sqrt{λ} I)^{-1}\, ∇_Ŵ L\, (A + \sqrt{λ} I)^{-1}

    Every ``update_every`` steps the factors are recomputed on the step's batch and averaged
    in (``F ← w F + (1 − w) F_batch``, ``w = min(1 − 1/r, decay)`` at the ``r``-th refresh), their
    inverses are refreshed, and (``adapt_damping``) ``λ`` follows
    :func:`levenberg_marquardt` with that step's :func:`reduction_ratio`. For one layer and
    one example ``G ⊗ A`` is the Gauss–Newton block itself and the step the damped natural
    gradient step. PReLU's α is not in K-FAC: its update is ``−η ∇_α L``.

    Args:
      net: the architecture.
      learning_rate: ``η > 0``, or an optax schedule ``step ↦ η``.
      damping: the initial ``λ > 0``.
      loss: the training loss (a name or :class:`fnn.losses.Loss`), as given to ``fit``.
      update_every: refresh factors, inverses and ``λ`` every this many steps.
      decay: the running averages' weight on the past, in ``[0, 1)``.
      inverse: ``"eigh"`` (eigendecomposition; the current ``λ`` applied at every step) or
        ``"cholesky"`` (of ``F + √λ I``; ``λ`` as at the last refresh).
      adapt_damping: ``False`` keeps ``λ`` fixed.
      damping_factor: ``ω > 1`` of the Levenberg–Marquardt rule.
      min_damping: the least ``λ`` the rule may reach (``> 0``).
      mc_samples, key: Monte-Carlo factors (``mc_samples=k`` sampled columns of ``H_L``'s
        square root, drawn from ``fold_in(key, step)``), or ``None`` for exact ones.
      max_bytes: passed to :func:`fnn.kfac_factors`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its state is a :class:`KFACState` and its
      ``update(grads, state, params, *, x, y)`` needs the batch the gradient came from.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`; a bad ``key``; at ``update``: no
        ``params``, ``x`` or ``y``.
      ValueError: an unknown loss or inverse, a loss that does not suit the output activation,
        a number out of range (named), ``key`` without ``mc_samples`` or the reverse.
    """
    loss_fn = _check_common(net, loss, learning_rate, damping, damping_factor, min_damping)
    update_every = _checks.check_positive_int(update_every, "update_every")
    _checks.check_number(decay, "decay", positive=False)
    if not decay < 1:
        raise ValueError(f"decay must be in [0, 1); got {decay}.")
    _checks.check_choice(inverse, INVERSES, "inverse")
    if (mc_samples is None) != (key is None):
        raise ValueError(
            "mc_samples and key go together: both for Monte-Carlo factors, neither for exact "
            f"ones; got mc_samples={mc_samples!r}, key={'None' if key is None else 'a key'}."
        )
    if mc_samples is not None:
        _checks.check_positive_int(mc_samples, "mc_samples")
        _checks.check_key(key)
    options = (decay, update_every, inverse, mc_samples, key, max_bytes)

    def update(grads, state: KFACState, params=None, *, x=None, y=None, **extra_args):
        del extra_args
        x, y = _check_batch("kfac", params, x, y)
        refresh = state.count % update_every == 0
        factors, inverses = jax.lax.cond(
            refresh,
            lambda: _refresh(net, loss_fn, options, state, params, x, y),
            lambda: (state.factors, state.inverses),
        )
        eta = _learning_rate(learning_rate, state.count)
        d = kfac_precondition(grads, inverses, jnp.sqrt(state.damping), inverse)
        updates = jax.tree.map(lambda t, p: (-eta * t).astype(p.dtype), d, params)
        adapt = refresh & adapt_damping
        new_damping = jax.lax.cond(
            adapt,
            lambda: levenberg_marquardt(
                state.damping,
                reduction_ratio(net, params, x, y, grads, updates, loss=loss_fn),
                factor=damping_factor,
                min_damping=min_damping,
            ),
            lambda: state.damping,
        )
        return updates, KFACState(state.count + 1, new_damping, factors, inverses)

    return optax.GradientTransformationExtraArgs(_kfac_init(net, damping, inverse), update)


# ---------------------------------------------------------------------------------------
# Hessian-free (Martens 2010): conjugate gradient over Gauss–Newton products.
# ---------------------------------------------------------------------------------------


def conjugate_gradient(matvec, b, x0, iterations: int):
    r"""``iterations`` steps of conjugate gradient for ``M x = b`` (``M`` symmetric positive
    definite, given as ``matvec``) from ``x0``; a ``jax.lax.fori_loop``, so it jit-compiles.
    In exact arithmetic ``x`` is exact after ``n`` steps for an ``(n, n)`` ``M``; a residual
    that has reached 0 stays there (no division by 0).

    >>> M = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    >>> conjugate_gradient(lambda v: M @ v, jnp.array([1.0, 2.0]), jnp.zeros(2), 2)
    Array([0.09090909, 0.6363636 ], dtype=float32)
    """
    r = b - matvec(x0)

    def body(_, carry):
        x, r, p, rr = carry
        Mp = matvec(p)
        pMp = jnp.vdot(p, Mp)
        alpha = jnp.where(pMp > 0, rr / jnp.where(pMp > 0, pMp, 1), 0)
        x, r = x + alpha * p, r - alpha * Mp
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1), 0)
        return x, r, r + beta * p, rr_new

    return jax.lax.fori_loop(0, iterations, body, (x0, r, r, jnp.vdot(r, r)))[0]


def hessian_free(
    net: MLP,
    *,
    learning_rate=1.0,
    damping: float = 1.0,
    loss="l2",
    cg_iterations: int = 10,
    warm_start: float = 0.0,
    adapt_damping: bool = True,
    damping_factor: float = 1.5,
    min_damping: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""Hessian-free Gauss–Newton (Martens 2010) as an optax transformation (S27).

    .. math::  (G + λ I)\, d = −g \quad\text{by } n \text{ steps of conjugate gradient}, \qquad
               u = η\, d

    with ``G v`` from :func:`fnn.ggn_vp` (one R-forward pass and one backward pass per CG
    step; ``G`` is never formed), the CG started from ``warm_start · d_prev``, and ``λ``
    adapted after every step by :func:`levenberg_marquardt` with the step's
    :func:`reduction_ratio`. As ``n`` grows the step tends to the dense solve of
    ``(G + λI) d = −g``; with ``n ≥ P`` it is that solve up to rounding.

    Args:
      net: the architecture.
      learning_rate: ``η > 0`` (1: the model's own step), or an optax schedule.
      damping: the initial ``λ > 0``.
      loss: the training loss, as given to ``fit``.
      cg_iterations: ``n``, the fixed number of CG steps (a positive int).
      warm_start: ``ζ ∈ [0, 1]``: CG starts from ``ζ`` times the last step (Martens: 0.95).
      adapt_damping: ``False`` keeps ``λ`` fixed.
      damping_factor: ``ω > 1`` of the Levenberg–Marquardt rule.
      min_damping: the least ``λ`` the rule may reach (``> 0``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a :class:`HessianFreeState`; its
      ``update(grads, state, params, *, x, y)`` needs the batch.

    Raises:
      As :func:`kfac`.
    """
    loss_fn = _check_common(net, loss, learning_rate, damping, damping_factor, min_damping)
    cg_iterations = _checks.check_positive_int(cg_iterations, "cg_iterations")
    _checks.check_number(warm_start, "warm_start", positive=False)
    if not warm_start <= 1:
        raise ValueError(f"warm_start must be in [0, 1]; got {warm_start}.")

    def init(params: Params) -> HessianFreeState:
        dtype = jnp.result_type(params[0]["W"])
        zeros = jax.tree.map(jnp.zeros_like, params)
        return HessianFreeState(jnp.zeros((), jnp.int32), jnp.asarray(damping, dtype), zeros)

    def update(grads, state: HessianFreeState, params=None, *, x=None, y=None, **extra_args):
        del extra_args
        x, y = _check_batch("hessian_free", params, x, y)
        g, unravel = ravel_pytree(grads)
        lam = state.damping.astype(g.dtype)

        def matvec(v):
            Gv = curvature.ggn_vp(net, params, x, y, unravel(v), loss=loss_fn)
            return ravel_pytree(Gv)[0] + lam * v

        x0 = warm_start * ravel_pytree(state.direction)[0]
        d = unravel(conjugate_gradient(matvec, -g, x0, cg_iterations))
        eta = _learning_rate(learning_rate, state.count)
        updates = jax.tree.map(lambda t, p: (eta * t).astype(p.dtype), d, params)
        new_damping = state.damping
        if adapt_damping:
            rho = reduction_ratio(net, params, x, y, grads, updates, loss=loss_fn)
            new_damping = levenberg_marquardt(
                state.damping, rho, factor=damping_factor, min_damping=min_damping
            )
        return updates, HessianFreeState(state.count + 1, new_damping, d)

    return optax.GradientTransformationExtraArgs(init, update)
