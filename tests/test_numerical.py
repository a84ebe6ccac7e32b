"""Central differences: the formula on any pytree, its step, its error against ε, its cost
(S11), and agreement with the hand-written backprop on random networks (S19)."""

import json
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from conftest import load_script, random_problem
from fnn import numerical

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gradient_check.py"


def cubic_and_sine(t):
    return jnp.sum(t["w"] ** 3) + jnp.sum(jnp.sin(t["layers"][0])) * t["layers"][1]


def cubic_and_sine_grad(t):
    return {
        "w": 3 * t["w"] ** 2,
        "layers": [jnp.cos(t["layers"][0]) * t["layers"][1], jnp.sum(jnp.sin(t["layers"][0]))],
    }


@pytest.fixture
def tree():
    return {"w": jnp.array([[0.5, -2.0], [3.0, 0.1]]), "layers": [jnp.array([0.3, 1.2]), 2.0]}


# ---------------------------------------------------------------------------------------
# The formula on any pytree (S11).
# ---------------------------------------------------------------------------------------


def test_central_difference_on_a_nested_pytree(tree):
    tree = jax.tree.map(jnp.asarray, tree)
    got = numerical.central_difference(cubic_and_sine, tree)
    chex.assert_trees_all_close(got, cubic_and_sine_grad(tree), rtol=1e-9, atol=1e-9)


def test_central_difference_is_exact_up_to_h_squared_on_a_cubic():
    # ((x + h)³ − (x − h)³) / 2h = 3x² + h²: the O(ε²) term of the lecture, exactly.
    x, h = jnp.array([0.25, 0.5]), 1e-2
    got = numerical.central_difference(lambda x: jnp.sum(x**3), x, h, relative=False)
    np.testing.assert_allclose(got, 3 * x**2 + h**2, rtol=1e-10)


def test_default_eps_is_the_cube_root_of_machine_epsilon():
    assert numerical.default_eps(jnp.float64) == pytest.approx((2.0**-52) ** (1 / 3))
    assert numerical.default_eps(jnp.float32) == pytest.approx((2.0**-23) ** (1 / 3))


def test_steps_scale_with_the_parameter_magnitude():
    theta = jnp.array([0.0, 0.5, -4.0, 100.0])
    eps = numerical.default_eps(jnp.float64)
    np.testing.assert_allclose(numerical.steps(theta, eps), eps * np.array([1, 1, 4, 100]))
    np.testing.assert_allclose(numerical.steps(theta, 1e-3, relative=False), 1e-3)


def test_relative_steps_resolve_a_large_parameter():
    # At θ = 1e8 an absolute step of 6e-6 is only ~400 float64 spacings (1.5e-8) wide:
    # round-off ruins the quotient. The relative step h = ε·|θ| keeps it accurate.
    w = jnp.array([1e8])
    f = lambda w: jnp.sum(jnp.log(w))  # noqa: E731
    absolute = numerical.central_difference(f, w, relative=False)
    relative = numerical.central_difference(f, w)
    assert numerical.relative_error(absolute, 1e-8)[0] > 1e-3
    assert numerical.relative_error(relative, 1e-8)[0] < 1e-9


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_the_step_divided_by_is_the_represented_one(dtype):
    """``(θ + h) − (θ − h)`` rounds to a different number than ``2h`` (θ + h is not exact);
    dividing by the step actually taken makes the slope of f(t) = t exactly 1."""
    theta = jnp.asarray([1 / 3, 0.1, 2.7, -5.3, 1e3 / 7], dtype)
    h = numerical.steps(theta, numerical.default_eps(dtype))
    taken = np.asarray((theta + h) - (theta - h))
    assert np.any(taken != np.asarray(2 * h))  # the case the rule is for
    got = [numerical.central_difference(lambda t: t[0], theta[i : i + 1]) for i in range(5)]
    np.testing.assert_array_equal(np.concatenate(got), np.ones(5, dtype))


def test_the_resolution_scales_with_the_value_of_f():
    for dtype in ("float32", "float64"):
        eps = float(jnp.finfo(dtype).eps)
        assert numerical.resolution(dtype, 0.25) == pytest.approx(10 * eps ** (2 / 3))
        assert numerical.resolution(dtype, -300.0) == pytest.approx(300 * 10 * eps ** (2 / 3))
        assert numerical.resolution(dtype, 40.0) == 40 * numerical.resolution(dtype, 1.0)


def test_error_vs_eps_honours_relative():
    # At θ = 1e8 the absolute step ε = 1e-6 is ~70 float64 spacings: round-off ruins it;
    # the relative step ε·|θ| = 100 does not.
    w = jnp.array([1e8])
    f = lambda w: jnp.sum(jnp.log(w))  # noqa: E731
    reference = jnp.array([1e-8])
    absolute = numerical.error_vs_eps(f, w, reference, (1e-6,))
    relative = numerical.error_vs_eps(f, w, reference, (1e-6,), relative=True)
    assert absolute.max_error[0] > 1e-3 and relative.max_error[0] < 1e-9


def test_chunks_give_the_same_gradient(tree):
    tree = jax.tree.map(jnp.asarray, tree)
    whole = numerical.central_difference(cubic_and_sine, tree)
    for chunk_size in (1, 3, 4):
        chunked = numerical.central_difference(cubic_and_sine, tree, chunk_size=chunk_size)
        chex.assert_trees_all_equal(chunked, whole)


def test_jit_and_vmap(tree):
    tree = jax.tree.map(jnp.asarray, tree)
    jitted = jax.jit(lambda t: numerical.central_difference(cubic_and_sine, t))(tree)
    chex.assert_trees_all_close(jitted, numerical.central_difference(cubic_and_sine, tree))
    xs = jnp.linspace(-1, 1, 5)[:, None] * jnp.ones((5, 3))
    per_point = jax.vmap(lambda x: numerical.central_difference(lambda x: jnp.sum(x**3), x))
    h = numerical.default_eps(jnp.float64)  # |x| ≤ 1: the step is ε; the error exactly h²
    np.testing.assert_allclose(per_point(xs), 3 * xs**2 + h**2, rtol=1e-9)


# ---------------------------------------------------------------------------------------
# Random networks: central differences against the hand-written backprop (S11, S19).
# ---------------------------------------------------------------------------------------

NETWORKS = [
    ((4, 6, 3), ("tanh", "identity"), "l2"),
    ((3, 5, 4, 2), ("sigmoid", "softplus", "identity"), "l2"),
    ((5, 4, 4, 3), ("gelu", "elu", "softmax"), "cross_entropy"),
    ((2, 7, 3), ("sin", "identity"), "softmax_cross_entropy"),
]


# The hand-written gradient, compiled once per network.
value_and_grad = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))


@pytest.mark.parametrize(("sizes", "acts", "loss"), NETWORKS)
def test_float64_median_relative_error_at_the_default_eps(sizes, acts, loss):
    net, params, x, y = random_problem(sizes, acts, loss, seed=len(sizes))
    _, grads = value_and_grad(net, params, x, y, loss=loss, method="reverse")
    f = lambda t: fnn.gradcheck.network_loss(net, t["params"], t["x"], y, loss=loss)  # noqa: E731
    numeric = numerical.central_difference(f, {"params": params, "x": x})
    errors = numerical.relative_error(
        jax.flatten_util.ravel_pytree(grads)[0], jax.flatten_util.ravel_pytree(numeric)[0]
    )
    assert np.median(errors) <= 1e-9, np.median(errors)
    assert np.max(errors) <= 1e-5


# ---------------------------------------------------------------------------------------
# The error against ε (the V-curve) and the cost.
# ---------------------------------------------------------------------------------------


def test_error_vs_eps_is_a_v_in_both_dtypes():
    net, params, x, y = random_problem((3, 4, 2), ("tanh", "identity"), "l2", seed=0)
    tree = {"params": params, "x": x}
    f = lambda t: fnn.gradcheck.network_loss(net, t["params"], t["x"], y)  # noqa: E731
    _, reference = value_and_grad(net, params, x, y)
    epsilons = (1e-1, 1e-2, 1e-3, 1e-5, 1e-7, 1e-9, 1e-12)
    for dtype, bottom in ((jnp.float64, 1e-9), (jnp.float32, 1e-3)):
        cast = jax.tree.map(lambda a, dtype=dtype: a.astype(dtype), tree)
        sweep = numerical.error_vs_eps(f, cast, reference, epsilons)
        assert sweep.dtype == jnp.dtype(dtype).name
        err = np.array(sweep.median_error)
        best = int(np.argmin(err))
        assert 0 < best < len(epsilons) - 1, err  # a V: worse on both sides
        assert err[best] < bottom, err
        assert err[0] > 30 * err[best] and err[-1] > 100 * err[best], err
        # The best ε lies within a decade and a half of ε_mach^{1/3}.
        ratio = epsilons[best] / numerical.default_eps(dtype)
        assert 10**-1.5 <= ratio <= 10**1.5, (epsilons[best], err)
    # Truncation side: the error is O(ε²), a factor ~100 per decade.
    float64 = numerical.error_vs_eps(f, tree, reference, (1e-1, 1e-2))
    assert 30 < float64.median_error[0] / float64.median_error[1] < 300


def test_cost_counts_two_evaluations_per_parameter():
    net, params, x, y = random_problem((3, 4, 2), ("tanh", "identity"), "l2", seed=0)
    f = lambda p: fnn.gradcheck.network_loss(net, p, x, y)  # noqa: E731
    cost = numerical.compare_cost(
        f, params, lambda p: value_and_grad(net, p, x, y)[1]["params"], repeats=1
    )
    P = fnn.summary(net).num_params
    assert cost.num_params == P and cost.fd_evaluations == 2 * P
    assert cost.fd_seconds > 0 and cost.backward_seconds > 0
    assert f"{2 * P} loss evaluations" in str(cost)


# ---------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, -1e-3, math.nan, math.inf, "1e-3", True])
def test_bad_eps_raises(tree, eps):
    with pytest.raises(ValueError, match="eps"):
        numerical.central_difference(cubic_and_sine, tree, eps)


def test_bad_trees_raise(tree):
    with pytest.raises(TypeError, match="floating"):
        numerical.central_difference(lambda t: 0.0, {"n": jnp.arange(3)})
    with pytest.raises(TypeError, match="one floating dtype"):
        numerical.central_difference(
            lambda t: 0.0, {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float64)}
        )
    with pytest.raises(ValueError, match="at least one array"):
        numerical.central_difference(lambda t: 0.0, {})
    with pytest.raises(ValueError, match="reference"):
        numerical.error_vs_eps(cubic_and_sine, tree, {"w": tree["w"]})
    with pytest.raises(ValueError, match=r"reference\['w'\] must have shape \(2, 2\)"):
        numerical.error_vs_eps(cubic_and_sine, tree, {**tree, "w": jnp.ones(4)})


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_size_raises(tree, chunk_size):
    match = f"chunk_size must be a positive integer; got {chunk_size}"
    with pytest.raises(ValueError, match=match):
        numerical.central_difference(cubic_and_sine, tree, chunk_size=chunk_size)


def test_a_function_that_is_not_scalar_or_bad_repeats_raise(tree):
    match = r"f must return a scalar loss, shape \(\); got shape \(2, 2\)"
    with pytest.raises(ValueError, match=match):
        numerical.central_difference(lambda t: t["w"] ** 2, tree)
    with pytest.raises(ValueError, match="repeats must be a positive integer; got 0"):
        numerical.compare_cost(cubic_and_sine, tree, cubic_and_sine_grad, repeats=0)


# ---------------------------------------------------------------------------------------
# scripts/gradient_check.py end to end.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


@pytest.mark.slow
def test_gradient_check_script_quick(script, tmp_path, capsys):
    # A few cases (each compiles its own central differences); the default runs the zoo.
    argv = ["--quick", "--activations", "relu,prelu,sin", "--losses", "l1,cross_entropy"]
    assert script.main([*argv, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "float64" in printed and "float32" in printed and "FAIL" not in printed
    result = json.loads((tmp_path / "gradient_check.json").read_text())
    assert (tmp_path / "fd_error_vs_eps.png").stat().st_size > 10_000
    assert result["all_passed"] is True
    rows = result["checks"]
    assert {r["method"] for r in rows} == {"reverse", "explicit", "forward"}
    assert [(r["activation"], r["loss"]) for r in rows] == [
        ("relu", "l2"), ("prelu", "l2"), ("sin", "l2"), ("tanh", "l1"), ("tanh", "cross_entropy")
    ]  # fmt: skip
    assert all(r["float64"] <= 1e-6 and r["float32"] <= 1e-2 for r in rows)
    for curve in result["sweep"].values():
        assert len(curve["eps"]) == len(curve["median_error"]) == 12
        assert curve["best_eps"] not in (curve["eps"][0], curve["eps"][-1])  # a V
    assert result["sweep"]["float64"]["best_median_error"] < 1e-9
    assert all(c["fd_evaluations"] == 2 * c["num_params"] for c in result["cost"])


def test_gradient_check_script_rejects_unknown_names(script, tmp_path):
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        script.main(["--quick", "--activations", "swish", "--out", str(tmp_path)])
