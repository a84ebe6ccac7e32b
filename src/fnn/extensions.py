r"""More out of one backward pass: per-example gradients, their norms, clipping and gradient
statistics (S24, S25).

Backprop computes one row ``δ_b⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾`` per example before the batch gradient sums
them, ``∂L/∂W⁽ⁱ⁾ = (1/B) Δᵀ Z``. Kept apart, the same pass gives (as BackPACK's extensions do,
here from the lecture's formulas)::

    ∂L_b/∂W = δ_b ⊗ z_b,   ∂L_b/∂b = δ_b                          (per_example_grads)
    ‖∇θ L_b‖² = Σᵢ (‖δ_b⁽ⁱ⁾‖ ‖(z_b⁽ⁱ⁻¹⁾, 1)‖)² + (∂L_b/∂α)²         (per_example_grad_norms)
    (1/B) Σ_b s_b ∇θ L_b = the batch gradient of the rows s_b δ_b,  s_b = min(1, C/‖∇θ L_b‖)
                                                                  (clipped_grad)
    Σ_b (∂L_b/∂W)² = (Δ ⊙ Δ)ᵀ (Z ⊙ Z)                             (gradient_statistics)

The engine is one fold (``per_example_pass``): the batch-first forward pass of
:mod:`fnn.backprop`, then ``G = J_L(Ŷ)`` row by row (no ``1/B``: each row is its own loss)
and :func:`fnn.layer.delta` / :func:`fnn.layer.input_grad` from the last layer to the
first, keeping every layer's ``(G, Δ)``; :mod:`fnn.layer` turns them into the quantities
above (:mod:`fnn.traces` keeps all of them). Only :func:`per_example_grads` forms
the ``B`` gradients; the others never do. Norms are of products, scaled, so they are
finite wherever the per-example gradients are. The public functions check their input once
(``check_problem``); ``x`` is a batch ``(B, D)`` or one example ``(D,)``, a batch of one
whose results come without the batch axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnn import _checks, _scan, layer
from fnn.derivatives import check_loss_problem

__all__ = [
    "clipped_grad",
    "gradient_statistics",
    "per_example_grad_norms",
    "per_example_grads",
]


# ---------------------------------------------------------------------------------------
# The engine: one forward pass, one backward pass that keeps every example's rows.
# ---------------------------------------------------------------------------------------


def _pull_back_keeping_rows(p, f, cache, G):
    """One layer backward, keeping its rows ``(G, Δ)``: the per-example quantities are
    built from them after the pass (S24, S25)."""
    D = layer.delta(p, f, cache, G)
    return (G, D), layer.input_grad(p, D)


def per_example_pass(net, params, X, Y, loss):
    """``(L_b (B,), caches, [(G, Δ) per layer], ∂L_b/∂x)`` for a batch; unchecked.

    ``G⁽ⁱ⁾ = ∂L_b/∂z⁽ⁱ⁾`` and ``Δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾``, one row per example, each the derivative
    of that example's own loss. What a caller does not use (``∂L_b/∂x``, say) jit removes.
    ``loss`` is a :class:`fnn.losses.Loss`."""
    fold = _scan.layers(net, params, per_layer_results=True)
    y_hat, caches = fold.forward(layer.forward_batch, X)
    G = jax.vmap(loss.jacobian)(y_hat, Y)  # J_L(ŷ_b), row b
    dL_dx, rows = fold.backward(_pull_back_keeping_rows, G, caches)
    losses_b = jax.vmap(loss.fn)(y_hat, Y)
    return losses_b, fold.per_layer(caches), fold.per_layer(rows), dL_dx


def layer_map(rule, net, params, caches, rows):
    """``rule(p, f, cache, G, Δ)`` for every layer: a list, one result per layer."""
    return [rule(p, f, c, G, D) for p, f, c, (G, D) in zip(params, net.activations, caches, rows)]


def check_problem(net, params, x, y, loss):
    """The checks at the door of every function here (as :func:`fnn.value_and_grad`'s);
    returns ``(Loss, X (B, D), Y, one)``, one example ``(D,)`` as a batch of one
    (``one`` is then ``True``)."""
    loss_fn, x, y = check_loss_problem(net, params, x, y, loss)
    one = x.ndim == 1
    return loss_fn, *((x[None], y[None]) if one else (x, y)), one


def drop_batch_axis(tree, one: bool):
    """The results of one example ``(D,)`` without the batch axis of one."""
    return jax.tree.map(lambda v: v[0], tree) if one else tree


def _like_params(grads, params):
    """Gradients in their parameter's dtype, as :func:`fnn.value_and_grad` returns them."""
    return jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads, params)


def _norms(net, params, caches, rows):
    """``‖∇θ L_b‖`` ``(B,)``: the scaled norm of every layer's terms side by side."""
    terms = layer_map(layer.param_grads_norm_terms, net, params, caches, rows)
    return layer.row_norms(jnp.concatenate(terms, axis=-1))


def _weighted_sum(net, params, caches, rows, w):
    """``Σ_b w_b ∇θ L_b`` from the rows ``w_b g_b``, ``w_b δ_b`` (δ and ∂L/∂α are linear in
    ``g``): :func:`fnn.layer.param_grads_batch`, one ``Δᵀ Z`` per layer. ``w`` is ``(B,)``,
    or one Python number for every row."""
    w = w[:, None] if jnp.ndim(w) else w

    def rule(p, f, cache, G, D):
        return layer.param_grads_batch(p, f, cache, w * G, w * D)

    return layer_map(rule, net, params, caches, rows)


# ---------------------------------------------------------------------------------------
# S24: per-example gradients, their norms, the clipped mean gradient of DP-SGD.
# ---------------------------------------------------------------------------------------


def per_example_grads(net, params, x, y, *, loss="l2"):
    r"""Every example's own loss and gradient from one backward pass (S24).

    .. math::  ∂L_b/∂W^{(i)} = δ_b^{(i)} ⊗ z_b^{(i-1)}, \quad ∂L_b/∂b^{(i)} = δ_b^{(i)}

    Args:
      net, params, loss: as for :func:`fnn.value_and_grad`.
      x: a batch ``(B, D)`` or one example ``(D,)``; y: the target(s).

    Returns:
      ``(losses_b, grads_b)``: ``losses_b`` ``(B,)`` unaveraged; ``grads_b`` like ``params``
      with a leading axis ``B`` on every leaf. Their mean over ``b`` is
      :func:`fnn.value_and_grad`'s gradient. For one example: its loss ``()`` and gradient
      like ``params``, without the batch axis.

    Raises:
      TypeError, ValueError: as :func:`fnn.value_and_grad`.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> losses_b, grads_b = per_example_grads(net, params, jnp.ones((5, 3)), jnp.zeros((5, 2)))
    >>> losses_b.shape, grads_b[0]["W"].shape
    ((5,), (5, 4, 3))
    """
    loss_fn, X, Y, one = check_problem(net, params, x, y, loss)
    losses_b, caches, rows, _ = per_example_pass(net, params, X, Y, loss_fn)
    grads = layer_map(layer.param_grads_per_example, net, params, caches, rows)
    return drop_batch_axis((losses_b, _like_params(grads, params)), one)


def per_example_grad_norms(net, params, x, y, *, loss="l2") -> jax.Array:
    r"""``‖∇θ L_b‖₂`` for every example, without forming the ``B`` gradients (S24).

    .. math::  ‖∇_θ L_b‖^2 = \sum_i \left(‖δ_b^{(i)}‖ \, ‖(z_b^{(i-1)}, 1)‖\right)^2
               + \sum_i (∂L_b/∂α^{(i)})^2

    since ``‖δ ⊗ z‖_F = ‖δ‖ ‖z‖``: the δ's and z's of one pass, never ``Δᵀ Z``. Every norm
    is scaled by its largest entry before squaring (:func:`fnn.layer.row_norms`), and a
    layer with ``δ_b = 0`` adds 0 even where ``‖z_b‖`` overflows: the norm is finite
    wherever the per-example gradient is (saturated units, inputs of 1e20 in float32,
    pixel values 0–255 in float16).

    Returns:
      ``(B,)``, or ``()`` for one example ``(D,)``. Raises as :func:`per_example_grads`.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> per_example_grad_norms(net, params, jnp.ones((5, 3)), jnp.zeros((5, 2))).shape
    (5,)
    """
    loss_fn, X, Y, one = check_problem(net, params, x, y, loss)
    _, caches, rows, _ = per_example_pass(net, params, X, Y, loss_fn)
    return drop_batch_axis(_norms(net, params, caches, rows), one)


def _check_clipping(max_norm, noise_multiplier, key) -> None:
    _checks.check_number(max_norm, "max_norm", positive=True)
    if noise_multiplier is None and key is not None:
        raise ValueError("key is for the noise: pass noise_multiplier too, or no key.")
    if noise_multiplier is not None:
        _checks.check_number(noise_multiplier, "noise_multiplier", positive=False)
        if key is None:
            raise ValueError("noise_multiplier needs key=, the PRNG key the noise is drawn from.")
        _checks.check_key(key)


def _in_domain(value, ok):
    """``value`` where ``ok``, else NaN: a traced argument outside its domain poisons the
    result instead of giving a finite wrong number (concrete ones were refused)."""
    return jnp.where(ok, value, jnp.nan)


def _check_norms(norms) -> None:
    """``ValueError`` naming the first example whose gradient norm is not finite (concrete
    norms only; under ``jax.jit`` its scale is NaN and so is the clipped gradient)."""
    if isinstance(norms, jax.core.Tracer):
        return
    bad = np.flatnonzero(~np.isfinite(np.asarray(norms)))
    if bad.size:
        b = int(bad[0])
        raise ValueError(
            f"the gradient of example {b} has norm {float(norms[b])}: clipping needs every "
            f"example's gradient norm finite (x[{b}], y[{b}] or params give a NaN or an "
            "overflowing gradient)."
        )


def _add_noise(grads, std, key):
    """``g + std ξ``, ``ξ ~ N(0, I)``: one split of ``key`` per leaf, optax's order."""
    leaves, tree = jax.tree.flatten(grads)
    _, *keys = jax.random.split(key, len(leaves) + 1)
    leaves = [g + std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def clipped_grad(net, params, x, y, *, loss="l2", max_norm=1.0, noise_multiplier=None, key=None):
    r"""The per-example clipped mean gradient of DP-SGD, from one forward pass (S24).

    .. math::  \tilde g = \frac{1}{B} \sum_b s_b ∇_θ L_b, \qquad
               s_b = \min\left(1, \frac{C}{‖∇_θ L_b‖}\right)

    ``s_b`` comes from :func:`per_example_grad_norms`' formula; then the batch gradient of the
    re-weighted rows ``s_b δ_b`` (:func:`fnn.layer.param_grads_batch`, ``Δᵀ Z``) is
    ``g̃``: the ``B`` gradients are never formed. ``s_b`` is optax's
    (``optax.per_example_global_norm_clip``): a zero gradient keeps ``s_b = 1``.

    With ``noise_multiplier = σ`` (DP-SGD): ``g̃ + σ C ξ / B``, ``ξ ~ N(0, I)`` drawn from
    ``key`` exactly as ``optax.contrib.differentially_private_aggregate`` draws it from its
    state's key (one split per leaf, tested equal); that transform itself needs the ``B``
    gradients, this does not. Split a fresh ``key`` for every step.

    No example is ever left unclipped or dropped: a NaN or infinite gradient norm is an
    error, and under ``jax.jit`` (where values are unknown to Python) it makes the whole
    gradient NaN; so does a traced ``max_norm`` ≤ 0 or NaN, or a traced
    ``noise_multiplier`` < 0 or NaN.

    Args:
      net, params, x, y, loss: as for :func:`per_example_grads`.
      max_norm: ``C > 0``, the largest norm an example's gradient keeps.
      noise_multiplier: ``σ ≥ 0`` for Gaussian noise, or ``None`` (default): no noise.
      key: the PRNG key for the noise; required with ``noise_multiplier``, else not allowed.

    Returns:
      ``(loss, grads)``: ``loss`` the unclipped batch mean, ``grads`` like ``params``.

    Raises:
      TypeError, ValueError: as :func:`per_example_grads`; ``max_norm`` not a finite number
        > 0, ``noise_multiplier`` not ≥ 0, a missing or superfluous or bad ``key``; an
        example whose gradient norm is NaN or infinite (concrete inputs).

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> loss, g = clipped_grad(net, params, jnp.ones((5, 3)), jnp.zeros((5, 2)), max_norm=0.1)
    >>> g[0]["W"].shape
    (4, 3)
    """
    loss_fn, X, Y, _ = check_problem(net, params, x, y, loss)
    _check_clipping(max_norm, noise_multiplier, key)
    losses_b, caches, rows, _ = per_example_pass(net, params, X, Y, loss_fn)
    norms = _norms(net, params, caches, rows)
    _check_norms(norms)
    C = _in_domain(max_norm, (max_norm > 0) & jnp.isfinite(max_norm))
    s = jnp.minimum(C / norms, 1.0)  # C / 0 = inf → 1; a NaN norm or C → NaN
    B = X.shape[0]
    grads = _weighted_sum(net, params, caches, rows, s / B)  # the mean's 1/B, once
    if noise_multiplier is not None:
        sigma = _in_domain(
            noise_multiplier, (noise_multiplier >= 0) & jnp.isfinite(noise_multiplier)
        )
        grads = _add_noise(grads, sigma * C / B, key)
    return jnp.mean(losses_b), _like_params(grads, params)


# ---------------------------------------------------------------------------------------
# S25: gradient statistics of a mini-batch.
# ---------------------------------------------------------------------------------------


def gradient_statistics(net, params, x, y, *, loss="l2") -> dict:
    r"""The sum of squared per-example gradients and their variance, like ``params`` (S25).

    .. math::  \mathrm{sum\_sq} = \sum_b (∇_θ L_b)^2, \qquad
               \mathrm{variance} = \frac{1}{B} \sum_b (∇_θ L_b)^2
               - \Big(\frac{1}{B} \sum_b ∇_θ L_b\Big)^2   \quad\text{(elementwise)}

    For ``W`` the sum is ``(Δ ⊙ Δ)ᵀ (Z ⊙ Z)`` (:func:`fnn.layer.param_grads_sq_sum`, with
    the columns scaled so that no ``z²`` overflows where ``δ z`` is finite), one matrix
    product like the gradient's ``Δᵀ Z``: the ``B`` gradients are never formed. The
    variance is the population variance (divided by ``B``), clamped at 0 where rounding
    would make it negative. One example ``(D,)`` is a batch of one (variance 0).

    Returns:
      ``{"sum_sq": like params, "variance": like params}``. Raises as
      :func:`per_example_grads`.
    """
    loss_fn, X, Y, _ = check_problem(net, params, x, y, loss)
    _, caches, rows, _ = per_example_pass(net, params, X, Y, loss_fn)
    sum_sq = layer_map(layer.param_grads_sq_sum, net, params, caches, rows)
    B = X.shape[0]
    mean = _weighted_sum(net, params, caches, rows, 1 / B)
    variance = jax.tree.map(lambda s, m: jnp.maximum(s / B - m**2, 0), sum_sq, mean)
    return {"sum_sq": _like_params(sum_sq, params), "variance": _like_params(variance, params)}
