r"""Runs of identical layers, run by ``jax.lax.scan``: compile time flat in depth (S4, S22).

Private machinery. Every engine loops over the layers with :func:`run_layers`, over the cut
that :func:`segments` makes: single layers, and runs of identical ``(M, M)`` layers whose
parameters :func:`group` stacks along a leading layer axis so that one ``jax.lax.scan``
runs them — the layer is compiled once, not once per layer. :func:`ungroup` gives the
public one-dict-per-layer layout back. The result is the same either way
(``tests/test_scan.py``).

What to scan is static configuration of the network, read from two fields of
:class:`fnn.MLP` (never from a global read while tracing):

* ``scan_min_layers`` (default 16; ``None``: never) — a run of at least this many identical
  layers is scanned. Measured on XLA:CPU (``benchmarks/run_all.py``): a scan costs a fixed
  ~70 ms of compile time, while XLA compiles the identical layers of an unrolled loop once
  and pays per layer only for tracing and its HLO passes; the scan pays from about a dozen
  layers on.
* ``scan_per_layer_results`` (default ``False``) — scan also where the engine returns one
  array per layer (the forward cache, the reverse gradient). Every per-layer array sliced
  out of a stacked result is one more XLA:CPU kernel to compile (~5 ms each), so these
  stay unrolled by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Layers", "Segment", "group", "layers", "run_layers", "segments", "ungroup"]


class Segment(NamedTuple):
    """Layers ``start … stop − 1`` of a network with their activation ``f``: one layer
    (``scan=False``), or a run of identical ``(M, M)`` layers, stacked and scanned."""

    start: int
    """The segment's first layer, 0-based."""
    stop: int
    """One past the segment's last layer."""
    f: str
    """The activation every layer of the segment has."""
    scan: bool
    """Whether the segment is a run of identical layers, stacked and scanned."""


def segments(net, *, per_layer_results: bool = False) -> tuple[Segment, ...]:
    """Cut ``net`` into single layers and runs of ≥ ``net.scan_min_layers`` identical layers.

    Layers are identical when they map ``M → M`` with the same ``M`` and the same activation:
    their parameters then stack into arrays with a leading layer axis, and one
    ``jax.lax.scan`` runs them all, so the layer is compiled once, not once per layer. Every
    engine cuts the network here. ``per_layer_results=True`` is for an engine that returns
    one array per layer: it gets scanned runs only if ``net.scan_per_layer_results``.

    >>> from fnn import MLP
    >>> net = MLP((3,) + (8,) * 17 + (2,), ("tanh",) * 17 + ("identity",))
    >>> [s[:2] for s in segments(net)], [s[:2] for s in segments(net, per_layer_results=True)][:3]
    ([(0, 1), (1, 17), (17, 18)], [(0, 1), (1, 2), (2, 3)])
    """
    min_run = net.scan_min_layers
    if min_run is None or (per_layer_results and not net.scan_per_layer_results):
        min_run = math.inf
    sizes, acts, out = net.sizes, net.activations, []
    start = 0
    while start < net.num_layers:
        stop = start + 1
        while (
            stop < net.num_layers
            and sizes[start] == sizes[start + 1] == sizes[stop + 1]
            and acts[stop] == acts[start]
        ):
            stop += 1
        if stop - start >= min_run:
            out.append(Segment(start, stop, acts[start], True))
        else:
            out.extend(Segment(i, i + 1, acts[i], False) for i in range(start, stop))
        start = stop
    return tuple(out)


def group(segs: Sequence[Segment], per_layer: Sequence) -> list:
    """One pytree per layer → one per segment: the layer's own, or the run's layers stacked
    along a new leading axis (``W`` of a run of L layers: ``(L, M, M)``)."""
    return [
        jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_layer[s.start : s.stop])
        if s.scan
        else per_layer[s.start]
        for s in segs
    ]


def ungroup(segs: Sequence[Segment], per_segment: Sequence) -> list:
    """The inverse of :func:`group`: one pytree per layer again (a run's stack sliced)."""
    per_layer = []
    for s, tree in zip(segs, per_segment):
        if s.scan:
            per_layer += [jax.tree.map(lambda t, k=k: t[k], tree) for k in range(s.stop - s.start)]
        else:
            per_layer.append(tree)
    return per_layer


Step = Callable[[Any, dict, str, Any], tuple[Any, Any]]


def run_layers(
    segs: Sequence[Segment], grouped: list, step: Step, carry, xs=None, *, reverse=False
):
    """Fold ``carry, y = step(carry, layer_params, f, x)`` over the layers.

    The loop of every engine: first to last layer (a forward pass, ``carry`` = ``z``), or last
    to first with ``reverse=True`` (a backward pass, ``carry`` = ``δ``). ``grouped`` are the
    parameters as :func:`group` stacks them for ``segs``; ``xs`` (optional) one input per
    segment, shaped like the ``ys`` of a forward fold (its cache, for a backward pass). A
    scanned run is one ``jax.lax.scan`` over its stacked parameters and inputs.

    Returns:
      ``(carry, ys)``: ``ys`` one output per segment, stacked over a run's layers
      (:func:`ungroup` gives one per layer).
    """
    xs = [None] * len(segs) if xs is None else xs
    ys = [None] * len(segs)
    for k in reversed(range(len(segs))) if reverse else range(len(segs)):

        def body(c, layer_and_x, f=segs[k].f):
            return step(c, layer_and_x[0], f, layer_and_x[1])

        if segs[k].scan:
            carry = _promote_carry(body, carry, (grouped[k], xs[k]))
            carry, ys[k] = jax.lax.scan(body, carry, (grouped[k], xs[k]), reverse=reverse)
        else:
            carry, ys[k] = body(carry, (grouped[k], xs[k]))
    return carry, ys


class Layers(NamedTuple):
    """A network's layers cut for folding: the one loop every engine runs (S4, S17, S18).

    ``layers(net, params)`` cuts and stacks once; :meth:`forward` and :meth:`backward` fold a
    rule of :mod:`fnn.layer` over them as it is, without an adapter, in the argument order
    of the layer rules: a forward rule ``rule(p, f, carry[, x]) → (carry, y)`` (as
    :func:`fnn.layer.forward_batch`), a backward rule ``rule(p, f, x, carry) → (y, carry)``
    (as :func:`fnn.layer.vjp_batch`: the cache first, the cotangent second). A second layer
    kind is one more rule in :mod:`fnn.layer`, not one more loop here.
    """

    segs: tuple[Segment, ...]
    """The network cut into :class:`Segment` s, input to output."""
    params: list
    """One parameter pytree per segment, a run's layers stacked on a leading axis."""

    def forward(self, rule: Callable, carry, xs=None, *, keep: bool = True):
        """Fold ``rule`` first layer to last. ``xs``: one input per segment (or ``None``).
        ``keep=False``: the rule returns only the new carry (a JVP's ``(z, ż)``).
        Returns ``(carry, ys)``, ``ys`` one per segment (:meth:`per_layer` spreads them)."""

        def step(c, p, f, x):
            out = rule(p, f, c) if xs is None else rule(p, f, c, x)
            return out if keep else (out, None)

        return run_layers(self.segs, self.params, step, carry, xs)

    def backward(self, rule: Callable, carry, xs):
        """Fold ``rule(p, f, x, carry) → (y, carry)`` last layer to first over ``xs`` (the
        forward fold's ``ys``). Returns ``(carry, ys)``."""

        def step(c, p, f, x):
            y, c = rule(p, f, x, c)
            return c, y

        return run_layers(self.segs, self.params, step, carry, xs, reverse=True)

    def per_layer(self, per_segment: Sequence) -> list:
        """One pytree per layer from one per segment (:func:`ungroup`)."""
        return ungroup(self.segs, per_segment)


def layers(net, params, *, per_layer_results: bool = False) -> Layers:
    """``net``'s layers with ``params``, cut by :func:`segments` and stacked by :func:`group`.

    ``per_layer_results=True`` for a fold whose per-layer outputs the caller returns (a
    cache, gradients): runs are then scanned only if ``net.scan_per_layer_results``."""
    segs = segments(net, per_layer_results=per_layer_results)
    return Layers(segs, group(segs, params))


def _promote_carry(body, carry, stacked):
    """``carry`` in the dtypes one layer makes of it (float32 ``x``, float64 ``W``: float64),
    as a scan needs; the unrolled loop promotes the same way in its first layer."""
    first = jax.tree.map(lambda t: t[0], stacked)
    out = jax.eval_shape(lambda c: body(c, first)[0], carry)
    return jax.tree.map(lambda c, o: jnp.asarray(c, o.dtype), carry, out)
