"""Computation graphs (S12, S13): the chain rules, the sum over all paths, and forward and
backward accumulation — the same derivatives as jax.grad, at very different counted costs."""

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_script
from fnn import graph

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "path_explosion.py"


def labels(g, s):
    """The edge labels ∂child/∂parent at input s, as Python floats."""
    return {e: float(d) for e, d in graph.local_partials(g, graph.evaluate(g, s)).items()}


def output_of(g):
    return lambda s: graph.evaluate(g, s)[g.output]


def assert_agree_to_rounding(a, b, scale):
    """|a − b| ≤ 64 ε_mach Σ|terms|: reassociating a sum of products moves it by rounding."""
    assert abs(a - b) <= 64 * np.finfo(np.float64).eps * scale, (a, b, scale)


# ---------------------------------------------------------------------------------------
# S12: the chain rule in 1-D, the total derivative along a path.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("x", [-1.3, 0.0, 0.4, 2.0])
def test_chain_rule_1d(x):
    # (g ∘ f)′(x) = g′(f(x)) f′(x) with f = x², g = sin.
    got = graph.chain_rule(jnp.cos, lambda x: x**2, lambda x: 2 * x, x)
    assert got == pytest.approx(float(jax.grad(lambda x: jnp.sin(x**2))(x)), rel=1e-12, abs=0)


@pytest.mark.parametrize("s", [-0.7, 0.3, 1.9])
def test_total_derivative_along_a_path(s):
    # f(x, y) = x² y on the path x = cos s, y = sin s:  ∂f/∂s = ∂f/∂x x′ + ∂f/∂y y′.
    x, y = math.cos(s), math.sin(s)
    got = graph.total_derivative((2 * x * y, x**2), (-math.sin(s), math.cos(s)))
    witness = jax.grad(lambda s: jnp.cos(s) ** 2 * jnp.sin(s))(s)
    assert got == pytest.approx(float(witness), rel=1e-12)
    # The same as the sum over the two paths s → x → f and s → y → f of the S12 graph.
    paths = graph.sum_over_paths(graph.path_graph(), labels(graph.path_graph(), s))
    assert paths.num_paths == 2 and paths.derivative == pytest.approx(got, rel=1e-14)


def test_total_derivative_in_3d():
    # The lecture's 3-D case: f(x, y, z) = x y z along (s, s², s³): ∂f/∂s = 6 s⁵.
    s = 1.1
    got = graph.total_derivative((s**2 * s**3, s * s**3, s * s**2), (1.0, 2 * s, 3 * s**2))
    assert got == pytest.approx(6 * s**5, rel=1e-14)
    with pytest.raises(ValueError, match="one entry per input"):
        graph.total_derivative((1.0, 2.0), (1.0,))


# ---------------------------------------------------------------------------------------
# S13: the lecture's graph s → x, y, z → f → g, h → L.
# ---------------------------------------------------------------------------------------


def test_lecture_graph_has_the_six_paths_of_the_lecture():
    expected = {
        ("s", a, "f", b, "L") for a in ("x", "y", "z") for b in ("g", "h")
    }  # ∂L/∂g ∂g/∂f ∂f/∂x ∂x/∂s + … (six terms)
    g = graph.lecture_graph()
    assert set(graph.paths(g)) == expected and graph.count_paths(g) == 6
    assert g.num_edges == 10


@pytest.mark.parametrize("s", [-1.2, 0.0, 0.7, 2.5])
def test_lecture_graph_three_algorithms_and_jax_grad(s):
    g = graph.lecture_graph()
    edge = labels(g, s)
    paths = graph.sum_over_paths(g, edge)
    forward = graph.forward_accumulation(g, edge)
    backward = graph.backward_accumulation(g, edge)
    witness = float(jax.grad(output_of(g))(s))
    for got in (paths.derivative, forward.derivatives["L"], backward.derivatives["s"]):
        assert got == pytest.approx(witness, rel=1e-13, abs=1e-15)
    # Counted: 6 paths × 3 multiplications + 5 additions against one multiplication per edge.
    assert (paths.ops.multiplies, paths.ops.additions) == (18, 5)
    assert (forward.ops.multiplies, forward.ops.additions) == (10, 3)  # f: +2, L: +1
    assert (backward.ops.multiplies, backward.ops.additions) == (10, 3)  # f: +1, s: +2


def test_forward_accumulation_gives_every_node_wrt_the_input():
    g, s = graph.lecture_graph(), 0.9
    forward = graph.forward_accumulation(g, labels(g, s))
    for name in ("x", "y", "z", "f", "g", "h", "L"):
        witness = jax.grad(lambda s, name=name: graph.evaluate(g, s)[name])(s)
        assert forward.derivatives[name] == pytest.approx(float(witness), rel=1e-13)


def downstream(g, name, values):
    """L as a function of node ``name``'s value, every node that is not downstream fixed."""

    def L(v):
        new, changed = dict(values, **{name: v}), {name}
        for node in g.nodes:
            if node.name != name and any(p in changed for p in node.parents):
                new[node.name] = node.fn(*(new[p] for p in node.parents))
                changed.add(node.name)
        return new[g.output]

    return L


def test_backward_accumulation_gives_the_output_wrt_every_node():
    g, s = graph.lecture_graph(), 0.9
    values = graph.evaluate(g, s)
    backward = graph.backward_accumulation(g, labels(g, s))
    for name in ("s", "x", "y", "z", "f", "g", "h", "L"):
        witness = jax.grad(downstream(g, name, values))(jnp.asarray(values[name], float))
        assert backward.derivatives[name] == pytest.approx(float(witness), rel=1e-13)


def test_algorithms_trace_under_jit():
    g = graph.lecture_graph()

    @jax.jit
    def dL_ds(s):
        edge = graph.local_partials(g, graph.evaluate(g, s))
        return graph.backward_accumulation(g, edge).derivatives["s"]

    got = dL_ds(0.4)
    assert float(got) == pytest.approx(float(jax.grad(output_of(g))(0.4)), rel=1e-13)


# ---------------------------------------------------------------------------------------
# Random graphs: the three algorithms agree to rounding.
# ---------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    num_nodes=st.integers(1, 14),
    seed=st.integers(0, 2**31 - 1),
    s=st.floats(-2, 2, allow_nan=False),
)
def test_random_graphs_three_algorithms_agree(num_nodes, seed, s):
    g = graph.random_graph(num_nodes, seed)
    edge = labels(g, s)
    paths = graph.sum_over_paths(g, edge)
    forward = graph.forward_accumulation(g, edge)
    backward = graph.backward_accumulation(g, edge)
    # Σ over paths of |product|: the scale of the rounding of any order of summation.
    scale = graph.forward_accumulation(g, {e: abs(d) for e, d in edge.items()}).derivatives["L"]
    assert_agree_to_rounding(paths.derivative, forward.derivatives["L"], scale)
    assert_agree_to_rounding(paths.derivative, backward.derivatives["s"], scale)
    assert paths.num_paths == graph.count_paths(g) == len(list(graph.paths(g)))
    assert forward.ops.multiplies == g.num_edges
    assert backward.ops.multiplies <= g.num_edges


@pytest.mark.parametrize("seed", [0, 1])
def test_random_graph_matches_jax_grad(seed):
    g = graph.random_graph(12, seed)
    witness = float(jax.grad(output_of(g))(0.3))
    got = graph.backward_accumulation(g, labels(g, 0.3)).derivatives["s"]
    assert got == pytest.approx(witness, rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------------------
# Layered graphs: w^d paths, linear dynamic programs — counted, against the closed form.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "width"), [(1, 1), (1, 4), (3, 2), (4, 3), (6, 2)])
def test_layered_graph_counts_match_the_closed_form(depth, width):
    g = graph.layered_graph(depth, width, seed=depth)
    edge = labels(g, 0.5)
    paths = graph.sum_over_paths(g, edge)
    forward = graph.forward_accumulation(g, edge)
    backward = graph.backward_accumulation(g, edge)
    num_paths = width**depth
    num_edges = 2 * width + (depth - 1) * width**2
    num_nodes = depth * width + 1  # without the input
    assert paths.num_paths == graph.count_paths(g) == num_paths
    assert g.num_edges == num_edges
    # Each path has depth + 1 edges: depth multiplications; then num_paths − 1 additions.
    assert (paths.ops.multiplies, paths.ops.additions) == (depth * num_paths, num_paths - 1)
    # One multiplication per edge, one addition per edge beyond the first into each node.
    assert (forward.ops.multiplies, forward.ops.additions) == (
        num_edges,
        num_edges - num_nodes,
    )
    assert (backward.ops.multiplies, backward.ops.additions) == (
        num_edges,
        num_edges - depth * width - 1,  # out of each node but L (and s has width children)
    )
    scale = graph.forward_accumulation(g, {e: abs(d) for e, d in edge.items()}).derivatives["L"]
    assert_agree_to_rounding(paths.derivative, forward.derivatives["L"], scale)
    assert_agree_to_rounding(paths.derivative, backward.derivatives["s"], scale)


def test_dynamic_programs_grow_linearly_paths_exponentially():
    width = 3
    ops = []
    for depth in range(1, 8):
        g = graph.layered_graph(depth, width)
        edge = labels(g, 0.1)
        ops.append(
            (graph.count_paths(g), graph.forward_accumulation(g, edge).ops.total,
             graph.backward_accumulation(g, edge).ops.total)
        )  # fmt: skip
    counts, forward, backward = (np.array(c) for c in zip(*ops))
    assert np.all(counts[1:] == width * counts[:-1])  # × w per layer
    assert np.all(np.diff(forward, 2) == 0) and np.all(np.diff(backward, 2) == 0)  # linear
    assert np.diff(forward)[0] == 2 * width**2 - width  # w² multiplies, w² − w additions


def test_layered_graph_matches_jax_grad():
    g = graph.layered_graph(4, 3, seed=7)
    witness = float(jax.grad(output_of(g))(0.2))
    got = graph.forward_accumulation(g, labels(g, 0.2)).derivatives["L"]
    assert got == pytest.approx(witness, rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------


def node(name, parents):
    return graph.Node(name, parents, lambda *p: sum(p), lambda *p: (1.0,) * len(p))


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "at least the output"),
        ([node("a", ("s",)), node("a", ("s",))], "unique"),
        ([node("a", ("b",)), node("b", ("s",))], "topological order"),
        ([node("a", ())], "at least one parent"),
        ([node("a", ("s", "s"))], "each once"),
        ([node("s", ("s",))], "unique"),
    ],
)
def test_bad_graphs_raise(nodes, message):
    with pytest.raises(ValueError, match=message):
        graph.make_graph("s", nodes)


def test_the_path_sum_refuses_more_paths_than_max_paths_naming_the_cheap_way():
    g = graph.layered_graph(20, 3)  # 3²⁰ ≈ 3.5e9 paths: counted, not enumerated
    edge = labels(g, 0.5)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"3486784401 paths, over max_paths=100000 paths.*"
                       r"forward_accumulation or backward_accumulation.*177 edges"):  # fmt: skip
        graph.sum_over_paths(g, edge)
    assert time.perf_counter() - start < 1.0
    assert graph.MAX_PATHS == 100_000
    # The limit is inclusive: exactly max_paths paths are enumerated.
    small = graph.layered_graph(3, 2)  # 8 paths
    assert graph.sum_over_paths(small, labels(small, 0.5), max_paths=8).num_paths == 8
    with pytest.raises(ValueError, match="8 paths, over max_paths=7 paths"):
        graph.sum_over_paths(small, labels(small, 0.5), max_paths=7)
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match=f"max_paths must be a positive integer; got {bad}"):
            graph.sum_over_paths(small, labels(small, 0.5), max_paths=bad)


@pytest.mark.parametrize(("depth", "width"), [(0, 2), (2, 0), (1.5, 2), (True, 2)])
def test_bad_layered_graph_raises(depth, width):
    with pytest.raises(ValueError, match="positive integer"):
        graph.layered_graph(depth, width)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_nodes": 0}, "num_nodes must be a positive integer; got 0"),
        ({"num_nodes": 3, "max_parents": 0}, "max_parents must be a positive integer; got 0"),
    ],
)
def test_bad_random_graph_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        graph.random_graph(**kwargs)


# ---------------------------------------------------------------------------------------
# scripts/path_explosion.py end to end.
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_path_explosion_script_quick(tmp_path, capsys):
    script = load_script(SCRIPT)
    assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "paths" in printed and "lecture" in printed
    result = json.loads((tmp_path / "path_explosion.json").read_text())
    assert (tmp_path / "path_explosion.png").stat().st_size > 10_000
    rows = result["rows"]
    assert [r["depth"] for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        w, d = result["width"], r["depth"]
        assert r["num_paths"] == w**d
        assert r["forward_ops"] == r["backward_ops"] == 2 * (2 * w + (d - 1) * w**2) - (d * w + 1)
        if r["path_sum_ops"] is not None:
            assert r["path_sum_ops"] == d * w**d + w**d - 1
            assert r["agree"] is True
    assert result["lecture"]["num_paths"] == 6
