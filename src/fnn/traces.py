r"""Every intermediate of one forward and backward pass, printable and drawable (S23).

:func:`backprop_trace` runs the per-example engine of :mod:`fnn.extensions` once and keeps
everything it computes, per layer ``i`` and example ``b``::

    z⁽ⁱ⁻¹⁾, a⁽ⁱ⁾ = W⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ + b⁽ⁱ⁾, z⁽ⁱ⁾ = f(a⁽ⁱ⁾), ∂L_b/∂z⁽ⁱ⁾,
    δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾, ∂L_b/∂W⁽ⁱ⁾ = δ⁽ⁱ⁾ ⊗ z⁽ⁱ⁻¹⁾, ∂L_b/∂b⁽ⁱ⁾ = δ⁽ⁱ⁾  (and ∂L_b/∂α)

— the numbers of a hand calculation. A :class:`Trace` prints as a table per layer
(``print(t)``), draws itself as the network with those numbers on its units and edges
(:meth:`Trace.plot`, and an SVG picture in a notebook; :mod:`fnn.draw`), and names the
first quantity that became NaN or infinite (:meth:`Trace.first_nonfinite`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import draw, extensions, layer
from fnn.network import MLP

__all__ = ["LayerTrace", "NonFinite", "Trace", "backprop_trace"]


class LayerTrace(NamedTuple):
    """One layer ``a = W z_prev + b``, ``z = f(a)`` in one forward and backward pass (S23).
    Per example: a leading batch axis when the trace is of a batch."""

    z_prev: jax.Array
    """The layer's input ``z⁽ⁱ⁻¹⁾`` (``x`` for the first layer)."""
    a: jax.Array
    """The pre-activation ``a⁽ⁱ⁾ = W z⁽ⁱ⁻¹⁾ + b``."""
    z: jax.Array
    """The output ``z⁽ⁱ⁾ = f(a⁽ⁱ⁾)``."""
    dL_dz: jax.Array
    """``∂L_b/∂z⁽ⁱ⁾``, the gradient coming down into the layer's output."""
    dL_da: jax.Array
    """``δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾ = ∂L_b/∂z⁽ⁱ⁾ · J_f(a⁽ⁱ⁾)``."""
    dL_dW: jax.Array
    """``∂L_b/∂W⁽ⁱ⁾ = δ⁽ⁱ⁾ ⊗ z⁽ⁱ⁻¹⁾``."""
    dL_db: jax.Array
    """``∂L_b/∂b⁽ⁱ⁾ = δ⁽ⁱ⁾``."""
    dL_dalpha: jax.Array | None = None
    """``∂L_b/∂α`` (PReLU only; ``None`` otherwise)."""


_LEGEND = (
    "a = W z_prev + b, z = f(a), dL_dz = ∂L_b/∂z, dL_da = δ = ∂L_b/∂a = dL_dz · J_f(a),\n"
    "dL_dW = δ ⊗ z_prev, dL_db = δ, dL_dalpha = ∂L_b/∂α; L_b is one example's own loss"
)
_FORWARD, _BACKWARD = ("z_prev", "a", "z"), ("dL_dz", "dL_da", "dL_dW", "dL_db", "dL_dalpha")


class NonFinite(NamedTuple):
    """Where a trace first became non-finite: ``layer`` (1-based; ``None`` for the loss and
    ``dL_dx``), the field, the index of the first bad entry and its value."""

    layer: int | None
    """The layer, 1-based (``None`` for the loss and ``dL_dx``)."""
    quantity: str
    """The field that became non-finite (``"dL_da"``)."""
    index: tuple
    """The index of the field's first non-finite entry."""
    value: float
    """That entry's value (NaN or ±inf)."""

    def __str__(self) -> str:
        where = "" if self.layer is None else f"layer {self.layer}: "
        return f"{where}{self.quantity} = {self.value} at index {self.index}"


def _first_bad_entry(value) -> tuple | None:
    value = np.asarray(value)
    bad = np.flatnonzero(~np.isfinite(value))  # (argwhere finds nothing in a 0-d array)
    return None if not bad.size else tuple(int(k) for k in np.unravel_index(bad[0], value.shape))


def _show(v, precision: int, max_entries: int) -> str:
    """One field's values, or its min, max and norm when it has more than ``max_entries``."""
    v = np.asarray(v)
    if v.size > max_entries:
        return (
            f"min {v.min():.{precision}g}, max {v.max():.{precision}g}, "
            f"‖·‖ {np.linalg.norm(v):.{precision}g}"
        )
    text = np.array2string(v, precision=precision, separator=", ", max_line_width=200)
    return text.replace("\n", "\n" + " " * 26)


class Trace(NamedTuple):
    """Every intermediate of one forward and backward pass (S23): the batch-mean ``loss``,
    one :class:`LayerTrace` per layer, ``dL_dx = ∂L_b/∂x``, and the network (static).
    ``str(trace)`` is a table per layer; :meth:`plot` draws the network with one example's
    numbers on it (a notebook shows that picture); :meth:`first_nonfinite` finds where NaN
    began."""

    loss: jax.Array
    """The batch-mean loss."""
    layers: tuple[LayerTrace, ...]
    """One :class:`LayerTrace` per layer, from the input to the output."""
    dL_dx: jax.Array
    """``∂L_b/∂x``, the gradient with respect to the network input."""
    net: MLP
    """The network traced (static)."""

    @property
    def num_examples(self) -> int | None:
        """``B`` for the trace of a batch, ``None`` for the trace of one example ``(D,)``."""
        return None if np.ndim(self.dL_dx) == 1 else int(np.shape(self.dL_dx)[0])

    def _in_order(self):
        """``(layer, field, value)`` in the order the passes compute them: forward from
        layer 1 (its ``z_prev`` is x), the loss, then backward from layer N, each layer's δ
        and parameter gradients before the ``dL_dz`` of the layer below, then ``dL_dx``."""
        yield 1, "z_prev", self.layers[0].z_prev
        for i, t in enumerate(self.layers, 1):
            yield from ((i, q, getattr(t, q)) for q in _FORWARD[1:])
        yield None, "loss", self.loss
        for i, t in reversed(list(enumerate(self.layers, 1))):
            yield from ((i, q, getattr(t, q)) for q in _BACKWARD if getattr(t, q) is not None)
        yield None, "dL_dx", self.dL_dx

    def first_nonfinite(self) -> NonFinite | None:
        """The first non-finite quantity in the order the passes compute them, or ``None``.

        Forward, layer 1 to N: ``z_prev`` (only the input x), ``a``, ``z``; then the loss;
        backward, layer N to 1: ``dL_dz``, ``dL_da`` (δ), ``dL_dW``, ``dL_db``,
        ``dL_dalpha``; then ``dL_dx``. NaN in, NaN out, as in JAX; this is the opt-in check
        that says where: call it on a concrete trace, outside ``jax.jit``::

            if not jnp.isfinite(loss):
                print(fnn.backprop_trace(net, params, x, y, loss="l2").first_nonfinite())
        """
        for i, quantity, value in self._in_order():
            index = _first_bad_entry(value)
            if index is not None:
                return NonFinite(i, quantity, index, float(np.asarray(value)[index]))
        return None

    def table(self, precision: int = 6, max_entries: int = 16) -> str:
        """The trace as text, one block per layer: field, formula, shape, values rounded to
        ``precision`` digits; an array of more than ``max_entries`` numbers is summarised
        by its shape, min, max and norm."""
        n = 1 if self.num_examples is None else self.num_examples
        examples = f"{n} example" + ("" if n == 1 else "s")
        lines = [f"loss (batch mean) = {float(self.loss):.{precision}g}, {examples}", _LEGEND]
        for i, t in enumerate(self.layers, 1):
            D, M, f = self.net.sizes[i - 1], self.net.sizes[i], self.net.activations[i - 1]
            lines.append(f"layer {i}: {D} → {M}, {f}")
            for q in _FORWARD + _BACKWARD:
                v = getattr(t, q)
                if v is not None:
                    lines.append(f"  {q:10}{np.shape(v)!s:>12}  {_show(v, precision, max_entries)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, *, example: int = 0, max_units: int = draw.MAX_UNITS, ax=None):
        """One example's pass drawn on the network, a matplotlib figure
        (:func:`fnn.draw.trace_figure`): ``a``, ``z``, ``δ`` on the units, ``∂L/∂W`` on the
        edges. ``example`` indexes the batch; a layer wider than ``max_units`` is refused."""
        return draw.trace_figure(self, example=example, max_units=max_units, ax=ax)

    def svg(self, *, example: int = 0, max_units: int = draw.MAX_UNITS) -> str:
        """The same picture as an SVG document (:func:`fnn.draw.trace_svg`)."""
        return draw.trace_svg(self, example=example, max_units=max_units)

    def _repr_svg_(self) -> str | None:
        """A notebook shows the picture of the (first) example; a network too wide to draw,
        or a trace under ``jax.jit``, shows its text instead."""
        if max(self.net.sizes) > draw.MAX_UNITS or isinstance(self.loss, jax.core.Tracer):
            return None
        return self.svg()


def backprop_trace(net, params, x, y, *, loss="l2") -> Trace:
    r"""Every intermediate of one forward and backward pass, per layer and example (S23).

    For i = 1 … N, with ``L_b`` the loss of example b alone (not the batch mean)::

        z⁽ⁱ⁻¹⁾, a⁽ⁱ⁾ = W⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ + b⁽ⁱ⁾, z⁽ⁱ⁾ = f(a⁽ⁱ⁾), ∂L_b/∂z⁽ⁱ⁾,
        δ⁽ⁱ⁾ = ∂L_b/∂a⁽ⁱ⁾, ∂L_b/∂W⁽ⁱ⁾ = δ⁽ⁱ⁾ ⊗ z⁽ⁱ⁻¹⁾, ∂L_b/∂b⁽ⁱ⁾ = δ⁽ⁱ⁾  (and ∂L_b/∂α)

    — the numbers of a hand calculation, from the engines' own rules (:mod:`fnn.layer`).
    ``print(t)`` shows them as a table, ``t.plot()`` draws them on the network;
    :meth:`Trace.first_nonfinite` names the first layer and quantity that became NaN or
    infinite.

    Args:
      net, params, y, loss: as for :func:`fnn.value_and_grad`.
      x: one example ``(D,)`` (its hand calculation) or a batch ``(B, D)`` (every field
        gains a leading axis B).

    Returns:
      A :class:`Trace`: ``t.loss`` (the batch mean), ``t.layers[i - 1]`` a
      :class:`LayerTrace` for layer i, ``t.dL_dx``.

    Raises:
      TypeError, ValueError: as :func:`fnn.value_and_grad`.

    >>> import fnn
    >>> net = fnn.MLP((2, 2), ("sigmoid",))
    >>> params = [{"W": jnp.eye(2), "b": jnp.zeros(2)}]
    >>> t = backprop_trace(net, params, jnp.zeros(2), jnp.ones(2))
    >>> t.layers[0].z, t.layers[0].dL_da
    (Array([0.5, 0.5], dtype=float32), Array([-0.25, -0.25], dtype=float32))
    """
    loss_fn, X, Y, one = extensions.check_problem(net, params, x, y, loss)
    losses_b, caches, rows, dL_dx = extensions.per_example_pass(net, params, X, Y, loss_fn)
    grads = extensions.layer_map(layer.param_grads_per_example, net, params, caches, rows)
    layers = tuple(
        LayerTrace(c.z_prev, c.a, c.z, G, D, g["W"], g["b"], g.get("alpha"))
        for c, (G, D), g in zip(caches, rows, grads)
    )
    layers, dL_dx = extensions.drop_batch_axis((layers, dL_dx), one)
    return Trace(jnp.mean(losses_b), layers, dL_dx, net)
