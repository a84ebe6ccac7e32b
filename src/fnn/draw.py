r"""A picture of one forward and backward pass: the network's units with ``a``, ``z`` and
``δ`` on them and ``∂L/∂W`` on the edges (S23).

The layered twin of micrograd's ``draw_dot``: where micrograd draws every scalar of its graph
with its ``data`` and ``grad``, this draws the lecture's picture of a network, one column per
layer, each unit ``m`` of layer ``i`` labelled with

.. math::  a_m^{(i)} = W_{m:}^{(i)} z^{(i-1)} + b_m^{(i)}, \quad z_m^{(i)} = f(a_m^{(i)}),
           \quad δ_m^{(i)} = ∂L/∂a_m^{(i)} = ∂L/∂b_m^{(i)}

and each edge ``d → m`` carrying ``∂L/∂W_{md}^{(i)} = δ_m^{(i)} z_d^{(i-1)}``: its width and
colour show ``|∂L/∂W|`` (red for positive, blue for negative, purple where not finite). The
inputs carry ``x_d`` and ``∂L/∂x_d``. One example at a time (``example=``), of a small
network: a layer wider than ``max_units`` is refused (:func:`fnn._checks.check_limit`).

One layout (:func:`picture`), two renderers: :func:`trace_figure` (matplotlib, imported
when called: the ``figures`` extra) and :func:`trace_svg` (an SVG document built as text, no
dependency; a notebook shows it for :class:`fnn.traces.Trace`).
"""

from __future__ import annotations

import html
from typing import NamedTuple

import jax
import numpy as np

from fnn import _checks

__all__ = ["MAX_UNITS", "Edge", "Picture", "Unit", "picture", "trace_figure", "trace_svg"]

MAX_UNITS = 10
"""The widest layer drawn by default: beyond it labels no longer fit (``max_units=``)."""

_DX, _DY, _BOX_W, _BOX_H, _MARGIN, _HEAD = 240, 84, 118, 58, 24, 40
_FILL = {"input": "#eeeeee", "hidden": "#dbe9f6", "output": "#fde3c8", "loss": "#f4f4f4"}


class Unit(NamedTuple):
    """One box: its centre ``(x, y)`` in pixels (y down), kind and lines of text."""

    x: float
    """The centre's horizontal position, in pixels from the left."""
    y: float
    """The centre's vertical position, in pixels from the top (y down)."""
    kind: str
    """What the box is: ``"input"``, ``"hidden"``, ``"output"`` or ``"loss"``."""
    lines: tuple[str, ...]
    """The box's lines of text, top to bottom."""


class Edge(NamedTuple):
    """The weight ``W⁽ⁱ⁾_{md}`` from unit ``d`` of column ``i − 1`` to unit ``m`` of column
    ``i``, with its ``∂L/∂W`` and how it is drawn."""

    x0: float
    """The left end's horizontal position, in pixels (at unit ``d``'s box)."""
    y0: float
    """The left end's vertical position, in pixels (y down)."""
    x1: float
    """The right end's horizontal position, in pixels (at unit ``m``'s box)."""
    y1: float
    """The right end's vertical position, in pixels (y down)."""
    layer: int
    """The layer ``i`` of the weight, 1-based."""
    m: int
    """The receiving unit's index in layer ``i``, 0-based (the row of ``W⁽ⁱ⁾``)."""
    d: int
    """The sending unit's index in layer ``i − 1``, 0-based (the column of ``W⁽ⁱ⁾``)."""
    grad: float
    """The edge's ``∂L/∂W⁽ⁱ⁾_{md} = δ_m⁽ⁱ⁾ z_d⁽ⁱ⁻¹⁾``."""
    width: float
    """The line width in pixels, growing with ``|∂L/∂W|`` relative to the largest."""
    colour: str
    """The line colour: red for a positive ``∂L/∂W``, blue for negative, purple if not finite."""
    opacity: float
    """The line opacity, 0 to 1, growing with ``|∂L/∂W|`` relative to the largest."""
    label_at: float
    """Where along the edge its label sits, 0 (left) to 1 (right)."""


class Picture(NamedTuple):
    """Everything a renderer draws, in pixels."""

    width: float
    """The picture's width in pixels."""
    height: float
    """The picture's height in pixels."""
    headers: tuple[tuple[float, str], ...]
    """One ``(x, text)`` above each column."""
    units: tuple[Unit, ...]
    """Every :class:`Unit`, then the loss box last."""
    edges: tuple[Edge, ...]
    """Every :class:`Edge`, one per weight."""


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _example_values(trace, example):
    """The arrays of one example: ``(x, dL_dx, [(a, z, δ, ∂L/∂W, ∂L/∂α)], L)`` in NumPy."""
    batch = np.ndim(trace.dL_dx) == 2
    n = int(np.shape(trace.dL_dx)[0]) if batch else 1
    if isinstance(example, bool) or not isinstance(example, (int, np.integer)):
        raise TypeError(f"example must be an int; got {example!r}.")
    if not -n <= example < n:
        what = f"a batch of {n}" if batch else "one example (use example=0)"
        raise ValueError(f"example must be in [0, {n}) for the trace of {what}; got {example}.")

    def pick(v):
        v = np.asarray(v)
        return v[example] if batch else v

    layers = [
        (pick(t.a), pick(t.z), pick(t.dL_da), pick(t.dL_dW), t.dL_dalpha) for t in trace.layers
    ]
    alphas = [None if g is None else float(pick(g)) for *_, g in layers]
    layers = [(*rest, alpha) for (*rest, _), alpha in zip(layers, alphas)]
    return pick(trace.layers[0].z_prev), pick(trace.dL_dx), layers, float(trace.loss)


def _edge_style(grad: float, largest: float) -> tuple[float, str, float]:
    """Width, colour and opacity of an edge from ``|∂L/∂W|`` relative to the largest."""
    if not np.isfinite(grad):
        return 2.5, "#9467bd", 1.0
    r = abs(grad) / largest if largest > 0 else 0.0
    colour = "#d62728" if grad > 0 else "#1f77b4" if grad < 0 else "#999999"
    return 0.6 + 4.4 * r, colour, 0.35 + 0.65 * r


def _column_y(k: int, n: int, tallest: int) -> float:
    return _HEAD + _MARGIN + (tallest - n) * _DY / 2 + k * _DY + _BOX_H / 2


def _edges(sizes, layers, tallest) -> list[Edge]:
    grads = np.concatenate([np.ravel(g) for _, _, _, g, _ in layers])
    finite = np.abs(grads[np.isfinite(grads)])
    largest = float(finite.max()) if finite.size else 0.0
    edges = []
    for i, (_, _, _, dW, _) in enumerate(layers, 1):
        D, M = sizes[i - 1], sizes[i]
        x0, x1 = _MARGIN + _BOX_W + (i - 1) * _DX, _MARGIN + (i - 1) * _DX + _DX
        for m in range(M):
            for d in range(D):
                g = float(dW[m, d])
                width, colour, opacity = _edge_style(g, largest)
                y0, y1 = _column_y(d, D, tallest), _column_y(m, M, tallest)
                at = 0.3 + 0.45 * (d + 0.5) / D  # labels into one unit spread along the edges
                edges.append(Edge(x0, y0, x1, y1, i, m, d, g, width, colour, opacity, at))
    return edges


def picture(trace, *, example: int = 0, max_units: int = MAX_UNITS) -> Picture:
    """The layout of one example's pass: boxes for the units and the loss, edges for the
    weights (see the module's docstring). ``trace`` is a concrete :class:`fnn.traces.Trace`.

    Raises:
      ValueError: a layer wider than ``max_units``; ``example`` out of range.
      TypeError: ``example`` not an int; a trace under ``jax.jit`` (its values are unknown).
    """
    max_units = _checks.check_positive_int(max_units, "max_units")
    sizes = tuple(trace.net.sizes)
    instead = "print(trace) shows every number as a table."
    what = "the widest layer"
    _checks.check_limit(
        max(sizes), max_units, name="max_units", what=what, instead=instead, unit="units"
    )
    if isinstance(trace.loss, jax.core.Tracer):
        raise TypeError("trace must be concrete to draw: call it outside jax.jit.")
    x, dL_dx, layers, loss = _example_values(trace, example)
    tallest, N = max(sizes), len(layers)
    units = []
    for d in range(sizes[0]):
        lines = (f"x{d + 1} = {_fmt(x[d])}", f"∂L/∂x = {_fmt(dL_dx[d])}")
        units.append(Unit(_MARGIN + _BOX_W / 2, _column_y(d, sizes[0], tallest), "input", lines))
    headers = [(_MARGIN + _BOX_W / 2, "input x")]
    for i, (a, z, delta, _, alpha) in enumerate(layers, 1):
        cx = _MARGIN + i * _DX + _BOX_W / 2
        kind = "output" if i == N else "hidden"
        for m in range(sizes[i]):
            lines = (f"a = {_fmt(a[m])}", f"z = {_fmt(z[m])}", f"δ = {_fmt(delta[m])}")
            units.append(Unit(cx, _column_y(m, sizes[i], tallest), kind, lines))
        f = trace.net.activations[i - 1]
        head = f"layer {i}: {getattr(f, 'name', f)}"
        headers.append((cx, head if alpha is None else f"{head}, ∂L/∂α = {_fmt(alpha)}"))
    cx = _MARGIN + (N + 1) * _DX + _BOX_W / 2
    mean = "" if np.ndim(trace.dL_dx) == 1 else " (batch mean)"
    units.append(Unit(cx, _column_y(0, 1, tallest), "loss", (f"L{mean}", f"= {_fmt(loss)}")))
    headers.append((cx, "loss"))
    width = 2 * _MARGIN + (N + 1) * _DX + _BOX_W
    height = _HEAD + _MARGIN + tallest * _DY
    return Picture(
        width, height, tuple(headers), tuple(units), tuple(_edges(sizes, layers, tallest))
    )


def _to_loss(pic: Picture):
    """``(x0, y0, x1, y1)`` from every output unit to the loss box."""
    loss = pic.units[-1]
    return [
        (u.x + _BOX_W / 2, u.y, loss.x - _BOX_W / 2, loss.y)
        for u in pic.units
        if u.kind == "output"
    ]


def trace_figure(trace, *, example: int = 0, max_units: int = MAX_UNITS, ax=None):
    """The picture of :func:`picture` as a matplotlib figure (one ``FancyBboxPatch`` per
    unit, gid ``"unit"``, the loss's gid ``"loss"``; one line per weight, gid ``"edge"``,
    with its ``∂L/∂W`` as a text, gid ``"edge-label"``). Draws into ``ax`` if given.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    pic = picture(trace, example=example, max_units=max_units)
    if ax is None:
        ax = plt.subplots(figsize=(pic.width / 100, pic.height / 100), dpi=100)[1]
    ax.set_xlim(0, pic.width)
    ax.set_ylim(pic.height, 0)
    ax.set_axis_off()
    centred = {"ha": "center", "va": "center"}
    halo = {"fc": "white", "ec": "none", "pad": 0.5}
    for e in pic.edges:
        style = {"color": e.colour, "lw": e.width, "alpha": e.opacity, "zorder": 1}
        ax.plot([e.x0, e.x1], [e.y0, e.y1], gid="edge", solid_capstyle="round", **style)
        lx, ly = e.x0 + e.label_at * (e.x1 - e.x0), e.y0 + e.label_at * (e.y1 - e.y0)
        label = _fmt(e.grad)
        ax.text(lx, ly, label, fontsize=6.5, color=e.colour, bbox=halo, zorder=3, **centred)
        ax.texts[-1].set_gid("edge-label")
    for x0, y0, x1, y1 in _to_loss(pic):
        ax.plot([x0, x1], [y0, y1], color="#999999", lw=0.8, ls="--", zorder=1, gid="to-loss")
    for u in pic.units:
        corner = (u.x - _BOX_W / 2, u.y - _BOX_H / 2)
        box = FancyBboxPatch(corner, _BOX_W, _BOX_H, boxstyle="round,pad=0,rounding_size=8")
        box.set(fc=_FILL[u.kind], ec="#555555", lw=0.8, zorder=2)
        box.set_gid("loss" if u.kind == "loss" else "unit")
        ax.add_patch(box)
        text = "\n".join(u.lines)
        ax.text(
            u.x, u.y, text, fontsize=7.5, zorder=4, linespacing=1.3, gid="unit-label", **centred
        )
    for x, text in pic.headers:
        ax.text(x, _HEAD / 2 + 4, text, fontsize=8.5, gid="header", **centred)
    ax.set_title("∂L/∂W on the edges: red > 0, blue < 0, width ∝ |∂L/∂W|", fontsize=8)
    return ax.figure


def _svg_text(x, y, lines, cls, size, colour="#222222") -> str:
    halo = ' stroke="white" stroke-width="4" paint-order="stroke"' if cls == "edge-label" else ""
    first = (1 - len(lines)) * 0.65  # em: centre the block of lines on y
    spans = "".join(
        f'<tspan x="{x:.1f}" dy="{first if k == 0 else 1.3:.2f}em">{html.escape(t)}</tspan>'
        for k, t in enumerate(lines)
    )
    return (
        f'<text class="{cls}" x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}" '
        f'text-anchor="middle" dominant-baseline="central"{halo}>{spans}</text>'
    )


def trace_svg(trace, *, example: int = 0, max_units: int = MAX_UNITS) -> str:
    """The picture of :func:`picture` as an SVG document (a string; no dependency). Units
    are ``<rect class="unit">`` (the loss ``class="loss"``), weights ``<line class="edge">``
    with a ``<title>`` and a ``<text class="edge-label">`` each."""
    pic = picture(trace, example=example, max_units=max_units)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{pic.width:.0f}" '
        f'height="{pic.height:.0f}" viewBox="0 0 {pic.width:.0f} {pic.height:.0f}" '
        'font-family="sans-serif">',
        f'<rect width="{pic.width:.0f}" height="{pic.height:.0f}" fill="white"/>',
    ]
    for e in pic.edges:
        title = html.escape(f"∂L/∂W⁽{e.layer}⁾[{e.m}, {e.d}] = {e.grad!r}")
        out.append(
            f'<line class="edge" x1="{e.x0:.1f}" y1="{e.y0:.1f}" x2="{e.x1:.1f}" '
            f'y2="{e.y1:.1f}" stroke="{e.colour}" stroke-width="{e.width:.2f}" '
            f'stroke-opacity="{e.opacity:.2f}" stroke-linecap="round"><title>{title}</title></line>'
        )
    for x0, y0, x1, y1 in _to_loss(pic):
        out.append(
            f'<line class="to-loss" x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
            'stroke="#999999" stroke-width="0.8" stroke-dasharray="4 3"/>'
        )
    for e in pic.edges:
        lx, ly = e.x0 + e.label_at * (e.x1 - e.x0), e.y0 + e.label_at * (e.y1 - e.y0)
        out.append(_svg_text(lx, ly, [_fmt(e.grad)], "edge-label", 9, e.colour))
    for u in pic.units:
        cls = "loss" if u.kind == "loss" else "unit"
        out.append(
            f'<rect class="{cls}" x="{u.x - _BOX_W / 2:.1f}" y="{u.y - _BOX_H / 2:.1f}" '
            f'width="{_BOX_W}" height="{_BOX_H}" rx="8" fill="{_FILL[u.kind]}" '
            'stroke="#555555" stroke-width="0.8"/>'
        )
        out.append(_svg_text(u.x, u.y, u.lines, "unit-label", 11))
    out += [_svg_text(x, _HEAD / 2 + 4, [t], "header", 12) for x, t in pic.headers]
    out.append("</svg>")
    return "\n".join(out)
