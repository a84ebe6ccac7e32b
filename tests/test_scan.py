"""Runs of identical layers, stacked and scanned: the same numbers as the unrolled loop (S4,
S17, S18, S22).

Every engine cuts the network with ``_scan.segments``; a run of at least
``net.scan_min_layers`` identical ``(M, M)`` layers is one ``jax.lax.scan``. These tests
build both paths from the network's static fields — ``unrolled`` (no run scanned) and
``scanned`` (every run of ≥ 2 layers scanned, per-layer results too) — and compare them in
float64. Both paths do the same floating-point
operations in the same order, so the tolerance is a few ulps (rtol 1e-13), and each test
first checks, in the traced program, that the path it claims to test is the one taken.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import _scan, forward_mode

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


def unrolled(net):
    return dataclasses.replace(net, scan_min_layers=None)


def scanned(net):
    return dataclasses.replace(net, scan_min_layers=2, scan_per_layer_results=True)


def count_scans(f, *args) -> int:
    return str(jax.make_jaxpr(f)(*args)).count("scan[")


def both_paths(make_f, net, *args, scans: int):
    """``make_f(net)(*args)`` scanned and unrolled, after checking that the scanned path
    traces ``scans`` more scans than the unrolled one (``lax.map`` is a scan of its own)."""
    f_unrolled, f_scanned = make_f(unrolled(net)), make_f(scanned(net))
    assert count_scans(f_scanned, *args) - count_scans(f_unrolled, *args) == scans
    return f_scanned(*args), f_unrolled(*args)


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
def test_segments_cut_runs_of_identical_square_layers(sizes, acts, min_layers, expected):
    segs = _scan.segments(fnn.MLP(sizes, acts, scan_min_layers=min_layers))
    assert [(s.start, s.stop) for s in segs] == expected
    assert all(s.scan == (s.stop - s.start > 1) for s in segs)
    assert [s.f for s in segs] == [acts[s.start] for s in segs]


def test_per_layer_results_stay_unrolled_by_default():
    """The default: runs are scanned where an engine's result is not per layer (apply,
    Jacobians); the forward cache and reverse gradients stay unrolled (XLA:CPU compiles one
    kernel per slice taken out of a stacked result, see fnn._scan)."""
    run = fnn.MLP((4, 4), ("tanh",)).scan_min_layers
    assert run == 16
    net = fnn.MLP((4,) * (run + 1) + (2,), ("tanh",) * (run + 1))
    assert [s.scan for s in _scan.segments(net)] == [True, False]
    assert not any(s.scan for s in _scan.segments(net, per_layer_results=True))
    short = fnn.MLP((4,) * run + (2,), ("tanh",) * run)  # a run of run − 1 layers
    assert not any(s.scan for s in _scan.segments(short))


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True, "16"])
def test_scan_min_layers_is_checked(bad):
    with pytest.raises(ValueError, match="scan_min_layers must be None or an integer ≥ 2"):
        fnn.MLP((4, 4), ("tanh",), scan_min_layers=bad)


def test_the_switch_is_static_configuration_under_jit():
    """The scan switch is part of the (hashable, static) network: two networks that differ
    only in it are two jit cache entries, never a stale trace (a global read while tracing
    would be silently ignored by the second call)."""
    net = fnn.MLP((4,) * 4 + (2,), ("tanh",) * 4)
    params = fnn.init(jax.random.key(0), net)
    f = jax.jit(fnn.apply)
    a, b = f(unrolled(net), params, jnp.ones(4)), f(scanned(net), params, jnp.ones(4))
    assert unrolled(net) != scanned(net) and hash(unrolled(net)) != hash(scanned(net))
    chex.assert_trees_all_close(a, b, rtol=1e-6)
    assert count_scans(lambda p: fnn.apply(scanned(net), p, jnp.ones(4)), params) == 1
    assert count_scans(lambda p: fnn.apply(unrolled(net), p, jnp.ones(4)), params) == 0


def test_group_and_ungroup_are_inverse(problem):
    net, params, _, _ = problem
    segs = _scan.segments(scanned(net))
    grouped = _scan.group(segs, params)
    assert grouped[0]["W"].shape == (3, 6, 6) and grouped[2]["alpha"].shape == (3,)
    chex.assert_trees_all_equal(_scan.ungroup(segs, grouped), params)


# ---------------------------------------------------------------------------------------
# Every engine: scanned == unrolled.
# ---------------------------------------------------------------------------------------


def test_apply_and_forward(problem):
    net, params, x, _ = problem
    got, expected = both_paths(lambda n: lambda p, x: fnn.apply(n, p, x), net, params, x, scans=2)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    got, expected = both_paths(
        lambda n: lambda p, x: fnn.forward_pass(n, p, x), net, params, x, scans=2
    )
    chex.assert_trees_all_close(got, expected, **TIGHT)
    assert len(got[1]) == net.num_layers


@pytest.mark.parametrize("method", ["reverse", "explicit", "forward"])
def test_value_and_grad(problem, method):
    """Reverse: per run, a scan forward and one backward over the stacked cache; explicit:
    unrolled by design, on the (scanned) forward cache; forward: the loss, the parameter
    tangents (inside lax.map) and the input's Jacobian each pushed through the runs."""
    net, params, x, y = problem

    def f(net):
        return lambda params, x: fnn.value_and_grad(net, params, x, y, method=method)

    scans = {"reverse": 4, "explicit": 2, "forward": 6}[method]
    got, expected = both_paths(f, net, params, x, scans=scans)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    chex.assert_trees_all_equal_shapes_and_dtypes(got[1]["params"], params)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_jacobian(problem, mode):
    net, params, x, _ = problem
    scans = {"forward": 2, "reverse": 4}[mode]

    def f(net):
        return lambda params, x: fnn.jacobian(net, params, x, method=mode)

    got, expected = both_paths(f, net, params, x[0], scans=scans)
    chex.assert_trees_all_close(got, expected, **TIGHT)


def test_jvp_in_input_and_parameters(problem):
    net, params, x, _ = problem
    params_dot = jax.tree.map(jnp.ones_like, params)

    def f(net):
        return lambda params, x: forward_mode.jvp(
            net, params, x, x_dot=jnp.ones_like(x), params_dot=params_dot
        )

    chex.assert_trees_all_close(*both_paths(f, net, params, x, scans=2), **TIGHT)


def test_scan_under_jit_and_promoted_dtypes(problem):
    """A float32 input into float64 layers: the scan's carry is promoted as the unrolled
    loop promotes it; and the scanned engines compile under jax.jit."""
    net, params, x, y = problem
    x32 = x.astype(jnp.float32)

    def f(net):
        return jax.jit(lambda p, x: (fnn.apply(net, p, x), fnn.value_and_grad(net, p, x, y)))

    got, expected = both_paths(f, net, params, x32, scans=6)
    chex.assert_trees_all_close(got, expected, **TIGHT)
    assert got[1][1]["x"].dtype == jnp.float32 and got[0].dtype == jnp.float64


def test_program_size_is_flat_in_depth():
    """The point of the scan: the traced program of a scanned engine does not grow with
    depth (a structural check; the compile times are in benchmarks/run_all.py)."""

    def equations(depth, f):
        net = scanned(fnn.MLP((8,) * depth + (2,), ("tanh",) * depth))
        params = fnn.init(jax.random.key(0), net)
        return len(jax.make_jaxpr(f(net))(params, jnp.ones((3, 8))).eqns)

    for f in (
        lambda net: lambda p, x: fnn.apply(net, p, x),
        lambda net: lambda p, x: fnn.jacobian(net, p, x[0], method="reverse"),
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
        jax.make_jaxpr(lambda p: fnn.value_and_grad(net, p, jnp.ones(3), jnp.zeros(2)))(params)
    )
    assert "tanh" in jaxpr and "cosh" not in jaxpr and "exp" not in jaxpr
