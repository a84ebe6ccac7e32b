r"""Derivatives on a computation graph: the sum over all paths against dynamic programming
(S12, S13).

A :class:`Graph` is a DAG of scalar nodes; each :class:`Node` holds its function of its
parents and, beside it, its local partial derivatives ``∂node/∂parent`` (as micrograd keeps
``_backward`` beside the forward). The forward pass (:func:`evaluate`) stores every value;
:func:`local_partials` labels every edge with its partial derivative. Three algorithms then
combine the same labels into ``∂L/∂s`` — with every multiplication and addition counted:

* :func:`sum_over_paths` — the lecture's expansion: one product per path from ``s`` to
  ``L``, summed. The number of paths grows exponentially with the depth.
* :func:`forward_accumulation` — dynamic programming from the input:
  ``∂n/∂s = Σ_{p ∈ parents(n)} ∂n/∂p · ∂p/∂s`` for every node n, in topological order.
* :func:`backward_accumulation` — dynamic programming from the output (backpropagation):
  ``∂L/∂n = Σ_{c ∈ children(n)} ∂L/∂c · ∂c/∂n`` for every node n, in reverse order.

Both dynamic programs cost one multiplication per edge. The S12 chain rules are here too:
:func:`chain_rule` (1-D) and :func:`total_derivative` (along a path ``(x(s), y(s))``).
The node functions use ``jax.numpy``, so ``jax.grad`` of :func:`evaluate` witnesses all of
it in the tests; the algorithms themselves are plain Python over whatever numbers they get.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from fnn import activations
from fnn._checks import check_limit, check_positive_int

__all__ = [
    "MAX_PATHS",
    "Accumulation",
    "Graph",
    "Node",
    "Ops",
    "PathSum",
    "backward_accumulation",
    "chain_rule",
    "count_paths",
    "evaluate",
    "forward_accumulation",
    "layered_graph",
    "lecture_graph",
    "local_partials",
    "make_graph",
    "path_graph",
    "paths",
    "random_graph",
    "sum_over_paths",
    "total_derivative",
]


MAX_PATHS = 100_000
"""The most paths :func:`sum_over_paths` enumerates by default; a graph with more is refused
(S13)."""

# ---------------------------------------------------------------------------------------
# S12: the chain rule in 1-D and the total derivative along a path.
# ---------------------------------------------------------------------------------------


def chain_rule(g_prime: Callable, f: Callable, f_prime: Callable, x):
    """The 1-D chain rule ``(g ∘ f)′(x) = g′(f(x)) · f′(x)`` (S12).

    >>> float(chain_rule(jnp.cos, lambda x: x**2, lambda x: 2 * x, 0.0))
    0.0
    """
    return g_prime(f(x)) * f_prime(x)


def total_derivative(partials: Sequence, tangents: Sequence):
    """The total derivative of ``f(x₁(s), …, xₙ(s))`` along a path (S12):
    ``∂f/∂s = Σᵢ ∂f/∂xᵢ · ∂xᵢ/∂s`` — one term for each way s influences f.

    Args:
      partials: ``(∂f/∂x, ∂f/∂y, …)`` at the point ``(x(s), y(s), …)``.
      tangents: ``(∂x/∂s, ∂y/∂s, …)``.

    Raises:
      ValueError: the two sequences differ in length.

    >>> total_derivative((2.0, 3.0), (1.0, -1.0))  # f = 2x + 3y along x = s, y = −s
    -1.0
    """
    if len(partials) != len(tangents):
        raise ValueError(
            f"partials and tangents must have one entry per input of f; got {len(partials)} "
            f"partials and {len(tangents)} tangents."
        )
    return sum(df_dx * dx_ds for df_dx, dx_ds in zip(partials, tangents))


# ---------------------------------------------------------------------------------------
# S13: the graph, its forward pass and its edge labels.
# ---------------------------------------------------------------------------------------


class Node(NamedTuple):
    """A scalar node ``name = fn(*parents)`` with its local partials
    ``partials(*parents) = (∂name/∂parent₁, …)`` (S13)."""

    name: str
    """The node's name, unique in its graph."""
    parents: tuple[str, ...]
    """The names of the nodes it is computed from, each once."""
    fn: Callable
    """``fn(*parents)``: the node's value from its parents' values."""
    partials: Callable
    """``partials(*parents)``: the tuple ``(∂name/∂parent₁, …)``, one per parent."""


class Graph(NamedTuple):
    """A computation graph (S13): one input node and the other nodes in topological order;
    the last node is the output ``L``. Build it with :func:`make_graph` to have it checked."""

    input: str
    """The input node's name ``s``."""
    nodes: tuple[Node, ...]
    """The other nodes, in topological order; the last is the output."""

    @property
    def output(self) -> str:
        """The output node's name: the last node's."""
        return self.nodes[-1].name

    @property
    def num_edges(self) -> int:
        """The number of edges: one per parent of each node."""
        return sum(len(node.parents) for node in self.nodes)


def make_graph(input: str, nodes: Sequence[Node]) -> Graph:
    """A :class:`Graph`, checked (S13): names unique, parents defined before use, no repeats.

    Raises:
      ValueError: no nodes, a duplicate name, a node without parents, a repeated parent,
        or a parent that is not the input or an earlier node.
    """
    if not nodes:
        raise ValueError(f"nodes must hold at least the output node; got {nodes!r}.")
    seen = {input}
    for node in nodes:
        if node.name in seen:
            raise ValueError(f"node names must be unique; got {node.name!r} twice.")
        if not node.parents or len(set(node.parents)) != len(node.parents):
            raise ValueError(
                f"node {node.name!r} must have at least one parent, each once; got {node.parents}."
            )
        for p in node.parents:
            if p not in seen:
                raise ValueError(
                    f"parent {p!r} of node {node.name!r} must be the input or an earlier "
                    f"node (topological order); defined so far: {sorted(seen)}."
                )
        seen.add(node.name)
    return Graph(input, tuple(nodes))


def evaluate(graph: Graph, s) -> dict:
    """The forward pass (S13): every node's value for the input value ``s``."""
    values = {graph.input: s}
    for node in graph.nodes:
        values[node.name] = node.fn(*(values[p] for p in node.parents))
    return values


def local_partials(graph: Graph, values: Mapping) -> dict:
    """Every edge's label ``∂child/∂parent``, keyed ``(child, parent)``, at ``values`` (S13)."""
    labels = {}
    for node in graph.nodes:
        for p, d in zip(node.parents, node.partials(*(values[p] for p in node.parents))):
            labels[node.name, p] = d
    return labels


def _children(graph: Graph) -> dict[str, list[str]]:
    children = {graph.input: [], **{node.name: [] for node in graph.nodes}}
    for node in graph.nodes:
        for p in node.parents:
            children[p].append(node.name)
    return children


# ---------------------------------------------------------------------------------------
# The three algorithms, with their operations counted.
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ops:
    """Counts the multiplications and additions an algorithm performs on derivatives (S13)."""

    multiplies: int = 0
    """The multiplications counted so far."""
    additions: int = 0
    """The additions counted so far."""

    def mul(self, a, b):
        """``a · b``, counted as one multiplication."""
        self.multiplies += 1
        return a * b

    def add(self, a, b):
        """``a + b``, counted as one addition."""
        self.additions += 1
        return a + b

    @property
    def total(self) -> int:
        """Multiplications and additions together."""
        return self.multiplies + self.additions


class PathSum(NamedTuple):
    """:func:`sum_over_paths`: ``∂L/∂s``, the number of paths, the operations (S13)."""

    derivative: object
    """``∂L/∂s``, the sum over the paths of the products of their edge labels."""
    num_paths: int
    """The number of input→output paths summed over."""
    ops: Ops
    """The operations the sum took."""


class Accumulation(NamedTuple):
    """A dynamic program's derivatives (node name → value) and its operations (S13)."""

    derivatives: dict
    """The derivatives by node name: ``∂node/∂s`` forward, ``∂L/∂node`` backward."""
    ops: Ops
    """The operations it took."""


def paths(graph: Graph) -> Iterator[tuple[str, ...]]:
    """Every path from the input to the output, as a tuple of node names (S13)."""
    children = _children(graph)

    def extend(path):
        if path[-1] == graph.output:
            yield path
        for c in children[path[-1]]:
            yield from extend((*path, c))

    yield from extend((graph.input,))


def count_paths(graph: Graph) -> int:
    """The number of input→output paths, by dynamic programming (never enumerated, S13)."""
    count = {graph.input: 1}
    for node in graph.nodes:
        count[node.name] = sum(count[p] for p in node.parents)
    return count[graph.output]


def sum_over_paths(graph: Graph, partials: Mapping, *, max_paths: int = MAX_PATHS) -> PathSum:
    r"""``∂L/∂s`` as the lecture expands it (S13): the sum over every path of the products of
    the local partials along it.

    .. math::  \frac{∂L}{∂s} = \sum_{\text{paths } s = n_0 → n_1 → … → n_k = L}
               \;\prod_{j=1}^{k} \frac{∂n_j}{∂n_{j-1}}

    ``k − 1`` multiplications per path and one addition per path after the first. The
    paths are counted first, by dynamic programming (:func:`count_paths`, one addition per
    edge); their number grows exponentially with the depth (``width^depth`` in a layered
    graph), so more than ``max_paths`` of them are refused rather than enumerated.

    Args:
      graph: the computation graph.
      partials: every edge's label ``∂child/∂parent``, as :func:`local_partials` gives them.
      max_paths: the most paths to enumerate (default ``MAX_PATHS`` = 100 000, about a
        second of Python with float labels).

    Raises:
      ValueError: ``max_paths`` is not a positive integer, or the graph has more paths than
        ``max_paths`` — :func:`forward_accumulation` and :func:`backward_accumulation` give
        the same derivative with one multiplication per edge.

    >>> sum_over_paths(lecture_graph(), {}, max_paths=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: sum_over_paths (the count grows exponentially with the depth) needs 6 paths, ...
    """
    max_paths = check_positive_int(max_paths, "max_paths")
    num_paths = count_paths(graph)
    check_limit(
        num_paths,
        max_paths,
        name="max_paths",
        what="sum_over_paths (the count grows exponentially with the depth)",
        instead=(
            f"Use forward_accumulation or backward_accumulation: one multiplication per edge "
            f"({graph.num_edges} edges here)."
        ),
        unit="paths",
    )
    ops, total, num_paths = Ops(), 0.0, 0
    for path in paths(graph):
        factors = (partials[child, parent] for parent, child in itertools.pairwise(path))
        term = functools.reduce(ops.mul, factors)
        total = term if num_paths == 0 else ops.add(total, term)
        num_paths += 1
    return PathSum(total, num_paths, ops)


def forward_accumulation(graph: Graph, partials: Mapping) -> Accumulation:
    r"""Every node's derivative with respect to the input, from the input on (S13):

    .. math::  \frac{∂n}{∂s} = \sum_{p ∈ \mathrm{parents}(n)} \frac{∂n}{∂p}\frac{∂p}{∂s},
               \qquad \frac{∂s}{∂s} = 1

    One multiplication per edge; the output's entry is ``∂L/∂s``.
    """
    ops, d_ds = Ops(), {graph.input: 1.0}
    for node in graph.nodes:
        terms = (ops.mul(partials[node.name, p], d_ds[p]) for p in node.parents)
        d_ds[node.name] = functools.reduce(ops.add, terms)
    return Accumulation(d_ds, ops)


def backward_accumulation(graph: Graph, partials: Mapping) -> Accumulation:
    r"""The output's derivative with respect to every node, from the output back
    (backpropagation, S13):

    .. math::  \frac{∂L}{∂n} = \sum_{c ∈ \mathrm{children}(n)} \frac{∂L}{∂c}\frac{∂c}{∂n},
               \qquad \frac{∂L}{∂L} = 1

    One multiplication per edge; the input's entry is ``∂L/∂s``. A node from which L
    cannot be reached gets 0.
    """
    names = [graph.input, *(node.name for node in graph.nodes)]
    ops, children, dL = Ops(), _children(graph), {graph.output: 1.0}
    for name in reversed(names[:-1]):  # reverse topological order, after L
        terms = [ops.mul(dL[c], partials[c, name]) for c in children[name] if c in dL]
        if terms:
            dL[name] = functools.reduce(ops.add, terms)
    return Accumulation({n: dL.get(n, 0.0) for n in names}, ops)


# ---------------------------------------------------------------------------------------
# Graphs: the lecture's, S12's path, layered graphs (depth d, width w), random DAGs.
# ---------------------------------------------------------------------------------------


def lecture_graph() -> Graph:
    """The lecture's graph s → x, y, z → f → g, h → L (S13), with its 6 paths:

    ``x = s²``, ``y = sin s``, ``z = e^{−s}``, ``f = x y + z²``, ``g = tanh f``,
    ``h = cos f``, ``L = g h``.
    """
    return make_graph("s", [
        Node("x", ("s",), lambda s: s**2, lambda s: (2 * s,)),
        Node("y", ("s",), jnp.sin, lambda s: (jnp.cos(s),)),
        Node("z", ("s",), lambda s: jnp.exp(-s), lambda s: (-jnp.exp(-s),)),
        Node("f", ("x", "y", "z"), lambda x, y, z: x * y + z**2, lambda x, y, z: (y, x, 2 * z)),
        Node("g", ("f",), jnp.tanh, lambda f: (1 - jnp.tanh(f) ** 2,)),
        Node("h", ("f",), jnp.cos, lambda f: (-jnp.sin(f),)),
        Node("L", ("g", "h"), lambda g, h: g * h, lambda g, h: (h, g)),
    ])  # fmt: skip


def path_graph() -> Graph:
    """S12's picture: ``f(x, y) = x² y`` along the path ``x = cos s``, ``y = sin s`` —
    two paths from s to f, one through x and one through y."""
    return make_graph("s", [
        Node("x", ("s",), jnp.cos, lambda s: (-jnp.sin(s),)),
        Node("y", ("s",), jnp.sin, lambda s: (jnp.cos(s),)),
        Node("f", ("x", "y"), lambda x, y: x**2 * y, lambda x, y: (2 * x * y, x**2)),
    ])  # fmt: skip


# φ and φ′ for the generated nodes n = φ(Σⱼ cⱼ pⱼ): fnn's own activations and derivatives.
_PHI = {name: activations.get(name) for name in ("sin", "tanh", "softplus")}


def _weighted_node(name: str, parents: tuple[str, ...], c: np.ndarray, phi: str) -> Node:
    """``n = φ(Σⱼ cⱼ pⱼ)`` with ``∂n/∂pⱼ = φ′(Σⱼ cⱼ pⱼ) cⱼ``."""
    f, f_prime = _PHI[phi].fn, _PHI[phi].derivative
    c = tuple(float(v) for v in c)

    def fn(*p):
        return f(sum(cj * pj for cj, pj in zip(c, p)))

    def partials(*p):
        d = f_prime(sum(cj * pj for cj, pj in zip(c, p)))
        return tuple(d * cj for cj in c)

    return Node(name, parents, fn, partials)


def _random_node(rng, name, parents) -> Node:
    c = rng.uniform(0.5, 1.5, len(parents)) * rng.choice([-1, 1], len(parents))
    return _weighted_node(name, tuple(parents), c, str(rng.choice(list(_PHI))))


def layered_graph(depth: int, width: int, seed: int = 0) -> Graph:
    """s → ``depth`` fully connected layers of ``width`` nodes → L (S13): ``width^depth``
    paths but only ``2 width + (depth − 1) width²`` edges. Each node is
    ``n = φ(Σⱼ cⱼ pⱼ)`` with random ``cⱼ`` and ``φ ∈ {sin, tanh, softplus}``.

    Raises:
      ValueError: ``depth`` or ``width`` is not a positive integer.
    """
    check_positive_int(depth, "depth")
    check_positive_int(width, "width")
    rng = np.random.default_rng(seed)
    nodes, previous = [], ("s",)
    for k in range(1, depth + 1):
        layer = tuple(f"n{k}_{j}" for j in range(width))
        nodes += [_random_node(rng, name, previous) for name in layer]
        previous = layer
    return make_graph("s", [*nodes, _random_node(rng, "L", previous)])


def random_graph(num_nodes: int, seed: int = 0, max_parents: int = 3) -> Graph:
    """A random DAG of ``num_nodes`` nodes after the input ``s`` (S13): each node draws 1 …
    ``max_parents`` parents among the earlier nodes; the last one is ``L``.

    Raises:
      ValueError: ``num_nodes`` or ``max_parents`` is not a positive integer.
    """
    check_positive_int(num_nodes, "num_nodes")
    check_positive_int(max_parents, "max_parents")
    rng = np.random.default_rng(seed)
    names, nodes = ["s"], []
    for k in range(1, num_nodes + 1):
        m = int(rng.integers(1, min(max_parents, len(names)) + 1))
        parents = [names[i] for i in sorted(rng.choice(len(names), m, replace=False))]
        name = "L" if k == num_nodes else f"n{k}"
        nodes.append(_random_node(rng, name, parents))
        names.append(name)
    return make_graph("s", nodes)
