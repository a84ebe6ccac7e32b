r"""More out of one backward pass: the trace, per-example gradients, their norms, clipping and
gradient statistics (S23–S25).

Backprop computes one row ``δ_b⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾`` per example before the batch gradient sums
them, ``∂L/∂W⁽ⁱ⁾ = (1/B) Δᵀ Z``. Kept apart, the same pass gives (as BackPACK's extensions do,
here from the lecture's formulas)::

    ∂L_b/∂W = δ_b ⊗ z_b,   ∂L_b/∂b = δ_b                          (per_example_grads)
    ‖∇θ L_b‖² = Σᵢ ‖δ_b⁽ⁱ⁾‖² (‖z_b⁽ⁱ⁻¹⁾‖² + 1) + (∂L_b/∂α)²          (per_example_grad_norms)
    (1/B) Σ_b s_b ∇θ L_b = the batch gradient of the rows s_b δ_b,  s_b = min(1, C/‖∇θ L_b‖)
                                                                  (clipped_grad)
    Σ_b (∂L_b/∂W)² = (Δ ⊙ Δ)ᵀ (Z ⊙ Z)                             (gradient_statistics)

The engine is one fold (:func:`_per_example_pass`): the batch-first forward pass of
:mod:`fnn.backprop`, then ``G = J_L(Ŷ)`` row by row (no ``1/B``: each row is its own loss)
and :func:`fnn.layer.delta` / :func:`fnn.layer.input_grad` from the last layer to the
first, keeping every layer's ``(G, Δ)``; :mod:`fnn.layer` turns them into the quantities
above. Only :func:`per_example_grads` forms the ``B`` gradients; the others never do. The
public functions check their input once (as :func:`fnn.value_and_grad` does); a batch
``x`` ``(B, D)`` is required except by :func:`trace`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import _checks, _scan, backprop, layer
from fnn.derivatives import _check_loss_problem
from fnn.network import MLP

__all__ = [
    "LayerTrace",
    "NonFinite",
    "Trace",
    "clipped_grad",
    "gradient_statistics",
    "per_example_grad_norms",
    "per_example_grads",
    "trace",
]


# ---------------------------------------------------------------------------------------
# The engine: one forward pass, one backward pass that keeps every example's rows.
# ---------------------------------------------------------------------------------------


def _keep_step(G, p, f, cache):
    D = layer.delta(p, f, cache, G)
    return layer.input_grad(p, D), (G, D)


def _per_example_pass(net, params, x, y, loss):
    """``(L_b (B,), caches, [(G, Δ) per layer], ∂L_b/∂x)`` for a batch; unchecked.

    ``G⁽ⁱ⁾ = ∂L_b/∂z⁽ⁱ⁾`` and ``Δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾``, one row per example, each the derivative
    of that example's own loss. What a caller does not use (``∂L_b/∂x``, say) jit removes."""
    segs = _scan.segments(net, per_layer_results=True)
    grouped = _scan.group(segs, params)
    y_hat, caches = _scan.run_layers(segs, grouped, backprop._cache_step, x)
    G = jax.vmap(loss.jacobian)(y_hat, y)  # J_L(ŷ_b), row b
    dL_dx, rows = _scan.run_layers(segs, grouped, _keep_step, G, caches, reverse=True)
    losses_b = jax.vmap(loss.fn)(y_hat, y)
    return losses_b, _scan.ungroup(segs, caches), _scan.ungroup(segs, rows), dL_dx


def _layer_map(rule, net, params, caches, rows):
    """``rule(p, f, cache, G, Δ)`` for every layer."""
    return [rule(p, f, c, G, D) for p, f, c, (G, D) in zip(params, net.activations, caches, rows)]


def _like_params(grads, params):
    """Gradients in their parameter's dtype, as :func:`fnn.value_and_grad` returns them."""
    return jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads, params)


def _check(net, params, x, y, loss, *, batch=True):
    loss_fn, x, y = _check_loss_problem(net, params, x, y, loss)
    if batch and x.ndim != 2:
        raise ValueError(
            f"x must be a batch of shape (B, D) = (B, {net.in_features}) for per-example "
            f"quantities; got one example of shape {x.shape} (use x[None] and y[None])."
        )
    return loss_fn, x, y


def _sq_norms(net, params, caches, rows):
    return sum(_layer_map(layer.param_grads_sq_norm, net, params, caches, rows))


def _weighted_sum(net, params, caches, rows, w):
    """``Σ_b w_b ∇θ L_b`` from the rows ``w_b g_b``, ``w_b δ_b`` (δ and ∂L/∂α are linear in
    ``g``): :func:`fnn.layer.param_grads_batch`, one ``Δᵀ Z`` per layer. ``w`` is ``(B,)``,
    or one Python number for every row."""
    w = w[:, None] if jnp.ndim(w) else w

    def rule(p, f, cache, G, D):
        return layer.param_grads_batch(p, f, cache, w * G, w * D)

    return _layer_map(rule, net, params, caches, rows)


# ---------------------------------------------------------------------------------------
# S24: per-example gradients, their norms, the clipped mean gradient of DP-SGD.
# ---------------------------------------------------------------------------------------


def per_example_grads(net, params, x, y, loss="l2"):
    r"""Every example's own loss and gradient from one backward pass (S24).

    .. math::  ∂L_b/∂W^{(i)} = δ_b^{(i)} ⊗ z_b^{(i-1)}, \quad ∂L_b/∂b^{(i)} = δ_b^{(i)}

    Args:
      net, params, loss: as for :func:`fnn.value_and_grad`.
      x: a batch ``(B, D)``; y: its targets.

    Returns:
      ``(losses_b, grads_b)``: ``losses_b`` ``(B,)`` unaveraged; ``grads_b`` like ``params``
      with a leading axis ``B`` on every leaf. Their mean over ``b`` is
      :func:`fnn.value_and_grad`'s gradient.

    Raises:
      TypeError, ValueError: as :func:`fnn.value_and_grad`, and ``x`` not a batch.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> losses_b, grads_b = per_example_grads(net, params, jnp.ones((5, 3)), jnp.zeros((5, 2)))
    >>> losses_b.shape, grads_b[0]["W"].shape
    ((5,), (5, 4, 3))
    """
    loss_fn, x, y = _check(net, params, x, y, loss)
    losses_b, caches, rows, _ = _per_example_pass(net, params, x, y, loss_fn)
    grads = _layer_map(layer.param_grads_per_example, net, params, caches, rows)
    return losses_b, _like_params(grads, params)


def per_example_grad_norms(net, params, x, y, loss="l2") -> jax.Array:
    r"""``‖∇θ L_b‖₂`` for every example, without forming the ``B`` gradients (S24).

    .. math::  ‖∇_θ L_b‖^2 = \sum_i ‖δ_b^{(i)}‖^2 \left(‖z_b^{(i-1)}‖^2 + 1\right)
               + \sum_i (∂L_b/∂α^{(i)})^2

    since ``‖δ ⊗ z‖_F = ‖δ‖ ‖z‖``: the δ's and z's of one pass, never ``Δᵀ Z``.

    Returns:
      ``(B,)``. Raises as :func:`per_example_grads`.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> per_example_grad_norms(net, params, jnp.ones((5, 3)), jnp.zeros((5, 2))).shape
    (5,)
    """
    loss_fn, x, y = _check(net, params, x, y, loss)
    _, caches, rows, _ = _per_example_pass(net, params, x, y, loss_fn)
    return jnp.sqrt(_sq_norms(net, params, caches, rows))


def clipped_grad(net, params, x, y, max_norm=1.0, loss="l2", *, noise_multiplier=None, key=None):
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

    Args:
      net, params, x, y, loss: as for :func:`per_example_grads` (``x`` a batch).
      max_norm: ``C > 0``, the largest norm an example's gradient keeps.
      noise_multiplier: ``σ ≥ 0`` for Gaussian noise, or ``None`` (default): no noise.
      key: the PRNG key for the noise; required with ``noise_multiplier``, else not allowed.

    Returns:
      ``(loss, grads)``: ``loss`` the unclipped batch mean, ``grads`` like ``params``.

    Raises:
      TypeError, ValueError: as :func:`per_example_grads`; ``max_norm`` not a finite number
        > 0, ``noise_multiplier`` not ≥ 0, a missing or superfluous or bad ``key``.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> loss, g = clipped_grad(net, params, jnp.ones((5, 3)), jnp.zeros((5, 2)), max_norm=0.1)
    >>> g[0]["W"].shape
    (4, 3)
    """
    loss_fn, x, y = _check(net, params, x, y, loss)
    _checks.check_number(max_norm, "max_norm", positive=True)
    if noise_multiplier is None and key is not None:
        raise ValueError("key is for the noise: pass noise_multiplier too, or no key.")
    if noise_multiplier is not None:
        _checks.check_number(noise_multiplier, "noise_multiplier", positive=False)
        if key is None:
            raise ValueError("noise_multiplier needs key=, the PRNG key the noise is drawn from.")
        _checks.check_key(key)
    losses_b, caches, rows, _ = _per_example_pass(net, params, x, y, loss_fn)
    norms = jnp.sqrt(_sq_norms(net, params, caches, rows))
    s = jnp.nan_to_num(jnp.minimum(max_norm / norms, 1.0), nan=1.0)
    grads = _weighted_sum(net, params, caches, rows, s / x.shape[0])  # the mean's 1/B, once
    if noise_multiplier is not None:
        leaves, tree = jax.tree.flatten(grads)
        _, *keys = jax.random.split(key, len(leaves) + 1)  # optax's split, its order
        std = noise_multiplier * max_norm / x.shape[0]
        leaves = [g + std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
        grads = jax.tree.unflatten(tree, leaves)
    return jnp.mean(losses_b), _like_params(grads, params)


# ---------------------------------------------------------------------------------------
# S25: gradient statistics of a mini-batch.
# ---------------------------------------------------------------------------------------


def gradient_statistics(net, params, x, y, loss="l2") -> dict:
    r"""The sum of squared per-example gradients and their variance, like ``params`` (S25).

    .. math::  \mathrm{sum\_sq} = \sum_b (∇_θ L_b)^2, \qquad
               \mathrm{variance} = \frac{1}{B} \sum_b (∇_θ L_b)^2
               - \Big(\frac{1}{B} \sum_b ∇_θ L_b\Big)^2   \quad\text{(elementwise)}

    For ``W`` the sum is ``(Δ ⊙ Δ)ᵀ (Z ⊙ Z)`` (:func:`fnn.layer.param_grads_sq_sum`), one
    matrix product like the gradient's ``Δᵀ Z``: the ``B`` gradients are never formed. The
    variance is the population variance (divided by ``B``), clamped at 0 where rounding
    would make it negative.

    Returns:
      ``{"sum_sq": like params, "variance": like params}``. Raises as
      :func:`per_example_grads`.
    """
    loss_fn, x, y = _check(net, params, x, y, loss)
    _, caches, rows, _ = _per_example_pass(net, params, x, y, loss_fn)
    sum_sq = _layer_map(layer.param_grads_sq_sum, net, params, caches, rows)
    B = x.shape[0]
    mean = _weighted_sum(net, params, caches, rows, 1 / B)
    variance = jax.tree.map(lambda s, m: jnp.maximum(s / B - m**2, 0), sum_sq, mean)
    return {"sum_sq": _like_params(sum_sq, params), "variance": _like_params(variance, params)}


# ---------------------------------------------------------------------------------------
# S23: every intermediate of one forward and backward pass, printable.
# ---------------------------------------------------------------------------------------


class LayerTrace(NamedTuple):
    """One layer ``a = W z_prev + b``, ``z = f(a)`` in one forward and backward pass (S23).
    Per example: a leading batch axis when the trace is of a batch."""

    z_prev: jax.Array  # z⁽ⁱ⁻¹⁾ (x for the first layer)
    a: jax.Array  # a⁽ⁱ⁾ = W z⁽ⁱ⁻¹⁾ + b
    z: jax.Array  # z⁽ⁱ⁾ = f(a⁽ⁱ⁾)
    dL_dz: jax.Array  # ∂L_b/∂z⁽ⁱ⁾
    dL_da: jax.Array  # δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾ = ∂L_b/∂z⁽ⁱ⁾ · J_f(a⁽ⁱ⁾)
    dL_dW: jax.Array  # δ⁽ⁱ⁾ ⊗ z⁽ⁱ⁻¹⁾
    dL_db: jax.Array  # δ⁽ⁱ⁾
    dL_dalpha: jax.Array | None = None  # ∂L_b/∂α (PReLU only)


_LEGEND = (
    "a = W z_prev + b, z = f(a), dL_dz = ∂L_b/∂z, dL_da = δ = ∂L_b/∂a = dL_dz · J_f(a),\n"
    "dL_dW = δ ⊗ z_prev, dL_db = δ, dL_dalpha = ∂L_b/∂α; L_b is one example's own loss"
)
_FORWARD, _BACKWARD = ("z_prev", "a", "z"), ("dL_dz", "dL_da", "dL_dW", "dL_db", "dL_dalpha")


class NonFinite(NamedTuple):
    """Where a trace first became non-finite: ``layer`` (1-based; ``None`` for the loss and
    ``dL_dx``), the field, the index of the first bad entry and its value."""

    layer: int | None
    quantity: str
    index: tuple
    value: float

    def __str__(self) -> str:
        where = "" if self.layer is None else f"layer {self.layer}: "
        return f"{where}{self.quantity} = {self.value} at index {self.index}"


class Trace(NamedTuple):
    """Every intermediate of one forward and backward pass (S23): the batch-mean ``loss``,
    one :class:`LayerTrace` per layer, ``dL_dx = ∂L_b/∂x``, and the network (static).
    ``str(trace)`` is a table per layer; :meth:`first_nonfinite` finds where NaN began."""

    loss: jax.Array
    layers: tuple[LayerTrace, ...]
    dL_dx: jax.Array
    net: MLP

    def first_nonfinite(self) -> NonFinite | None:
        """The first non-finite quantity in the order the pass computed them, or ``None``.

        Forward, layer 1 to N: ``z_prev`` (only the input x), ``a``, ``z``; then the loss;
        backward, layer N to 1: ``dL_dz``, ``dL_da`` (δ), ``dL_dW``, ``dL_db``,
        ``dL_dalpha``; then ``dL_dx``. NaN in, NaN out, as in JAX; this is the opt-in check
        that says where (issue 13): call it on a concrete trace, outside ``jax.jit``::

            if not jnp.isfinite(loss):
                print(fnn.trace(net, params, x, y, loss="l2").first_nonfinite())
        """
        order = [(1, "z_prev", self.layers[0].z_prev)]
        order += [(i, q, getattr(t, q)) for i, t in enumerate(self.layers, 1) for q in _FORWARD[1:]]
        order.append((None, "loss", self.loss))
        order += [
            (i, q, getattr(t, q))
            for i, t in reversed(list(enumerate(self.layers, 1)))
            for q in _BACKWARD
            if getattr(t, q) is not None
        ]
        order.append((None, "dL_dx", self.dL_dx))
        for i, quantity, value in order:
            value = np.asarray(value)
            bad = np.flatnonzero(~np.isfinite(value))  # (argwhere finds nothing in a 0-d array)
            if bad.size:
                index = tuple(int(k) for k in np.unravel_index(bad[0], value.shape))
                return NonFinite(i, quantity, index, float(value[index]))
        return None

    def table(self, precision: int = 6, max_entries: int = 16) -> str:
        """The trace as text, one block per layer: field, formula, shape, values rounded to
        ``precision`` digits; an array of more than ``max_entries`` numbers is summarised
        by its shape, min, max and norm."""

        def show(v):
            v = np.asarray(v)
            if v.size > max_entries:
                return (
                    f"min {v.min():.{precision}g}, max {v.max():.{precision}g}, "
                    f"‖·‖ {np.linalg.norm(v):.{precision}g}"
                )
            text = np.array2string(v, precision=precision, separator=", ", max_line_width=200)
            return text.replace("\n", "\n" + " " * 26)

        examples = "one example" if self.dL_dx.ndim == 1 else f"{len(self.dL_dx)} examples"
        lines = [f"loss (batch mean) = {float(self.loss):.{precision}g}, {examples}", _LEGEND]
        for i, t in enumerate(self.layers, 1):
            D, M, f = self.net.sizes[i - 1], self.net.sizes[i], self.net.activations[i - 1]
            lines.append(f"layer {i}: {D} → {M}, {f}")
            for q in _FORWARD + _BACKWARD:
                v = getattr(t, q)
                if v is not None:
                    lines.append(f"  {q:10}{np.shape(v)!s:>12}  {show(v)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def trace(net, params, x, y, loss="l2") -> Trace:
    r"""Every intermediate of one forward and backward pass, per layer and example (S23).

    For i = 1 … N, with ``L_b`` the loss of example b alone (not the batch mean)::

        z⁽ⁱ⁻¹⁾, a⁽ⁱ⁾ = W⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ + b⁽ⁱ⁾, z⁽ⁱ⁾ = f(a⁽ⁱ⁾), ∂L_b/∂z⁽ⁱ⁾,
        δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾, ∂L_b/∂W⁽ⁱ⁾ = δ⁽ⁱ⁾ ⊗ z⁽ⁱ⁻¹⁾, ∂L_b/∂b⁽ⁱ⁾ = δ⁽ⁱ⁾  (and ∂L_b/∂α)

    — the numbers of a hand calculation, from the engines' own rules (:mod:`fnn.layer`).
    ``str(t)`` prints them as a table; :meth:`Trace.first_nonfinite` names the first layer
    and quantity that became NaN or infinite.

    Args:
      net, params, y, loss: as for :func:`fnn.value_and_grad`.
      x: one example ``(D,)`` (its hand calculation) or a batch ``(B, D)`` (every field
        gains a leading axis B).

    Returns:
      A :class:`Trace`: ``t.loss`` (the batch mean), ``t.layers[i - 1]`` a
      :class:`LayerTrace` for layer i, ``t.dL_dx``.

    >>> import fnn
    >>> net = fnn.MLP((2, 2), ("sigmoid",))
    >>> params = [{"W": jnp.eye(2), "b": jnp.zeros(2)}]
    >>> t = trace(net, params, jnp.zeros(2), jnp.ones(2))
    >>> t.layers[0].z, t.layers[0].dL_da
    (Array([0.5, 0.5], dtype=float32), Array([-0.25, -0.25], dtype=float32))
    """
    loss_fn, x, y = _check(net, params, x, y, loss, batch=False)
    one = x.ndim == 1
    X, Y = (x[None], y[None]) if one else (x, y)
    losses_b, caches, rows, dL_dx = _per_example_pass(net, params, X, Y, loss_fn)
    grads = _layer_map(layer.param_grads_per_example, net, params, caches, rows)
    layers = tuple(
        LayerTrace(c.z_prev, c.a, c.z, G, D, g["W"], g["b"], g.get("alpha"))
        for c, (G, D), g in zip(caches, rows, grads)
    )
    if one:  # the example's own arrays, without the batch axis of one
        layers, dL_dx = jax.tree.map(lambda v: v[0], (layers, dL_dx))
    return Trace(jnp.mean(losses_b), layers, dL_dx, net)
