"""Gradient checks (S11, S19): they pass on correct gradients, fail on wrong ones and say
where, and report kinks instead of failing on them."""

import json
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from conftest import load_script, random_problem
from fnn import gradcheck
from fnn.extrapolation import WIDEST, richardson, rungs

POWER = Path(__file__).resolve().parents[1] / "scripts" / "gradcheck_power.py"


def problem(sizes, acts, loss="l2", seed=0, dtype=np.float64, batch=3):
    return random_problem(sizes, acts, loss, seed, dtype, batch)


# The hand-written gradient, compiled once per network.
value_and_grad = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))


@pytest.fixture(scope="module")
def tanh_problem():
    net, params, x, y = problem((3, 5, 2), ("tanh", "identity"))
    _, grads = value_and_grad(net, params, x, y)
    return net, params, x, y, grads


# ---------------------------------------------------------------------------------------
# Pass, fail, locate.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["reverse", "explicit", "forward"])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_every_backprop_method_passes(method, dtype):
    net, params, x, y = problem((4, 5, 3), ("softplus", "softmax"), "cross_entropy", 1, dtype)
    _, grads = value_and_grad(net, params, x, y, loss="cross_entropy", method=method)
    report = gradcheck.check_network(net, params, x, y, grads, loss="cross_entropy")
    assert report.passed, str(report)
    assert report.dtype == jnp.dtype(dtype).name
    assert report.threshold == gradcheck.THRESHOLDS[report.dtype]
    assert report.num_evaluations == 2 * (fnn.summary(net).num_params + x.size)
    assert report.max_error <= (1e-7 if dtype == jnp.float64 else 1e-2)


def test_a_wrong_entry_fails_and_is_located(tanh_problem):
    net, params, x, y, grads = tanh_problem
    wrong = jax.tree.map(lambda g: g, grads)
    wrong["params"][1]["W"] = grads["params"][1]["W"].at[1, 3].multiply(1 + 1e-4)
    report = gradcheck.check_network(net, params, x, y, wrong)
    assert not report.passed
    assert report.worst_path == "['params'][1]['W']" and report.worst_index == (1, 3)
    assert report.max_error == pytest.approx(0.5e-4, rel=1e-3)
    assert report.worst_hand == pytest.approx(float(wrong["params"][1]["W"][1, 3]))
    text = str(report)
    assert "FAIL" in text and "['params'][1]['W'][1, 3]" in text
    # Every other leaf is still fine, and says so.
    others = [leaf for leaf in report.leaves if leaf.path != report.worst_path]
    assert all(leaf.max_error < 1e-7 for leaf in others)


def test_a_transposed_gradient_fails():
    net, params, x, y = problem((3, 3, 1), ("sigmoid", "identity"))
    _, grads = value_and_grad(net, params, x, y)
    grads["params"][0]["W"] = grads["params"][0]["W"].T
    assert not gradcheck.check_network(net, params, x, y, grads).passed


def test_check_gradient_on_any_function():
    def f(t):
        return jnp.sum(jnp.exp(t[0]) * t[1]["v"])

    t = (jnp.array([0.1, -0.4]), {"v": jnp.array([2.0, 3.0])})
    grad = (jnp.exp(t[0]) * t[1]["v"], {"v": jnp.exp(t[0])})
    report = gradcheck.check_gradient(f, t, grad)
    assert report.passed and report.max_error < 1e-9 and report.num_evaluations == 8
    assert [leaf.path for leaf in report.leaves] == ["[0]", "[1]['v']"]
    assert "PASS" in str(report)
    bad = (grad[0], {"v": -grad[1]["v"]})
    assert gradcheck.check_gradient(f, t, bad).worst_path == "[1]['v']"


def test_an_entry_below_the_oracles_resolution_is_unresolved_never_passed():
    # ∂f/∂w₁ = 1e-9. The float64 oracle resolves it (u ≈ 3.7e-10, |a| + |b| = 2e-9 > 4u):
    # it passes, within the float32 gradient's own rounding r = ROUNDING ε₃₂ max|b|.
    def f(w):
        return jnp.sum(w[0] ** 2) + 1e-9 * w[1]

    w = jnp.array([1.0, 1.0], jnp.float32)
    grad = jnp.array([2.0, 1e-9], jnp.float32)
    report = gradcheck.check_gradient(f, w, grad)
    assert report.passed and report.verdict == "PASS", str(report)
    assert report.oracle_dtype == "float64" and report.dtype == "float32"
    assert report.atol == pytest.approx(gradcheck.ROUNDING * 2.0**-23 * 2.0, rel=1e-6)
    # Float32 central differences cannot see it (resolution ≈ 2.4e-4): unresolved, not a pass.
    native = gradcheck.check_gradient(f, w, grad, oracle=None)
    assert native.oracle_dtype == "float32"
    assert not native.passed and native.verdict == "UNRESOLVED" and native.num_unresolved == 1
    assert native.num_failed == 0 and "unresolved" in str(native)
    # A float32 gradient of 0 there is within its own rounding r ≈ 1.4e-6: a pass.
    assert gradcheck.check_gradient(f, w, grad.at[1].set(0.0)).passed

    # A float64 gradient is granted far less (r ≈ 3e-15) than the float64 oracle can tell
    # from 0 (|a| + |b| ≤ 4u ≈ 1.5e-9). Next to a gradient of scale 2 that blind spot is
    # below FLOOR · max|b| = 2e-5 and cannot matter: 0 against ∂g/∂w₁ = 1e-10 passes …
    def g(w):
        return jnp.sum(w[0] ** 2) + 1e-10 * w[1]

    w64, grad64 = w.astype(jnp.float64), jnp.array([2.0, 0.0], jnp.float64)
    zero = gradcheck.check_gradient(g, w64, grad64)
    assert zero.passed and zero.max_error == 0.0, str(zero)
    assert "both below the oracle's resolution" in str(zero)

    # … but next to a gradient of scale 2e-5 (f ≈ 1, so u ≈ 3.7e-10 > FLOOR · 2e-5) the
    # oracle's blind spot could hide an error that matters: unresolved, not a pass.
    def tiny(w):
        return 1.0 + 1e-5 * w[0] ** 2 + 1e-10 * w[1]

    small = jnp.array([2e-5, 0.0], jnp.float64)
    first = gradcheck.compare(small, gradcheck.central_difference(tiny, w64), value=1.0)
    assert first.verdict == "UNRESOLVED" and first.leaves[0].unresolved == 1
    # The second look's wider steps resolve it (u h/H ≈ 1e-12 at H = 512h): 0 is 1e-10 off.
    assert gradcheck.check_gradient(tiny, w64, small).verdict == "FAIL"
    # Next to a gradient of scale 2e-8 even the widest step (u h/H ≈ 1e-12 > FLOOR · 2e-8)
    # cannot tell 1e-12 from 0: unresolved.

    def tinier(w):
        return 1.0 + 1e-8 * w[0] ** 2 + 1e-12 * w[1]

    unresolved = gradcheck.check_gradient(tinier, w64, jnp.array([2e-8, 1e-12], jnp.float64))
    assert unresolved.verdict == "UNRESOLVED" and unresolved.leaves[0].unresolved == 1
    assert unresolved.second_look and "even at wider steps" in str(unresolved), str(unresolved)
    # … while 0 against 1e-9, or 1e-8 against 1e-10, is more than u off: a failure.
    assert gradcheck.check_gradient(f, w64, grad64).verdict == "FAIL"
    assert gradcheck.check_gradient(g, w64, grad64.at[1].set(1e-8)).verdict == "FAIL"
    # An entry both sides call exactly 0 (f did not move at all) is resolved.
    flat = gradcheck.check_gradient(lambda w: jnp.sum(w[0] ** 2), w64, grad64)
    assert flat.passed and flat.num_unresolved == 0, str(flat)


def test_compare_one_numerical_gradient_with_several(tanh_problem):
    net, params, x, y, _ = tanh_problem
    fd = gradcheck.network_central_difference(net, params, x, y)
    assert fd.num_evaluations == 2 * (fnn.summary(net).num_params + x.size)
    for method in ("reverse", "explicit"):
        _, g = value_and_grad(net, params, x, y, method=method)
        assert gradcheck.compare(g, fd.numerical, value=fd.value).passed


# ---------------------------------------------------------------------------------------
# Power in float32: a float64 oracle, tolerances that a wrong entry cannot hide in.
# ---------------------------------------------------------------------------------------

# A small wrong entry, as a script: a float32 3-4-2 tanh network; with x64 off (as users run
# it) and on (as the test suite runs), the oracle is float64, the correct gradient passes,
# and one small entry ×2, ×0, ×(−1) or the largest entry ×1.01 fails.
POWER_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np, fnn
from fnn import gradcheck
assert jax.config.jax_enable_x64 == X64
net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
rng = np.random.default_rng(0)
params = [{k: jnp.asarray(rng.normal(0, 0.6, s), jnp.float32) for k, s in layer.items()}
          for layer in net.layer_shapes()]
x = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
y = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
_, grads = fnn.value_and_grad(net, params, x, y)
fd = gradcheck.network_central_difference(net, params, x, y)
assert fd.oracle_dtype == "float64" and all(
    np.asarray(n).dtype == np.float64 for n in jax.tree.leaves(fd.numerical))
report = gradcheck.compare(grads, fd.numerical, kinks=fd.kinks, value=fd.value)
assert report.passed and report.dtype == "float32", str(report)
flat, unravel = jax.flatten_util.ravel_pytree(grads)
size = np.abs(np.asarray(flat))
small = int(np.argmin(np.where(size >= 1e-4 * size.max(), size, np.inf)))
cases = [(small, 2.0), (small, 0.0), (small, -1.0), (int(np.argmax(size)), 1.01)]
for i, factor in cases:
    wrong = unravel(flat.at[i].multiply(factor))
    r = gradcheck.compare(wrong, fd.numerical, kinks=fd.kinks, value=fd.value)
    assert r.verdict == "FAIL", (i, factor, str(r))
print("caught", len(cases), "smallest entry", size[small])
"""


@pytest.mark.parametrize("x64", [False, True])
def test_float32_check_has_a_float64_oracle_with_and_without_x64(x64):
    src = Path(__file__).resolve().parents[1] / "src"
    script = f"import jax\njax.config.update('jax_enable_x64', {x64})\nX64 = {x64}\n"
    result = subprocess.run(
        [sys.executable, "-c", script + POWER_SCRIPT],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(src),
        "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("caught 4"), result.stdout


def test_a_small_doubled_float32_entry_fails_against_the_float64_oracle():
    """A 3-4-2 tanh network in float32: an entry of a few 1e-4 doubled hides in float32
    central differences (their own error there is 6 %); the float64 oracle fails it."""
    net, params, x, y = problem((3, 4, 2), ("tanh", "identity"), seed=32, dtype=np.float32)
    _, grads = value_and_grad(net, params, x, y)
    flat, unravel = jax.flatten_util.ravel_pytree(grads)
    i = int(np.argmin(np.abs(np.asarray(flat))))
    assert 2e-4 < abs(float(flat[i])) < 3e-4  # the smallest entry, below float32's resolution
    wrong = unravel(flat.at[i].multiply(2.0))
    # Float32 central differences cannot resolve it: unresolved, not a pass …
    old_style = gradcheck.check_network(net, params, x, y, wrong, oracle=None)
    assert old_style.oracle_dtype == "float32" and old_style.verdict == "UNRESOLVED"
    # … the float64 oracle resolves it, and fails it.
    report = gradcheck.check_network(net, params, x, y, wrong)
    assert report.oracle_dtype == "float64" and report.verdict == "FAIL", str(report)
    # The printed relative error is that of the printed numbers.
    hand, numerical = report.worst_hand, report.worst_numerical
    assert hand == pytest.approx(2 * float(flat[i]), rel=1e-6)
    assert report.max_error == pytest.approx(abs(hand - numerical) / (abs(hand) + abs(numerical)))
    assert f"hand {hand:.10g}, numerical {numerical:.10g}\n    relative error" in str(report)
    assert f"{report.max_error:.2e}" in str(report) and report.max_error > 0.3


@pytest.mark.slow
def test_power_script_quick(tmp_path, capsys):
    """scripts/gradcheck_power.py on 2 networks and 8 correct gradients (the full run: 210
    and 1120, see its docstring): every single-entry mutation caught, every correct gradient
    passed."""
    script = load_script(POWER)
    assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gradcheck_power.json").read_text())
    assert result["correct"] == {"PASS": 2, "FAIL": 0, "UNRESOLVED": 0}
    cases = sum(sum(t.values()) for t in result["tallies"].values())
    assert cases > 2 * 4 * 10 and result["caught"] >= 0.99 and result["false_alarms"] == 0
    assert set(result["directional"]) == {"1", "2", "4", "8", "16"}
    sweep = result["sweep"]["float32"]
    assert sweep["checked"] + sweep["skipped"] == 8 and result["sweep_false_alarms"] == 0
    assert (tmp_path / "gradcheck_power.png").stat().st_size > 5_000
    assert "caught" in capsys.readouterr().out


def test_the_boundary_of_a_tolerance_passes():
    # τ = t (|a| + |b|) + r + u = 0.25 · 2 + 0 + 0 = 0.5 = |a − b|: a pass (≤, not <).
    a, b = {"w": np.array([1.25])}, {"w": np.array([0.75])}
    exact = gradcheck.compare(a, b, threshold=0.25, atol=0.0, resolution=0.0)
    assert exact.passed and exact.worst_ratio == 1.0, str(exact)
    past = gradcheck.compare({"w": np.array([1.2500001])}, b, threshold=0.25, atol=0.0,
                             resolution=0.0)  # fmt: skip
    assert past.verdict == "FAIL"
    # And the absolute part: |a − b| = r + u exactly at a = b + 0.5, t = 0.
    at = gradcheck.compare({"w": np.array([1.0])}, {"w": np.array([0.5])}, threshold=0.0,
                           atol=0.25, resolution=0.25)  # fmt: skip
    assert at.passed and at.worst_ratio == 1.0
    with pytest.raises(ValueError, match=r"atol must be a finite number ≥ 0; got -1"):
        gradcheck.compare(a, b, atol=-1.0)
    with pytest.raises(ValueError, match=r"threshold must be a finite number ≥ 0; got nan"):
        gradcheck.compare(a, b, threshold=float("nan"))
    with pytest.raises(TypeError, match=r"resolution must be a real number; got '1e-9'"):
        gradcheck.compare(a, b, resolution="1e-9")


def test_a_loss_after_the_wrong_output_is_refused_not_reported_nan(tanh_problem):
    net, params, x, _, grads = tanh_problem  # identity output
    labels = jnp.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"loss 'cross_entropy' takes probabilities.*'identity'"):
        gradcheck.check_network(net, params, x, labels, grads, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"takes probabilities"):
        gradcheck.kink_crossings(net, params, x, labels, loss="cross_entropy")
    softmax_net = fnn.MLP(net.sizes, ("tanh", "softmax"))
    with pytest.raises(ValueError, match=r"applied to logits.*got 'softmax'"):
        gradcheck.network_central_difference(softmax_net, params, x, labels,
                                             loss="softmax_cross_entropy")  # fmt: skip


def test_bad_oracle_raises(tanh_problem):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match=r"oracle must be a floating dtype name.*'int32'"):
        gradcheck.check_network(net, params, x, y, grads, oracle="int32")
    with pytest.raises(ValueError, match=r"at least as precise as the point's dtype float64"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), jnp.ones(3), oracle="float32")
    with pytest.raises(TypeError, match=r"grads\['x'\] must be a floating array; got dtype int"):
        gradcheck.check_network(net, params, x, y, {**grads, "x": jnp.zeros((3, 3), int)})


def test_a_function_that_computes_in_float32_gets_a_float32_oracle():
    def f(w):  # casts whatever it gets: a float64 oracle is impossible, and said so
        return jnp.sum(jnp.sin(w.astype(jnp.float32)))

    w = jnp.array([0.3, 0.7], jnp.float32)
    report = gradcheck.check_gradient(f, w, jnp.cos(w))
    assert report.oracle_dtype == "float32" and report.passed, str(report)


# ---------------------------------------------------------------------------------------
# The directional check.
# ---------------------------------------------------------------------------------------


def test_directional_check(tanh_problem):
    net, params, x, y, grads = tanh_problem
    tree = {"params": params, "x": x}

    def f(t):
        return gradcheck.network_loss(net, t["params"], t["x"], y)

    key = jax.random.key(3)
    report = gradcheck.check_directional(f, tree, grads, key=key, k=5)
    assert report.passed and report.kind == "directional", str(report)
    assert report.leaves[0].size == 5 and report.num_evaluations == 10
    assert report.max_error < 1e-8
    assert gradcheck.check_directional(f, tree, grads, key=key, k=5) == report  # the key decides
    wrong = jax.tree.map(lambda g: 1.01 * g, grads)
    failed = gradcheck.check_directional(f, tree, wrong, key=key, k=5)
    assert not failed.passed and "FAIL" in str(failed)
    legacy = gradcheck.check_directional(f, tree, grads, key=jax.random.PRNGKey(3), k=2)
    assert legacy.passed
    with pytest.raises(TypeError, match=r"key must be one PRNG key.*got int of shape \(\)"):
        gradcheck.check_directional(f, tree, grads, key=0, k=2)


def test_directional_check_detects_what_it_reports_it_can():
    """A float32 gradient scaled by (1 + ρ): ρ below ``min_detectable`` (≈ 2t = 2e-3)
    passes, ρ above fails; the default k = 16 directions."""
    net, params, x, y = problem((3, 5, 2), ("tanh", "identity"), dtype=np.float32, seed=2)
    _, grads = value_and_grad(net, params, x, y)

    def f(p):
        return gradcheck.network_loss(net, p, x.astype(p[0]["W"].dtype), y.astype(p[0]["W"].dtype))

    key = jax.random.key(0)
    report = gradcheck.check_directional(f, params, grads["params"], key=key)
    assert report.passed and report.leaves[0].size == gradcheck.DIRECTIONS == 16, str(report)
    assert report.oracle_dtype == "float64"
    assert 2e-3 < report.min_detectable < 2.5e-3, report.min_detectable
    scaled = [
        gradcheck.check_directional(
            f, params, jax.tree.map(lambda g, rho=rho: g * (1 + rho), grads["params"]), key=key
        )
        for rho in (0.5 * report.min_detectable, 2 * report.min_detectable)
    ]
    assert scaled[0].passed and not scaled[1].passed, (str(scaled[0]), str(scaled[1]))
    assert "smallest relative error" in str(report)


# ---------------------------------------------------------------------------------------
# Kinks: reported, not failed.
# ---------------------------------------------------------------------------------------


def kinked_relu_net():
    """a¹ = W¹x + b¹ = 0 exactly for the first hidden unit: ReLU's kink, right at θ."""
    net = fnn.MLP((2, 2, 1), ("relu", "identity"))
    params = [
        {"W": jnp.array([[1.0, -1.0], [0.5, 0.25]]), "b": jnp.array([0.0, 0.1])},
        {"W": jnp.array([[2.0, -1.0]]), "b": jnp.array([0.3])},
    ]
    return net, params, jnp.array([0.5, 0.5]), jnp.array([1.0])


def test_relu_kink_is_reported_not_failed():
    net, params, x, y = kinked_relu_net()
    _, grads = value_and_grad(net, params, x, y)

    def f(t):
        return gradcheck.network_loss(net, t["params"], t["x"], y)

    tree = {"params": params, "x": x}
    # Without kink detection, the central difference (slope ½ on average) looks like a bug…
    assert not gradcheck.check_gradient(f, tree, grads).passed
    # … with it, the entries that move a¹₁ across 0 are reported instead. The weight out of
    # the dead unit (z¹₁ = 0): hand exactly 0, the float64 oracle's round-off ~1e-12, below
    # what it resolves (4u ≈ 2e-9) — a blind spot far below FLOOR × the gradient's scale,
    # where no error could matter: a pass, and no relative error of two noise-level numbers.
    report = gradcheck.check_network(net, params, x, y, grads)
    assert report.passed and report.verdict == "PASS", str(report)
    assert report.worst_path == "['params'][1]['W']" and report.worst_index == (0, 0)
    assert report.worst_hand == 0.0 and 0 < abs(report.worst_numerical) < report.resolution
    assert report.max_error == 0.0 and "both below the oracle's resolution" in str(report)
    # In float32 the gradient's own rounding (r = ROUNDING ε₃₂ max|b|) covers it: a pass.
    p32, x32, y32 = jax.tree.map(lambda a: a.astype(jnp.float32), (params, x, y))
    _, g32 = value_and_grad(net, p32, x32, y32)
    report32 = gradcheck.check_network(net, p32, x32, y32, g32)
    assert report32.passed and report32.num_kinks == 5, str(report32)
    kinks = gradcheck.kink_crossings(net, params, x, y)
    expected = {
        "params": [
            {"W": np.array([[1, 1], [0, 0]], bool), "b": np.array([1, 0], bool)},
            {"W": np.zeros((1, 2), bool), "b": np.zeros(1, bool)},
        ],
        "x": np.array([1, 1], bool),
    }
    chex.assert_trees_all_equal(kinks, expected)
    assert report.num_kinks == 5 and "kink crossed" in str(report)
    # The kink entries are out of every leaf's median and out of the overall median.
    assert report.leaves[0].median_error < 1e-9 and report.median_error < 1e-9


@pytest.mark.parametrize(("act", "a"), [("hard_tanh", 1.0), ("hard_tanh", -1.0),
                                        ("leaky_relu", 0.0), ("prelu", 0.0)])  # fmt: skip
def test_kinks_of_other_activations(act, a):
    net = fnn.MLP((1, 1, 1), (act, "identity"))
    params = fnn.init(jax.random.key(0), net)
    params[0]["W"], params[0]["b"] = jnp.array([[1.0]]), jnp.array([a - 0.5])
    x, y = jnp.array([0.5]), jnp.array([0.0])  # a = W x + b lands on the kink
    assert gradcheck.kink_crossings(net, params, x, y)["params"][0]["b"][0]
    params[0]["b"] = jnp.array([a - 0.4])  # 0.1 away: no step of ~1e-5 reaches it
    assert not gradcheck.kink_crossings(net, params, x, y)["params"][0]["b"][0]


def test_l1_residual_at_zero_is_a_kink():
    net = fnn.MLP((2, 2), ("identity",))
    params = [{"W": jnp.eye(2), "b": jnp.zeros(2)}]
    x = jnp.array([0.3, -0.2])
    y = jnp.array([0.3, 1.0])  # ŷ₁ − y₁ = 0 exactly
    _, grads = value_and_grad(net, params, x, y, loss="l1")
    report = gradcheck.check_network(net, params, x, y, grads, loss="l1")
    assert report.passed and report.num_kinks == 4, str(report)  # W₁₁, W₁₂, b₁, x₁
    kinks = gradcheck.kink_crossings(net, params, x, y, loss="l1")
    np.testing.assert_array_equal(kinks["params"][0]["b"], [True, False])


def test_smooth_networks_cross_no_kink(tanh_problem):
    net, params, x, y, _ = tanh_problem
    kinks = gradcheck.kink_crossings(net, params, x, y)
    assert not any(np.any(k) for k in jax.tree.leaves(kinks))


# ---------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------


def test_mismatched_pytrees_raise(tanh_problem):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match="grads must have the pytree structure"):
        gradcheck.check_network(net, params, x, y, grads["params"])
    wrong_shape = {"params": grads["params"], "x": grads["x"][0]}
    with pytest.raises(ValueError, match=r"grads\['x'\] must have shape \(3, 3\); got \(3,\)"):
        gradcheck.check_network(net, params, x, y, wrong_shape)
    with pytest.raises(ValueError, match="grad must have the pytree structure"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), [jnp.ones(3)])
    with pytest.raises(ValueError, match="kinks"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), jnp.ones(3), kinks=np.ones(2, bool))


def test_an_empty_batch_and_a_key_that_is_not_one_raise(tanh_problem):
    net, params, _, y, grads = tanh_problem
    empty = jnp.zeros((0, 3))
    with pytest.raises(ValueError, match=r"x must hold at least one example; got .*\(0, 3\)"):
        gradcheck.check_network(net, params, empty, y[:0], {**grads, "x": empty})
    with pytest.raises(ValueError, match=r"at least one example"):
        gradcheck.kink_crossings(net, params, empty, y[:0])
    f, t = jnp.sum, jnp.ones(3)
    keys = (
        np.zeros(3, np.uint32),
        np.zeros((2, 2), np.uint32),
        jax.random.split(jax.random.key(0)),
    )
    for key in keys:
        with pytest.raises(TypeError, match=r"key must be one PRNG key"):
            gradcheck.check_directional(f, t, t, key=key)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_eps_raises(tanh_problem, eps):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match="eps must be a positive finite number"):
        gradcheck.check_network(net, params, x, y, grads, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        gradcheck.check_gradient(jnp.sum, jnp.ones(3), jnp.ones(3), eps=eps)


def test_bad_directions_and_loss_raise(tanh_problem):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(ValueError, match="k must be a positive integer"):
        gradcheck.check_directional(jnp.sum, jnp.ones(3), jnp.ones(3), key=jax.random.key(0), k=0)
    with pytest.raises(ValueError, match="Unknown loss"):
        gradcheck.check_network(net, params, x, y, grads, loss="hinge")


def test_targets_that_do_not_fit_raise(tanh_problem):
    """Without the check a (2,) target broadcasts over the batch and a label out of range
    is clamped by the indexing: a check of a different loss than value_and_grad's."""
    net, params, x, y, grads = tanh_problem  # batch 3, 2 outputs
    with pytest.raises(ValueError, match=r"y for loss 'l2' must have the output's shape \(3, 2\)"):
        gradcheck.check_network(net, params, x, y[0], grads)
    softmax_net = fnn.MLP(net.sizes, ("tanh", "softmax"))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\) for 2 outputs; got 5"):
        gradcheck.kink_crossings(softmax_net, params, x, jnp.array([0, 1, 5]), loss="cross_entropy")


def test_a_function_that_is_not_scalar_raises():
    with pytest.raises(ValueError, match=r"f must return a scalar loss, shape \(\); got shape"):
        gradcheck.check_directional(lambda t: t, jnp.ones(3), jnp.ones(3), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"f must return a scalar loss"):
        gradcheck.check_gradient(lambda t: 2 * t, jnp.ones(3), jnp.ones(3))


# ---------------------------------------------------------------------------------------
# No false alarm on dead units; never a pass on NaN or inf.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dead_relu_units_in_float64_pass(seed):
    """float64, 6-8-8-4 relu/relu/identity, softmax cross-entropy, batch 3, weights
    ~ N(0, 0.6²): dozens of entries whose hand gradient is exactly 0 (dead units) and whose
    central difference is rounding noise (~1e-11). They pass, and no relative error of two
    noise-level numbers is reported."""
    net, params, x, y = problem((6, 8, 8, 4), ("relu", "relu", "identity"),
                                "softmax_cross_entropy", seed)  # fmt: skip
    _, grads = value_and_grad(net, params, x, y, loss="softmax_cross_entropy")
    zeros = sum(int(np.sum(np.asarray(g) == 0)) for g in jax.tree.leaves(grads))
    assert zeros >= 10
    report = gradcheck.check_network(net, params, x, y, grads, loss="softmax_cross_entropy")
    assert report.passed and report.verdict == "PASS", str(report)
    assert report.max_error < 1e-3, str(report)


def test_loss_and_activation_records_are_accepted(tanh_problem):
    net, params, x, y, grads = tanh_problem
    record = fnn.losses.get("l2")
    report = gradcheck.check_network(net, params, x, y, grads, loss=record)
    assert report.passed, str(report)
    assert float(gradcheck.network_loss(net, params, x, y, loss=record)) == pytest.approx(
        float(gradcheck.network_loss(net, params, x, y))
    )
    with pytest.raises(ValueError, match=r"takes probabilities.*'identity'"):
        gradcheck.network_loss(net, params, x, jnp.array([0, 1, 1]), loss="cross_entropy")


def test_options_are_keyword_only(tanh_problem):
    net, params, x, y, grads = tanh_problem
    with pytest.raises(TypeError):
        gradcheck.check_network(net, params, x, y, grads, "l2")
    with pytest.raises(TypeError):
        gradcheck.check_directional(jnp.sum, jnp.ones(3), jnp.ones(3), jax.random.key(0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nonfinite_gradient_fails_naming_the_entry(tanh_problem, bad):
    net, params, x, y, grads = tanh_problem
    wrong = jax.tree.map(lambda g: g, grads)
    wrong["params"][1]["b"] = grads["params"][1]["b"].at[1].set(bad)
    wrong["x"] = grads["x"].at[2, 0].set(bad)  # a later one: the first is named
    report = gradcheck.check_network(net, params, x, y, wrong)
    assert not report.passed and report.verdict == "FAIL"
    assert report.nonfinite == f"hand ['params'][1]['b'][1] = {bad}"
    assert report.worst_path == "['params'][1]['b']" and report.worst_index == (1,)
    assert "not finite: hand ['params'][1]['b'][1]" in str(report)
    all_nan = jax.tree.map(lambda g: jnp.full_like(g, np.nan), grads)
    assert not gradcheck.check_network(net, params, x, y, all_nan).passed
    # the oracle's side: a numerical gradient with an inf fails as well
    fd = gradcheck.network_central_difference(net, params, x, y)
    numerical = jax.tree.map(np.array, fd.numerical)
    numerical["x"][0, 1] = np.inf
    other = gradcheck.compare(grads, numerical, value=fd.value)
    assert not other.passed and other.nonfinite == "numerical ['x'][0, 1] = inf"


def test_nonfinite_inputs_of_a_check_are_errors(tanh_problem):
    net, params, x, y, grads = tanh_problem
    bad = jax.tree.map(lambda p: p, params)
    bad[0]["W"] = params[0]["W"].at[1, 2].set(np.nan)
    with pytest.raises(
        ValueError, match=r"params\[0\]\['W'\] must be finite; got nan at index \(1, 2\)"
    ):
        gradcheck.check_network(net, bad, x, y, grads)
    with pytest.raises(ValueError, match=r"x must be finite; got inf at index \(0, 1\)"):
        gradcheck.kink_crossings(net, params, x.at[0, 1].set(np.inf), y)
    with pytest.raises(ValueError, match=r"tree\['w'\] must be finite; got nan"):
        gradcheck.check_gradient(jnp.sum, {"w": jnp.array([np.nan])}, {"w": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"tree must be finite"):
        gradcheck.check_directional(jnp.sum, jnp.array([np.inf]), jnp.ones(1),
                                    key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match=r"v\[1\]\['b'\] must be finite"):
        v = jax.tree.map(jnp.ones_like, params)
        v[1]["b"] = v[1]["b"].at[0].set(np.nan)
        gradcheck.check_hvp(net, params, x, y, v, v)


def test_a_directional_check_of_nan_fails(tanh_problem):
    net, params, x, y, grads = tanh_problem

    def f(p):
        return gradcheck.network_loss(net, p, x, y)

    wrong = jax.tree.map(lambda g: g, grads["params"])
    wrong[0]["W"] = wrong[0]["W"].at[0, 0].set(np.nan)
    report = gradcheck.check_directional(f, params, wrong, key=jax.random.key(0), k=4)
    assert not report.passed and report.nonfinite.startswith("hand ⟨∇f, v⟩[0] = nan")


# ---------------------------------------------------------------------------------------
# Hessian-vector products.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hvp_problem():
    net, params, x, y = problem((3, 4, 2), ("tanh", "identity"), seed=4, dtype=np.float32)
    v = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)),
                     params)  # fmt: skip
    return net, params, x, y, v, fnn.hvp(net, params, x, y, v)


def test_check_hvp_passes_a_correct_product_and_fails_a_wrong_one(hvp_problem):
    net, params, x, y, v, Hv = hvp_problem
    report = gradcheck.check_hvp(net, params, x, y, v, Hv)
    assert report.passed and report.kind == "HVP" and report.dtype == "float32", str(report)
    assert report.oracle_dtype == "float64" and "HVP check PASS" in str(report)
    wrong = jax.tree.map(lambda h: h, Hv)
    wrong[1]["W"] = Hv[1]["W"] * 1.01
    assert gradcheck.check_hvp(net, params, x, y, v, wrong).verdict == "FAIL"


def test_check_hvp_judges_in_the_parameters_dtype_and_scales_with_v(hvp_problem):
    net, params, x, y, v, Hv = hvp_problem
    # a correct float32 product handed over as float64 is no more accurate than float32
    wide = jax.tree.map(lambda h: np.asarray(h, np.float64), Hv)
    report = gradcheck.check_hvp(net, params, x, y, v, wide)
    assert report.passed and report.dtype == "float32", str(report)
    # the check of c v is that of v, scaled: for c = 1e-30 as for c = 1
    tiny_v = jax.tree.map(lambda t: t * 1e-30, v)
    tiny = gradcheck.check_hvp(net, params, x, y, tiny_v, fnn.hvp(net, params, x, y, tiny_v))
    assert tiny.passed, str(tiny)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_hvp_never_passes_nan(hvp_problem, bad):
    net, params, x, y, v, Hv = hvp_problem
    one = jax.tree.map(lambda h: h, Hv)
    one[0]["b"] = Hv[0]["b"].at[2].set(bad)
    report = gradcheck.check_hvp(net, params, x, y, v, one)
    assert not report.passed and report.nonfinite == f"hand [0]['b'][2] = {bad}", str(report)
    every = jax.tree.map(lambda h: jnp.full_like(h, bad), Hv)
    assert not gradcheck.check_hvp(net, params, x, y, v, every).passed


def test_check_hvp_fails_where_the_step_crosses_a_kink():
    """θ ± h v moves a¹₁ = 0 (ReLU's kink) to both sides: ∇L jumps, the quotient is no
    second derivative, and the check fails (it says why) even for the product of fnn.hvp."""
    net, params, x, y = kinked_relu_net()
    v = jax.tree.map(jnp.ones_like, params)
    Hv = fnn.hvp(net, params, x, y, v)
    report = gradcheck.check_hvp(net, params, x, y, v, Hv)
    assert not report.passed and report.kinks_crossed >= 1, str(report)
    assert report.verdict == "FAIL" and "crosses a kink" in str(report)
    # a direction that leaves a¹₁ where it is (only the second layer moves) crosses none
    still = [jax.tree.map(jnp.zeros_like, params[0]), jax.tree.map(jnp.ones_like, params[1])]
    calm = gradcheck.check_hvp(net, params, x, y, still, fnn.hvp(net, params, x, y, still))
    assert calm.passed and calm.kinks_crossed == 0, str(calm)


def test_a_saturated_probability_is_unresolved_not_failed():
    """σ(30) = 1 − 9e-14: L = −0.7 log(1 − p) is computed from 1 − p to only ~1e-3, so its
    central difference is noise; |J_L| |ŷ| ≈ 7e12 says so, and the check is UNRESOLVED (the
    oracle cannot judge it) instead of failing a correct gradient."""
    net = fnn.MLP((2, 1), ("sigmoid",))
    params = [{"W": jnp.array([[30.0, 0.0]]), "b": jnp.zeros(1)}]
    x, y = jnp.array([1.0, 0.0]), jnp.array([0.3])
    _, grads = value_and_grad(net, params, x, y, loss="binary_cross_entropy")
    fd = gradcheck.network_central_difference(net, params, x, y, loss="binary_cross_entropy")
    assert fd.condition > 1e12
    report = gradcheck.check_network(net, params, x, y, grads, loss="binary_cross_entropy")
    assert report.verdict == "UNRESOLVED" and report.resolution > 1.0, str(report)
    # a well-conditioned point of the same network: a plain pass, u at its usual size
    params[0]["W"] = jnp.array([[0.5, 0.0]])
    _, grads = value_and_grad(net, params, x, y, loss="binary_cross_entropy")
    calm = gradcheck.check_network(net, params, x, y, grads, loss="binary_cross_entropy")
    assert calm.passed and calm.resolution < 1e-8, str(calm)


def test_the_float32_rounding_allowance_is_a_few_ulps_of_the_largest_entry():
    """``r = ROUNDING · ε_mach · max|b|`` grants a float32 gradient its measured rounding
    (worst 3.5 ε · max|b|), no more: an exact-zero entry off by 3 ε · max|b| passes, one off
    by 20 ε · max|b| fails — a 10× looser allowance would let it through."""
    eps = float(np.finfo(np.float32).eps)
    c = np.array([1.0, 0.0], np.float32)
    theta = jnp.asarray([0.3, -0.7], jnp.float32)

    def f(t):
        return jnp.sum(c.astype(t.dtype) * t)

    for ulps, verdict in ((3, "PASS"), (20, "FAIL")):
        grad = jnp.asarray([1.0, ulps * eps], jnp.float32)
        report = gradcheck.check_gradient(f, theta, grad)
        assert report.verdict == verdict, (ulps, str(report))


def test_a_float32_gradient_gets_its_own_rounding_and_keeps_its_power():
    # Softmax hidden units, l1, float32, weights ~ N(0, 1e-3²): a correct float32 gradient
    # carries rounding ~17 ε₃₂ max|b| at ill-conditioned entries, beyond ROUNDING ε₃₂ max|b|.
    # r grows there by SPREAD |g₃₂ − g₆₄| (fnn's reverse mode in both dtypes): it passes,
    # while ×1.01 on the largest entry, and on every well-conditioned one ≥ 1e-2 max, fails
    # (below, the oracle's u ≈ 1.5e-6 max|b| here hides a 1 % error whatever r is).
    net = fnn.MLP((3, 4, 2), ("softmax", "identity"))
    rng = np.random.default_rng(16)
    params = [{k: jnp.asarray(rng.normal(0, 1e-3, s), jnp.float32) for k, s in layer.items()}
              for layer in net.layer_shapes()]  # fmt: skip
    x = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)
    _, grads = fnn.value_and_grad(net, params, x, y, loss="l1", method="explicit")
    fd = gradcheck.network_central_difference(net, params, x, y, loss="l1")
    assert fd.spread is not None
    assert gradcheck.compare_network(grads, fd, atol=None).verdict == "PASS"
    without = gradcheck.compare_network(grads, fd._replace(spread=None))
    assert without.verdict == "FAIL"  # the false alarm of a uniform r
    assert gradcheck.check_network(net, params, x, y, grads, loss="l1").passed
    flat, unravel = jax.flatten_util.ravel_pytree(grads)
    size = np.abs(np.asarray(flat, np.float64))
    spread = jax.flatten_util.ravel_pytree(fd.spread)[0]
    eps_max = float(jnp.finfo(jnp.float32).eps) * size.max()
    tight = np.flatnonzero((size >= 1e-2 * size.max()) & (spread <= eps_max))
    assert int(np.argmax(size)) in tight and tight.size >= 10
    for j in tight:
        wrong = unravel(flat.at[j].multiply(1.01))
        assert gradcheck.check_network(net, params, x, y, wrong, loss="l1").verdict == "FAIL"


def test_float64_gradients_get_no_spread(tanh_problem):
    net, params, x, y, _ = tanh_problem
    fd = gradcheck.network_central_difference(net, params, x, y)
    assert fd.spread is None


def test_the_second_look_measures_the_oracles_own_truncation():
    """f(w) = a w + b w³ at w = 0: the quotient at h is a + b h², a truncation the first
    look cannot tell from an error in a; before it fails the entry the oracle takes the
    quotient at 2h as well, and Richardson's extrapolation is exact for a cubic (S11)."""
    a, b = 1e-3, 1e4
    f = lambda t: jnp.sum(a * t["w"] + b * t["w"] ** 3)  # noqa: E731
    tree = {"w": jnp.zeros(2, jnp.float64)}
    grad = {"w": jnp.full(2, a, jnp.float64)}
    first = gradcheck.compare(grad, gradcheck.central_difference(f, tree))
    assert first.verdict == "FAIL" and not first.second_look, str(first)
    report = gradcheck.check_gradient(f, tree, grad)
    looks = len(rungs(fnn.numerical.default_eps(np.float64)))  # 2P evaluations each
    assert report.passed and report.second_look and report.num_evaluations == 4 * looks
    assert "second look" in str(report)
    wrong = gradcheck.check_gradient(f, tree, {"w": grad["w"].at[1].multiply(1.01)})
    assert wrong.verdict == "FAIL" and wrong.second_look and wrong.worst_index == (1,)
    assert wrong.num_evaluations == 8  # a FAIL at h and 2h ends the second look
    # A passing first look needs no second: 2P evaluations.
    assert gradcheck.check_gradient(lambda t: jnp.sum(t["w"] ** 2), tree,
                                    {"w": jnp.zeros(2)}).num_evaluations == 4  # fmt: skip


def test_the_second_look_keeps_the_first_where_the_quotients_disagree():
    # Where D(h) and D(2h) agree, the first look's resolution grows by its measured
    # truncation |D(h) − D(2h)| / 3; where they differ by more than AGREE and than their
    # round-off (a kink between h and 2h), or D(2h) is not finite (a kink crossed), the first
    # look and u stand.
    u = 1e-9
    fine, coarse = {"w": np.array([1.0, 1.0])}, {"w": np.array([1.0 + 5e-3, 3.0])}
    better, resolution = richardson([fine, coarse], u)
    np.testing.assert_array_equal(better["w"], [1.0, 1.0])
    np.testing.assert_allclose(resolution["w"], [u + 5e-3 / 3, u])
    better, resolution = richardson([fine, {"w": np.array([np.nan, np.inf])}], u)
    np.testing.assert_array_equal(better["w"], [1.0, 1.0])
    np.testing.assert_array_equal(resolution["w"], [u, u])


def test_the_second_look_takes_the_pair_of_steps_with_the_smallest_resolution():
    """Quotients at h, 2h, 4h, 8h of an entry whose round-off (u h/H) hides it at h: each
    pair within its round-off is usable, the widest gives u_H = 1.5 u/4 + |D(4h) − D(8h)|/3;
    a pair with a kink (NaN) is skipped (the first look keeps u and its own truncation), and
    a pair that agrees with neither AGREE nor its round-off is not taken (S11)."""
    u = 1e-9
    d = [np.array([v]) for v in (2e-10, 6e-10, 5e-10, 5.001e-10)]
    better, resolution = richardson([{"w": q} for q in d], u)
    assert resolution["w"][0] == pytest.approx(1.5 * u / 4 + 1e-13 / 3)
    assert better["w"][0] == pytest.approx((4 * 5e-10 - 5.001e-10) / 3)
    kinked = [d[0], d[1], np.array([np.nan]), d[3]]
    _, resolution = richardson([{"w": q} for q in kinked], u)
    assert resolution["w"][0] == pytest.approx(u + 4e-10 / 3)  # the first look
    apart = [np.array([1.0]), np.array([1.5]), np.array([1.0])]  # neither pair agrees
    better, resolution = richardson([{"w": q} for q in apart], u)
    assert better["w"][0] == 1.0 and resolution["w"][0] == u


def test_a_pair_of_one_sided_quotients_is_extrapolated_to_first_order():
    """D(H) = g + cH from one side (the other crosses a kink): 2 D(H) − D(2H) = g, with the
    resolution 5 u h/H + |D(H) − D(2H)|, taken where it beats the first look's u (from 8h
    on); a pair of two kinds, or of two sides, is not used (S11)."""
    u, g, c, h = 1e-6, 2e-6, 1e-3, 1e-5
    d = [{"w": np.array([g + c * h * 2.0**j])} for j in range(5)]
    one = [{"w": np.array([0])}] + [{"w": np.array([1])}] * 4  # central at h, then one side
    better, resolution = richardson(d, u, one)
    assert better["w"][0] == pytest.approx(g, rel=1e-9)
    assert resolution["w"][0] == pytest.approx(5 * u / 8 + 8 * c * h)
    mixed = [{"w": np.array([k])} for k in (0, 1, -1, 1, -1)]
    better, resolution = richardson(d, u, mixed)
    assert better["w"][0] == d[0]["w"][0] and resolution["w"][0] == u


def test_one_sided_quotients_resolve_an_entry_whose_wider_steps_cross_a_kink():
    """A float64 PReLU network with weights ~ N(0, 1e-3) and an L1 loss: two bias entries
    are exactly 0 (their signs cancel over the batch) while the quotient at h is one
    rounding of L; wider central steps cross a kink before they resolve 1e-5 of the
    gradient's scale. Where one side of a step crosses, the other side's one-sided
    quotients resolve them: PASS, and ×1.01 on every entry ≥ 1e-4 max still fails (S11)."""
    net = fnn.MLP((2, 3, 3, 2), ("prelu", "prelu", "identity"))
    rng = np.random.default_rng(825)
    params = [{k: jnp.asarray(rng.normal(0.0, 1e-3, s)) for k, s in layer.items()}
              for layer in net.layer_shapes()]  # fmt: skip
    x, y = jnp.asarray(rng.normal(size=(2, 2))), jnp.asarray(rng.normal(size=(2, 2)))
    _, grads = fnn.value_and_grad(net, params, x, y, loss="l1", method="explicit")
    fd = gradcheck.network_central_difference(net, params, x, y, loss="l1")
    assert gradcheck.compare_network(grads, fd).verdict == "UNRESOLVED"
    loss_fn = fnn.losses.get("l1")
    eps = fnn.numerical.default_eps(np.float64)
    sides = [fnn.network_checks.wider_quotient(net, params, x, y, loss_fn, "float64", step)[1]
             for step in rungs(eps)]  # fmt: skip
    assert any(np.any(jax.flatten_util.ravel_pytree(s)[0] != 0) for s in sides)
    report = gradcheck.check_network(net, params, x, y, grads, loss="l1")
    assert report.passed and report.second_look, str(report)
    flat, unravel = jax.flatten_util.ravel_pytree(grads)
    size = np.abs(np.asarray(flat))
    kinks = jax.flatten_util.ravel_pytree(fd.kinks)[0]
    for j in np.flatnonzero((size >= 1e-4 * size.max()) & ~kinks):
        wrong = unravel(flat.at[j].multiply(1.01))
        assert not gradcheck.check_network(net, params, x, y, wrong, loss="l1").passed, j


def test_the_second_look_climbs_only_as_far_as_it_must():
    # Float64's ε ≈ 6e-6 doubles ten times up to WIDEST = 1 %; a step wider than WIDEST / 2
    # gets h and 2h alone.
    steps = rungs(fnn.numerical.default_eps(np.float64))
    assert len(steps) == 11 and steps[-1] <= WIDEST < 2 * steps[-1]
    assert rungs(0.1) == (0.1, 0.2)


def test_a_gradient_too_small_for_the_first_step_is_resolved_at_a_wider_one():
    """f = 1 + Σ c_i sin(w_i): the constant 1 sets the round-off, the gradient is 1e-7 with
    entries of 3e-10 — unresolved at h in float64, resolved on the second look's ladder,
    where a 1 % error in a 3e-10 entry still fails; an entry the first look passed keeps
    its first look (S11)."""
    c = jnp.array([1e-7, 3e-10, -3e-10, 0.0])
    f = lambda t: 1.0 + jnp.sum(c * jnp.sin(t["w"]))  # noqa: E731
    tree = {"w": jnp.array([0.5, 0.3, -0.2, 0.7])}
    grad = {"w": c * jnp.cos(tree["w"])}
    first = gradcheck.compare(grad, gradcheck.central_difference(f, tree), value=1.0)
    assert first.verdict == "UNRESOLVED", str(first)
    report = gradcheck.check_gradient(f, tree, grad)
    assert report.passed and report.second_look, str(report)
    for j in (1, 2):
        wrong = {"w": grad["w"].at[j].multiply(1.01)}
        failed = gradcheck.check_gradient(f, tree, wrong)
        assert failed.verdict == "FAIL" and failed.worst_index == (j,), str(failed)


def test_a_network_gradient_passes_the_second_look_and_a_wrong_one_still_fails():
    """A float64 cos network with inputs ×20 (a sweep's saturated regime): the oracle's
    truncation at one entry of W₁ exceeds the first look's tolerance; the second look
    passes the correct gradient, and every entry ≥ 1e-4 max multiplied by 1.01 still
    fails (S11, S19)."""
    net = fnn.MLP((4, 5, 3), ("cos", "identity"))
    rng = np.random.default_rng(764)
    params = [{k: jnp.asarray(rng.normal(0.0, 1.5, s)) for k, s in layer.items()}
              for layer in net.layer_shapes()]  # fmt: skip
    x = jnp.asarray(20 * rng.normal(size=(3, 4)))
    y = jnp.asarray(rng.normal(size=(3, 3)))
    _, grads = fnn.value_and_grad(net, params, x, y, loss="l2")
    fd = gradcheck.network_central_difference(net, params, x, y, loss="l2")
    assert gradcheck.compare_network(grads, fd).verdict == "FAIL"
    report = gradcheck.check_network(net, params, x, y, grads, loss="l2")
    assert report.passed and report.second_look, str(report)
    looks = len(rungs(fnn.numerical.default_eps(np.float64)))
    assert report.num_evaluations == looks * fd.num_evaluations
    flat, unravel = jax.flatten_util.ravel_pytree(grads)
    size = np.abs(np.asarray(flat))
    for j in np.flatnonzero(size >= 1e-4 * size.max()):
        wrong = unravel(flat.at[j].multiply(1.01))
        assert not gradcheck.check_network(net, params, x, y, wrong, loss="l2").passed, j
