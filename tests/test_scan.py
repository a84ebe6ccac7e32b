"""Runs of identical layers, stacked and scanned: the same numbers as the unrolled loop (S4,
S17, S18, S22).

Every engine cuts the network with ``scan.segments``; a run of at least
``SCAN_MIN_LAYERS`` identical ``(M, M)`` layers is one ``jax.lax.scan``. These tests force
both paths — ``unrolled`` (no run scanned) and ``scanned`` (every run of ≥ 2 layers scanned,
per-layer results too) — and compare them in float64. Both paths do the same floating-point
operations in the same order, so the tolerance is a few ulps (rtol 1e-13), and each test
first checks, in the traced program, that the path it claims to test is the one taken.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import backprop, forward_mode, scan

TIGHT = {"rtol": 1e-13, "atol": 1e-14}

# A run at the input (D = M: the first layer is part of it), a break (another activation),
# a run of PReLU layers (their α is stacked too), a non-square output layer.
SIZES = (6, 6, 6, 6, 6, 6, 6, 6, 3)
ACTS = ("tanh", "tanh", "tanh", "sigmoid", "prelu", "prelu", "prelu", "identity")


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    net = fnn.MLP(SIZES, ACTS)
    params = [
        {k: jnp.asarray(rng.normal(0, 0.5, s) if s else 0.1 + 0.05 * i) for k, s in layer.items()}
        for i, layer in enumerate(net.layer_shapes())
    ]
    x = jnp.asarray(rng.normal(size=(5, SIZES[0])))
    y = jnp.asarray(rng.normal(size=(5, SIZES[-1])))
    return net, params, x, y


def unrolled(monkeypatch):
    monkeypatch.setattr(scan, "SCAN_MIN_LAYERS", None)


def scanned(monkeypatch):
    monkeypatch.setattr(scan, "SCAN_MIN_LAYERS", 2)
    monkeypatch.setattr(scan, "SCAN_PER_LAYER_RESULTS", True)


def count_scans(f, *args) -> int:
    # A fresh function each time: make_jaxpr caches traces, blind to the switches.
    return str(jax.make_jaxpr(lambda *a: f(*a))(*args)).count("scan[")


def both_paths(monkeypatch, f, *args, scans: int):
    """``f(*args)`` scanned and unrolled, after checking that the scanned path traces
    ``scans`` more scans than the unrolled one (``lax.map`` is a scan of its own)."""
    unrolled(monkeypatch)
    base = count_scans(f, *args)
    expected = f(*args)
    scanned(monkeypatch)
    assert count_scans(f, *args) - base == scans
    return f(*args), expected


# ---------------------------------------------------------------------------------------
# The cut.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, acts, min_layers, expected",
    [
        (SIZES, ACTS, 2, [(0, 3), (3, 4), (4, 7), (7, 8)]),
        (SIZES, ACTS, 4, [(i, i + 1) for i in range(8)]),  # runs of 3 stay unrolled
        ((3, 8, 8, 8, 8, 8, 2), ("tanh",) * 6, 4, [(0, 1), (1, 5), (5, 6)]),
        ((3, 8, 8, 8, 8, 8, 2), ("tanh",) * 6, None, [(i, i + 1) for i in range(6)]),
        ((4, 4, 5, 5, 5), ("relu",) * 4, 2, [(0, 1), (1, 2), (2, 4)]),  # (4,4) then (5,5)
    ],
)
def test_segments_cut_runs_of_identical_square_layers(
    monkeypatch, sizes, acts, min_layers, expected
):
    monkeypatch.setattr(scan, "SCAN_MIN_LAYERS", min_layers)
    segs = scan.segments(fnn.MLP(sizes, acts))
    assert [(s.start, s.stop) for s in segs] == expected
    assert all(s.scan == (s.stop - s.start > 1) for s in segs)
    assert [s.f for s in segs] == [acts[s.start] for s in segs]


def test_per_layer_results_stay_unrolled_by_default():
    """The default: runs are scanned where an engine's result is not per layer (apply,
    Jacobians); the forward cache and reverse gradients stay unrolled (XLA:CPU compiles one
    kernel per slice taken out of a stacked result, see scan.SCAN_PER_LAYER_RESULTS)."""
    run = scan.SCAN_MIN_LAYERS
    net = fnn.MLP((4,) * (run + 1) + (2,), ("tanh",) * (run + 1))
    assert [s.scan for s in scan.segments(net)] == [True, False]
    assert not any(s.scan for s in scan.segments(net, per_layer_results=True))
    short = fnn.MLP((4,) * run + (2,), ("tanh",) * run)  # a run of run − 1 layers
    assert not any(s.scan for s in scan.segments(short))


def test_group_and_ungroup_are_inverse(problem, monkeypatch):
    scanned(monkeypatch)
    net, params, _, _ = problem
    segs = scan.segments(net)
    grouped = scan.group(segs, params)
    assert grouped[0]["W"].shape == (3, 6, 6) and grouped[2]["alpha"].shape == (3,)
    chex.assert_trees_all_equal(scan.ungroup(segs, grouped), params)


# ---------------------------------------------------------------------------------------
# Every engine: scanned == unrolled.
# ---------------------------------------------------------------------------------------


def test_apply_and_forward(problem, monkeypatch):
    net, params, x, _ = problem
    got, expected = both_paths(monkeypatch, fnn.apply, net, params, x, scans=2)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    got, expected = both_paths(monkeypatch, fnn.forward, net, params, x, scans=2)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    assert len(got[1]) == net.num_layers


@pytest.mark.parametrize("method", ["reverse", "explicit", "forward"])
def test_value_and_grad(problem, monkeypatch, method):
    """Reverse: per run, a scan forward and one backward over the stacked cache; explicit:
    unrolled by design, on the (scanned) forward cache; forward: the loss, the parameter
    tangents (inside lax.map) and the input's Jacobian each pushed through the runs."""
    net, params, x, y = problem

    def f(params, x):
        return fnn.value_and_grad(net, params, x, y, method=method)

    scans = {"reverse": 4, "explicit": 2, "forward": 6}[method]
    got, expected = both_paths(monkeypatch, f, params, x, scans=scans)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    chex.assert_trees_all_equal_shapes_and_dtypes(got[1]["params"], params)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian(problem, monkeypatch, mode):
    net, params, x, _ = problem
    scans = {"forward": 2, "reverse": 4}[mode]

    def f(params, x):
        return fnn.jacobian(net, params, x, mode=mode)

    got, expected = both_paths(monkeypatch, f, params, x[0], scans=scans)
    chex.assert_trees_all_close(got, expected, **TIGHT)


def test_jvp_in_input_and_parameters(problem, monkeypatch):
    net, params, x, _ = problem
    params_dot = jax.tree.map(jnp.ones_like, params)

    def f(params, x):
        return forward_mode.jvp(net, params, x, x_dot=jnp.ones_like(x), params_dot=params_dot)

    chex.assert_trees_all_close(*both_paths(monkeypatch, f, params, x, scans=2), **TIGHT)


def test_scan_under_jit_and_promoted_dtypes(problem, monkeypatch):
    """A float32 input into float64 layers: the scan's carry is promoted as the unrolled
    loop promotes it; and the scanned engines compile under jax.jit (a fresh jit per path:
    the trace cache does not see the switch)."""
    net, params, x, y = problem
    x32 = x.astype(jnp.float32)

    def f(params, x):  # a new function object per call: no jit trace cache across paths
        return jax.jit(lambda p, x: (fnn.apply(net, p, x), fnn.value_and_grad(net, p, x, y)))(
            params, x
        )

    got, expected = both_paths(monkeypatch, f, params, x32, scans=6)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    assert got[1][1]["x"].dtype == jnp.float32 and got[0].dtype == jnp.float64


def test_program_size_is_flat_in_depth(monkeypatch):
    """The point of the scan: the traced program of a scanned engine does not grow with
    depth (a structural check; the compile times are in benchmarks/run_all.py)."""
    scanned(monkeypatch)

    def equations(depth, f):
        net = fnn.MLP((8,) * depth + (2,), ("tanh",) * depth)
        params = fnn.init(jax.random.key(0), net)
        return len(jax.make_jaxpr(f(net))(params, jnp.ones((3, 8))).eqns)

    for f in (
        lambda net: lambda p, x: fnn.apply(net, p, x),
        lambda net: lambda p, x: fnn.jacobian(net, p, x[0], mode="reverse"),
    ):
        assert equations(8, f) == equations(32, f)


# ---------------------------------------------------------------------------------------
# f′ from the cached output, in the reverse engine.
# ---------------------------------------------------------------------------------------


def test_reverse_engine_uses_the_output_for_tanh():
    """The backward pass of a tanh layer reads the cached z, not a (no cosh in the jaxpr)."""
    net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    params = fnn.init(jax.random.key(0), net)
    jaxpr = str(
        jax.make_jaxpr(lambda p: backprop.value_and_grad(net, p, jnp.ones(3), jnp.zeros(2)))(params)
    )
    assert "tanh" in jaxpr and "cosh" not in jaxpr and "exp" not in jaxpr
