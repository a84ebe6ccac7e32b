"""More out of one backward pass (S23–S25), proven against jax.vmap(jax.grad), central
differences and closed forms.

Witnesses: the per-example gradient of ``L_b = loss(fnn.apply(net, params, x_b), y_b)`` by
``jax.vmap(jax.grad)``; its norm, clipped mean and statistics computed from those ``B``
gradients by the formulas of the docstrings; δ and ∂L/∂z by ``jax.grad`` w.r.t. ``a⁽ⁱ⁾`` and
``z⁽ⁱ⁾`` of the rest of the network. Tolerances as in test_backprop: float64 rtol 1e-10,
float32 rtol 1e-4; central differences rtol 1e-6.
"""

import dataclasses
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import Phase, given, settings

import fnn
from conftest import load_script
from fnn import activations, layer, losses
from test_backprop import CD, F32, F64, architectures, central_differences, problem

ROOT = Path(__file__).parents[1]


# ---------------------------------------------------------------------------------------
# The witnesses: everything from jax.vmap(jax.grad) of one example's loss.
# ---------------------------------------------------------------------------------------


def example_loss(net, loss_name):
    loss_fn = losses.get(loss_name).fn
    return lambda params, x, y: loss_fn(fnn.apply(net, params, x), y)


def rest_of_network(net, params, i, loss_name):
    """``L_b`` as a function of ``a⁽ⁱ⁾`` and of ``z⁽ⁱ⁾`` (0-based layer i): the layers above
    i written out with the activations' ``fn`` only, the witness for δ and ∂L/∂z."""

    def from_z(z, y):
        for p, f in zip(params[i + 1 :], net.activations[i + 1 :]):
            z = activations.get(f).fn(p["W"] @ z + p["b"], **layer.activation_params(p))
        return losses.get(loss_name).fn(z, y)

    def from_a(a, y):
        f, p = net.activations[i], params[i]
        return from_z(activations.get(f).fn(a, **layer.activation_params(p)), y)

    return from_a, from_z


def vmap_grad(net, params, x, y, loss_name):
    """The witness: ``(L_b, ∇θ L_b)`` for every b by ``jax.vmap(jax.value_and_grad)``."""
    per_example = jax.value_and_grad(example_loss(net, loss_name))
    return jax.vmap(per_example, (None, 0, 0))(params, x, y)


def references(losses_b, grads_b, max_norm):
    """Norms, clipped mean and statistics from the B gradients, in NumPy (no compile)."""
    grads_b = jax.tree.map(np.asarray, grads_b)
    B = len(losses_b)
    norms = np.sqrt(sum(np.sum(g.reshape(B, -1) ** 2, axis=1) for g in jax.tree.leaves(grads_b)))
    s = np.minimum(1.0, max_norm / norms)
    mean = jax.tree.map(lambda g: np.mean(g, axis=0), grads_b)
    return {
        "norms": norms,
        "clipped": (np.mean(losses_b), jax.tree.map(lambda g: np.tensordot(s, g, 1) / B, grads_b)),
        "sum_sq": jax.tree.map(lambda g: np.sum(g**2, axis=0), grads_b),
        "variance": jax.tree.map(lambda g, m: np.mean(g**2, axis=0) - m**2, grads_b, mean),
    }


def trace_witness(net, params, x, y, loss_name):
    """δ⁽ⁱ⁾ and ∂L_b/∂z⁽ⁱ⁾ by jax.grad w.r.t. a⁽ⁱ⁾ and z⁽ⁱ⁾, and the forward cache."""
    _, caches = fnn.forward_pass(net, params, x)
    deltas, dzs = [], []
    for i, c in enumerate(caches):
        from_a, from_z = rest_of_network(net, params, i, loss_name)
        deltas.append(jax.vmap(jax.grad(from_a))(c.a, y))
        dzs.append(jax.vmap(jax.grad(from_z))(c.z, y))
    return caches, deltas, dzs


def ours(net, params, x, y, loss_name, max_norm):
    return {
        "per_example": fnn.per_example_grads(net, params, x, y, loss=loss_name),
        "norms": fnn.per_example_grad_norms(net, params, x, y, loss=loss_name),
        "clipped": fnn.clipped_grad(net, params, x, y, max_norm=max_norm, loss=loss_name),
        "stats": fnn.gradient_statistics(net, params, x, y, loss=loss_name),
    }


def s24_s25(net, loss_name):
    """``(params, x, y) -> (ours, jax.vmap(jax.grad), C)`` with C the median per-example norm
    (traced): about half the examples are clipped."""

    def run(params, x, y):
        C = jnp.median(fnn.per_example_grad_norms(net, params, x, y, loss=loss_name))
        return ours(net, params, x, y, loss_name, C), vmap_grad(net, params, x, y, loss_name), C

    return run


def check_s24_s25(results, tol):
    """per_example_grads, its norms, the clipped mean and the statistics against the
    references computed from jax.vmap(jax.grad)'s B gradients."""
    got, (losses_b, grads_b), max_norm = results
    ref = references(losses_b, grads_b, max_norm)
    chex.assert_trees_all_close(got["per_example"], (losses_b, grads_b), **tol)
    chex.assert_trees_all_equal_shapes_and_dtypes(got["per_example"][1], grads_b)
    chex.assert_trees_all_close(got["norms"], ref["norms"], **tol)
    chex.assert_trees_all_close(got["clipped"], ref["clipped"], **tol)
    chex.assert_trees_all_close(got["stats"]["sum_sq"], ref["sum_sq"], **tol)
    # the variance is a difference of two nearly equal numbers: its error is that of E[g²]
    leaves = map(jax.tree.leaves, (got["stats"]["variance"], ref["variance"], ref["sum_sq"]))
    for v, r, s in zip(*leaves):
        np.testing.assert_allclose(
            v, r, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * np.max(s)
        )
    return max_norm, ref["norms"]


def assert_everything(net, params, x, y, loss_name, tol):
    """S23–S25 against their witnesses, one XLA compile."""
    results = assert_trace(net, params, x, y, loss_name, tol, also=s24_s25(net, loss_name))
    return check_s24_s25(results, tol)


def assert_trace(net, params, x, y, loss_name, tol, also=None):
    """S23: every field of the trace against the forward cache, jax.grad w.r.t. a⁽ⁱ⁾ and z⁽ⁱ⁾,
    jax.vmap(jax.grad)'s per-example gradients and the engine's batch gradient, in one jit
    (with ``also(params, x, y)``'s results, returned: one compile for a whole test)."""

    @jax.jit
    def run(params, x, y):
        t = fnn.backprop_trace(net, params, x, y, loss=loss_name)
        engine = fnn.value_and_grad(net, params, x, y, loss=loss_name)
        witness = trace_witness(net, params, x, y, loss_name)
        more = None if also is None else also(params, x, y)
        return (
            (t.loss, t.layers, t.dL_dx),
            engine,
            witness,
            vmap_grad(net, params, x, y, loss_name),
            more,
        )

    got, (value, grads), (caches, deltas, dzs), (_, grads_b), more = run(params, x, y)
    loss, layers, dL_dx = got
    chex.assert_trees_all_close(loss, value, **tol)
    chex.assert_trees_all_close(dL_dx / len(x), grads["x"], **tol)
    for i, (lt, c) in enumerate(zip(layers, caches)):
        chex.assert_trees_all_close((lt.z_prev, lt.a, lt.z), (c.z_prev, c.a, c.z), **tol)
        chex.assert_trees_all_close((lt.dL_da, lt.dL_dz), (deltas[i], dzs[i]), **tol)
        g = {"W": lt.dL_dW, "b": lt.dL_db}
        if lt.dL_dalpha is not None:
            g["alpha"] = lt.dL_dalpha
        chex.assert_trees_all_close(g, grads_b[i], **tol)
        mean = jax.tree.map(lambda v: jnp.mean(v, axis=0), g)
        chex.assert_trees_all_close(mean, grads["params"][i], **tol)
    return more


# ---------------------------------------------------------------------------------------
# S23–S25 against jax.vmap(jax.grad): random architectures, every activation and loss.
# ---------------------------------------------------------------------------------------


# Every new architecture is a new XLA compile: few examples, no shrinking (as test_backprop).
@settings(max_examples=3, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(architectures())
def test_everything_equals_vmap_grad_float64(arch):
    seed, sizes, acts, loss_name, batch = arch
    net, params, x, y = problem(seed, sizes, acts, loss_name, max(batch, 2))
    assert_everything(net, params, x, y, loss_name, F64)


# Every activation as a hidden unit (two per network) and every loss, cycled.
_ACTS, _LOSSES = activations.names(), losses.names()
_CASES = [(_ACTS[i : i + 2], _LOSSES[(i // 2) % len(_LOSSES)]) for i in range(0, len(_ACTS), 2)]


def test_every_activation_and_loss_float64():
    """The activation and the loss enter through δ (fnn.layer.delta, J_L): per-example
    gradients and norms here, every case in one jit (one compile); the rest is the same code
    for every activation."""
    problems = [problem(5, (4, 5, 5, 3), (*h, h[0]), n, 6) for h, n in _CASES]

    @jax.jit
    def run(all_params, all_x, all_y):
        out = []
        for (net, *_), (_, loss_name), p, x, y in zip(problems, _CASES, all_params, all_x, all_y):
            ours = fnn.per_example_grads(net, p, x, y, loss=loss_name)
            norms = fnn.per_example_grad_norms(net, p, x, y, loss=loss_name)
            out.append((ours, norms, vmap_grad(net, p, x, y, loss_name)))
        return out

    results = run(*[[pr[k] for pr in problems] for k in (1, 2, 3)])
    for (hidden, loss_name), (ours, norms, (losses_b, grads_b)) in zip(_CASES, results):
        case = f"{hidden}/{loss_name}"
        chex.assert_trees_all_close(ours, (losses_b, grads_b), **F64, custom_message=case)
        expected = references(losses_b, grads_b, 1.0)["norms"]
        chex.assert_trees_all_close(norms, expected, **F64, custom_message=case)


def test_float32():
    net, params, x, y = problem(
        7, (6, 8, 8, 4), ("tanh", "prelu", "softmax"), "cross_entropy", 5, np.float32
    )
    assert_everything(net, params, x, y, "cross_entropy", F32)


def test_scanned_runs_give_the_same_numbers():
    """A run of identical layers scanned (``scan_per_layer_results``) or unrolled: equal."""
    net, params, x, y = problem(3, (5, 5, 5, 5, 2), ("tanh", "tanh", "tanh", "identity"), "l2", 4)
    scanned = dataclasses.replace(net, scan_min_layers=2, scan_per_layer_results=True)
    assert "scan[" in str(jax.make_jaxpr(lambda p: fnn.per_example_grads(scanned, p, x, y))(params))

    def run(net):
        return jax.jit(
            lambda p: (ours(net, p, x, y, "l2", 0.5), fnn.backprop_trace(net, p, x, y).layers)
        )(params)

    chex.assert_trees_all_close(run(scanned), run(net), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------
# Central differences and closed forms: the other two witnesses.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_name", ["l2", "softmax_cross_entropy"])
def test_per_example_grads_equal_central_differences(loss_name):
    """S19 for each example's own loss: ∂L_b/∂θ against (L_b(θ+ε) − L_b(θ−ε)) / 2ε."""
    net, params, x, y = problem(4, (3, 4, 3), ("prelu", "identity"), loss_name, 3)
    L = example_loss(net, loss_name)

    @jax.jit
    def run(params, x, y):
        numerical = [central_differences(lambda p, b=b: L(p, x[b], y[b]), params) for b in range(3)]
        return fnn.per_example_grads(net, params, x, y, loss=loss_name)[1], numerical

    grads_b, numerical = run(params, x, y)
    for b in range(3):
        chex.assert_trees_all_close(jax.tree.map(lambda g, b=b: g[b], grads_b), numerical[b], **CD)


def test_closed_form_linear_l2():
    """One linear layer, L_b = ‖r_b‖², r_b = W x_b + c − y_b: ∂L_b/∂W = 2 r_b x_bᵀ,
    ∂L_b/∂c = 2 r_b, so ‖∇L_b‖² = 4 ‖r_b‖² (‖x_b‖² + 1), Σ_b (∂L_b/∂W)² = 4 Σ_b r_b² x_b²ᵀ."""
    net, params, x, y = problem(1, (3, 2), ("identity",), "l2", 5)
    grads_b, norms, stats = jax.jit(
        lambda p: (
            fnn.per_example_grads(net, p, x, y)[1],
            fnn.per_example_grad_norms(net, p, x, y),
            fnn.gradient_statistics(net, p, x, y),
        )
    )(params)
    r = np.asarray(x @ params[0]["W"].T + params[0]["b"] - y)
    x = np.asarray(x)
    chex.assert_trees_all_close(grads_b[0]["W"], 2 * r[:, :, None] * x[:, None, :], **F64)
    chex.assert_trees_all_close(grads_b[0]["b"], 2 * r, **F64)
    expected = 2 * np.linalg.norm(r, axis=1) * np.sqrt(np.sum(x**2, axis=1) + 1)
    chex.assert_trees_all_close(norms, expected, **F64)
    chex.assert_trees_all_close(stats["sum_sq"][0]["W"], 4 * (r**2).T @ x**2, **F64)


def test_clipping_bounds_every_example():
    """Each clipped per-example gradient has norm ≤ C; with C above every norm nothing changes
    (clipped_grad = value_and_grad's gradient); a zero gradient stays zero, not NaN."""
    net, params, x, y = problem(2, (4, 6, 2), ("tanh", "identity"), "l2", 6)

    @jax.jit
    def run(params, x, y):
        norms = fnn.per_example_grad_norms(net, params, x, y)
        y_hat = fnn.apply(net, params, x)  # targets = outputs: every gradient is exactly 0
        return {
            "norms": norms,
            "big": fnn.clipped_grad(net, params, x, y, max_norm=2 * jnp.max(norms)),
            "small": fnn.clipped_grad(net, params, x, y, max_norm=jnp.min(norms) / 2)[1],
            "engine": fnn.value_and_grad(net, params, x, y),
            "zero_norms": fnn.per_example_grad_norms(net, params, x, y_hat),
            "zero": fnn.clipped_grad(net, params, x, y_hat, max_norm=1.0)[1],
        }

    got = run(params, x, y)
    value, grads = got["engine"]
    chex.assert_trees_all_close(got["big"], (value, grads["params"]), **F64)
    chex.assert_trees_all_close(got["zero_norms"], jnp.zeros(6))
    chex.assert_trees_all_close(got["zero"], jax.tree.map(jnp.zeros_like, params))
    # every example clipped to norm C = min/2: so is their mean
    assert optax.tree.norm(got["small"]) <= float(jnp.min(got["norms"])) / 2 * (1 + 1e-12)


def test_noise_equals_optax_dp_aggregate():
    """With noise_multiplier σ and key k: exactly optax.contrib.differentially_private_aggregate
    (which needs the B gradients) on jax.vmap(jax.grad)'s per-example gradients."""
    net, params, x, y = problem(8, (4, 5, 3), ("prelu", "identity"), "l2", 6)
    key, C, sigma = jax.random.key(3), 0.3, 1.1

    @jax.jit
    def run(params, x, y, key):
        dp = optax.contrib.differentially_private_aggregate(C, sigma, key=key)
        losses_b, grads_b = vmap_grad(net, params, x, y, "l2")
        expected, _ = dp.update(grads_b, dp.init(params))

        def ours(sigma):
            return fnn.clipped_grad(net, params, x, y, max_norm=C, noise_multiplier=sigma, key=key)[
                1
            ]

        return expected, ours(sigma), ours(0.0), (losses_b, grads_b)

    expected, got, zero_noise, (losses_b, grads_b) = run(params, x, y, key)
    chex.assert_trees_all_close(got, expected, **F64)
    no_noise = references(losses_b, grads_b, C)["clipped"][1]
    chex.assert_trees_all_close(zero_noise, no_noise, **F64)
    assert not np.allclose(got[0]["W"], no_noise[0]["W"])


# ---------------------------------------------------------------------------------------
# S23: the trace of one example, its table, and where NaN began.
# ---------------------------------------------------------------------------------------


def test_trace_of_one_example_is_that_row_of_the_batch():
    net, params, x, y = problem(6, (3, 4, 2), ("prelu", "sigmoid"), "binary_cross_entropy", 3)
    batch, one = jax.jit(
        lambda x, y: (
            fnn.backprop_trace(net, params, x, y, loss="binary_cross_entropy"),
            fnn.backprop_trace(net, params, x[1], y[1], loss="binary_cross_entropy"),
        )
    )(x, y)
    chex.assert_trees_all_close(one.layers, jax.tree.map(lambda v: v[1], batch.layers), **F64)
    chex.assert_shape(one.layers[0].dL_dW, (4, 3))
    chex.assert_shape(one.dL_dx, (3,))
    chex.assert_trees_all_close(
        one.loss, losses.get("binary_cross_entropy").fn(one.layers[-1].z, y[1])
    )


def test_trace_table_shows_values_and_summarises_large_arrays():
    net, params, x, y = problem(6, (2, 3, 2), ("prelu", "identity"), "l2", 0)
    t, big = jax.jit(
        lambda p: (
            fnn.backprop_trace(net, p, x, y),
            fnn.backprop_trace(net, p, jnp.ones((30, 2)), jnp.zeros((30, 2))),
        )
    )(params)
    text = str(t)
    assert text.count("layer ") == 2 and "dL_dalpha" in text and "δ ⊗ z_prev" in text
    assert f"{float(t.layers[1].dL_db[0]):.6f}"[:7] in text
    assert "(30, 3, 2)  min" in str(big) and "‖·‖" in str(big)


def test_first_nonfinite_names_where_nan_began():
    net, params, x, y = problem(6, (3, 4, 2), ("tanh", "identity"), "l2", 3)
    trace = jax.jit(fnn.backprop_trace, static_argnames="loss")  # one compile for the three
    assert trace(net, params, x, y).first_nonfinite() is None
    bad = x.at[1, 2].set(jnp.nan)
    assert trace(net, params, bad, y).first_nonfinite()[:3] == (1, "z_prev", (1, 2))
    # z⁽¹⁾ ≈ 1 (tanh of a large a) and a row of 1e308 in W⁽²⁾: a⁽²⁾ overflows in row 1
    huge = [
        {**params[0], "b": params[0]["b"] + 30},
        {**params[1], "W": params[1]["W"].at[1].set(1e308)},
    ]
    found = trace(net, huge, x, y).first_nonfinite()
    assert (found.layer, found.quantity) == (2, "a") and found.index[1] == 1
    assert str(found).startswith("layer 2: a = ")
    # A forward pass that is finite, a loss that is not: −log 0 after a saturated softmax.
    net = fnn.MLP((2, 2), ("softmax",))
    params = [{"W": jnp.array([[1e3, 0.0], [0.0, 0.0]]), "b": jnp.zeros(2)}]
    found = fnn.backprop_trace(
        net, params, jnp.array([[1.0, 0.0]]), jnp.array([1]), loss="cross_entropy"
    )
    assert (found.first_nonfinite().layer, found.first_nonfinite().quantity) == (None, "loss")


def test_first_nonfinite_follows_the_backward_pass():
    """A NaN that starts in the backward pass is named where it starts: here ∂L/∂W⁽²⁾ =
    δ⁽²⁾ ⊗ z⁽¹⁾ overflows float32 (2e10 × 1e30) while δ⁽²⁾, ∂L/∂z⁽¹⁾ = δ⁽²⁾ W⁽²⁾, δ⁽¹⁾ and the
    forward pass stay finite: the backward order is layer N's δ, ∂L/∂W, ∂L/∂b, then layer
    N − 1's ∂L/∂z."""
    net = fnn.MLP((2, 3, 1), ("identity", "identity"))
    params = [
        {"W": jnp.full((3, 2), 1e30, jnp.float32), "b": jnp.zeros(3, jnp.float32)},
        {"W": jnp.full((1, 3), 1e-20, jnp.float32), "b": jnp.zeros(1, jnp.float32)},
    ]
    x, y = jnp.ones((2, 2), jnp.float32), jnp.zeros((2, 1), jnp.float32)
    t = fnn.backprop_trace(net, params, x, y)
    assert np.isfinite(t.loss) and np.all(np.isfinite(t.layers[0].dL_dz))
    found = t.first_nonfinite()
    assert (found.layer, found.quantity, found.index) == (2, "dL_dW", (0, 0, 0))
    assert found.value == np.inf


def test_the_table_counts_examples():
    """One example (D,) and a batch of one: "1 example"; a batch of two: "2 examples"."""
    net, params, x, y = problem(6, (2, 3, 2), ("tanh", "identity"), "l2", 2)
    for xb, yb, words in (
        (x[0], y[0], "1 example"),
        (x[:1], y[:1], "1 example"),
        (x, y, "2 examples"),
    ):
        assert str(fnn.backprop_trace(net, params, xb, yb)).splitlines()[0].endswith(", " + words)


# ---------------------------------------------------------------------------------------
# jit and vmap parity, dtypes.
# ---------------------------------------------------------------------------------------

_FUNCTIONS = {
    "per_example_grads": fnn.per_example_grads,
    "per_example_grad_norms": fnn.per_example_grad_norms,
    "clipped_grad": lambda *a, loss: fnn.clipped_grad(*a, max_norm=0.5, loss=loss),
    "gradient_statistics": fnn.gradient_statistics,
    "trace": lambda *a, loss: fnn.backprop_trace(*a, loss=loss).layers,
}


def all_of_them(net, params, x, y, loss="l2", names=tuple(_FUNCTIONS)):
    """The public functions of S23–S25 on one problem, in one pytree."""
    return {name: _FUNCTIONS[name](net, params, x, y, loss=loss) for name in names}


class JitParityTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_parity(self):
        """The same numbers jitted and not (the noise's traced key: test_noise_...). Eager
        runs compile every operation apart: two functions that use every rule."""
        net, params, x, y = problem(11, (5, 7, 4), ("prelu", "softmax"), "cross_entropy", 3)
        names = ("clipped_grad", "trace")
        got = self.variant(lambda p, x, y: all_of_them(net, p, x, y, "cross_entropy", names))(
            params, x, y
        )
        expected = all_of_them(net, params, x, y, "cross_entropy", names)
        chex.assert_trees_all_close(got, expected, **F64)


def test_vmap_over_batches():
    """jax.vmap over K stacked batches = one call per batch, for every function."""
    net, params, x, y = problem(12, (4, 6, 3), ("elu", "identity"), "l2", 6)
    xs, ys = x.reshape(2, 3, 4), y.reshape(2, 3, 3)
    got = jax.jit(jax.vmap(lambda x, y: all_of_them(net, params, x, y)))(xs, ys)
    one = jax.jit(lambda x, y: all_of_them(net, params, x, y))
    for k in range(2):
        chex.assert_trees_all_close(
            jax.tree.map(lambda v, k=k: v[k], got), one(xs[k], ys[k]), **F64
        )


def test_gradients_keep_their_parameters_dtypes():
    """float32 parameters, a float64 x: every gradient in its parameter's dtype."""
    net, params, _, y = problem(1, (3, 4, 2), ("prelu", "identity"), "l2", 2, np.float32)
    x = jnp.ones((2, 3), jnp.float64)
    got = jax.jit(lambda p: all_of_them(net, p, x, y))(params)
    chex.assert_trees_all_equal_dtypes(got["clipped_grad"][1], params)
    stats = got["gradient_statistics"]
    chex.assert_trees_all_equal_dtypes(stats["sum_sq"], stats["variance"], params)
    chex.assert_trees_all_equal_dtypes(
        jax.tree.map(lambda g: g[0], got["per_example_grads"][1]), params
    )


# ---------------------------------------------------------------------------------------
# Errors, raised in Python before tracing.
# ---------------------------------------------------------------------------------------


@pytest.fixture
def small():
    return problem(0, (3, 4, 2), ("tanh", "identity"), "l2", 2)


@pytest.mark.parametrize("name", list(_FUNCTIONS))
@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"loss": "l3"}, ValueError, "Unknown loss 'l3'"),
        ({"y": jnp.zeros((2, 3))}, ValueError, r"y for loss 'l2' must have .* \(2, 2\)"),
        ({"x": jnp.ones((2, 3), jnp.int32)}, TypeError, "x must be a real floating-point"),
        ({"x": jnp.zeros((0, 3)), "y": jnp.zeros((0, 2))}, ValueError, "empty batch"),
        ({"params": []}, ValueError, "params must hold 2 layers"),
        ({"net": (3, 4, 2)}, TypeError, "net must be an fnn.MLP"),
    ],
)
def test_bad_input_raises(small, name, change, error, match):
    net, params, x, y = small
    kwargs = {"net": net, "params": params, "x": x, "y": y, "loss": "l2", **change}
    with pytest.raises(error, match=match):
        _FUNCTIONS[name](
            kwargs["net"], kwargs["params"], kwargs["x"], kwargs["y"], loss=kwargs["loss"]
        )


def test_one_example_is_a_batch_of_one_without_the_batch_axis(small):
    """x (D,) and y (M,): the row of the batch of one, its batch axis dropped (as the
    trace's); the clipped mean and the statistics are those of the batch of one."""
    net, params, x, y = small
    got = jax.jit(lambda x, y: all_of_them(net, params, x, y))
    one, batch = got(x[0], y[0]), got(x[:1], y[:1])
    row = {"per_example_grads", "per_example_grad_norms", "trace"}
    expected = {k: jax.tree.map(lambda v: v[0], v) if k in row else v for k, v in batch.items()}
    chex.assert_trees_all_close(one, expected, **F64)
    chex.assert_shape(one["per_example_grad_norms"], ())
    chex.assert_trees_all_equal_shapes(one["per_example_grads"][1], params)


def test_options_are_keyword_only():
    """f(net, params, x, y, *, loss=..., <options>): the 1.0 contract."""
    import inspect

    for f in (
        fnn.per_example_grads,
        fnn.per_example_grad_norms,
        fnn.clipped_grad,
        fnn.gradient_statistics,
        fnn.backprop_trace,
    ):
        params = list(inspect.signature(f).parameters.values())
        assert [p.name for p in params[:4]] == ["net", "params", "x", "y"], f.__name__
        assert all(p.kind is p.KEYWORD_ONLY for p in params[4:]), f.__name__
        assert params[4].name == "loss" and params[4].default == "l2", f.__name__
    with pytest.raises(TypeError):
        fnn.clipped_grad(*problem(0, (3, 2), ("identity",), "l2", 2), 1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_norm": 0.0}, ValueError, "max_norm must be a finite number > 0; got 0.0"),
        ({"max_norm": float("nan")}, ValueError, "max_norm must be a finite number > 0"),
        ({"max_norm": "1"}, TypeError, "max_norm must be a real number"),
        ({"noise_multiplier": -1.0, "key": jax.random.key(0)}, ValueError, "noise_multiplier"),
        ({"noise_multiplier": 1.0}, ValueError, "noise_multiplier needs key="),
        ({"key": jax.random.key(0)}, ValueError, "pass noise_multiplier too"),
        ({"noise_multiplier": 1.0, "key": 0}, TypeError, "key must be one PRNG key"),
    ],
)
def test_bad_clipping_arguments_raise(small, kwargs, error, match):
    net, params, x, y = small
    with pytest.raises(error, match=match):
        fnn.clipped_grad(net, params, x, y, **kwargs)


# ---------------------------------------------------------------------------------------
# The worked example (S23) and the benchmark, end to end.
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_worked_example_reproduces_the_published_numbers(tmp_path, capsys):
    script = load_script(ROOT / "scripts" / "worked_example.py")
    result = script.main(["--quick", "--lecture", "--out", str(tmp_path)])
    assert result["all_match"] and len(result["checks"]) >= 20
    assert all(c["ok"] for c in result["checks"])
    assert result["lecture"]["max_abs_diff_jax"] < 1e-12
    assert (tmp_path / "worked_example.json").exists() and (
        tmp_path / "worked_example.png"
    ).exists()
    out = capsys.readouterr().out
    assert "0.082167041" in out and "w5" in out


@pytest.mark.slow
def test_bench_extensions_quick(tmp_path):
    bench = load_script(ROOT / "benchmarks" / "bench_extensions.py")
    result = bench.main(["--quick", "--reps", "2", "--out", str(tmp_path)])
    names = [r["name"] for r in result["rows"]]
    assert any(n.startswith("per_example_grad_norms ÷") for n in names)
    assert any(n.startswith("clipped_grad ÷") for n in names)
    for r in result["rows"]:
        assert r["value"] is None or (np.isfinite(r["value"]) and r["value"] > 0)


# ---------------------------------------------------------------------------------------
# Finite wherever the maths is: saturated units, huge inputs, float16 (S24, S25).
# ---------------------------------------------------------------------------------------


def saturated(case):
    """Problems where ‖z‖² or z² overflows but every per-example gradient is finite."""
    if case == "sigmoid, x × 1e20":  # δ⁽¹⁾ = 0 exactly, ‖x‖² = inf
        net = fnn.MLP((5, 4, 4, 2), ("sigmoid", "sigmoid", "identity"))
        params = fnn.init(jax.random.key(0), net)
        x = 1e20 * jax.random.normal(jax.random.key(1), (6, 5))
        return net, params, x, jnp.zeros((6, 2)), "l2"
    if case == "float16, pixels 0–255":  # ‖x‖² ≈ 1e7 > 65504
        net = fnn.MLP((784, 8, 3), ("sigmoid", "identity"))
        params = jax.tree.map(lambda v: v.astype(jnp.float16), fnn.init(jax.random.key(0), net))
        x = jax.random.randint(jax.random.key(1), (4, 784), 0, 256).astype(jnp.float16)
        return net, params, x, jnp.zeros((4, 3), jnp.float16), "l2"
    # |a| up to 1e4 in float32: tanh and sigmoid saturated, logits of thousands
    net = fnn.MLP((5, 6, 6, 3), ("tanh", "sigmoid", "identity"))
    params = [{**p, "W": 3e3 * p["W"]} for p in fnn.init(jax.random.key(2), net)]
    x = jax.random.normal(jax.random.key(3), (6, 5))
    return net, params, x, jnp.arange(6) % 3, "softmax_cross_entropy"


@pytest.mark.parametrize("case", ["sigmoid, x × 1e20", "float16, pixels 0–255", "|a| ≈ 1e4"])
def test_norms_and_statistics_are_finite_where_the_gradients_are(case):
    """‖∇θ L_b‖ and Σ_b (∇θ L_b)² against jax.vmap(jax.grad)'s gradients summed in float64:
    finite and equal wherever those are finite in the parameters' dtype."""
    net, params, x, y, loss_name = saturated(case)
    norms, stats, (_, grads_b) = jax.jit(
        lambda p: (
            fnn.per_example_grad_norms(net, p, x, y, loss=loss_name),
            fnn.gradient_statistics(net, p, x, y, loss=loss_name),
            vmap_grad(net, p, x, y, loss_name),
        )
    )(params)
    chex.assert_tree_all_finite(grads_b)
    g64 = jax.tree.map(lambda g: np.asarray(g, np.float64), grads_b)
    B = len(x)
    ref_norms = np.sqrt(sum(np.sum(g.reshape(B, -1) ** 2, axis=1) for g in jax.tree.leaves(g64)))
    ref_sum_sq = jax.tree.map(lambda g: np.sum(g**2, axis=0), g64)
    dtype = np.asarray(norms).dtype
    assert np.all(np.isfinite(ref_norms.astype(dtype))), "the case must be finite"
    tol = {"rtol": 2e-2, "atol": 0} if dtype == np.float16 else {"rtol": 1e-4, "atol": 0}
    chex.assert_tree_all_finite((norms, stats))
    np.testing.assert_allclose(np.asarray(norms, np.float64), ref_norms, **tol)
    for got, ref in zip(jax.tree.leaves(stats["sum_sq"]), jax.tree.leaves(ref_sum_sq)):
        finite = np.isfinite(ref.astype(dtype))
        np.testing.assert_allclose(np.asarray(got, np.float64)[finite], ref[finite], **tol)


def test_clipping_never_leaves_an_example_unclipped():
    """sigmoid units and x × 1e20: every example clipped to norm ≤ C (once an example with
    ‖δ‖² ‖x‖² = 0 · inf kept its full gradient)."""
    net, params, x, y, _ = saturated("sigmoid, x × 1e20")
    C = 0.01
    got, (losses_b, grads_b) = jax.jit(
        lambda p: (fnn.clipped_grad(net, p, x, y, max_norm=C), vmap_grad(net, p, x, y, "l2"))
    )(params)
    g64 = jax.tree.map(lambda g: np.asarray(g, np.float64), grads_b)
    expected = references(np.asarray(losses_b), g64, C)["clipped"]
    chex.assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-9)
    assert optax.tree.norm(got[1]) <= C * (1 + 1e-5)


def test_a_non_finite_norm_is_an_error_eagerly_and_nan_under_jit(small):
    """An example whose gradient norm is NaN or inf is neither kept unclipped nor dropped."""
    net, params, x, y = small
    bad = x.at[1, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"the gradient of example 1 has norm nan.*x\[1\]"):
        fnn.clipped_grad(net, params, bad, y, max_norm=1.0)
    huge = [params[0], {**params[1], "W": params[1]["W"] * 1e200}]  # δ⁽¹⁾ overflows
    with pytest.raises(ValueError, match="has norm (inf|nan)"):
        fnn.clipped_grad(net, huge, x, y, max_norm=1.0)
    jitted = jax.jit(lambda x: fnn.clipped_grad(net, params, x, y, max_norm=1.0)[1])
    assert all(np.all(np.isnan(g)) for g in jax.tree.leaves(jitted(bad)))
    chex.assert_tree_all_finite(jitted(x))


@pytest.mark.parametrize("max_norm, sigma", [(-1.0, None), (np.nan, None), (0.0, None),
                                             (1.0, -1.0), (1.0, np.nan)])  # fmt: skip
def test_a_traced_option_outside_its_domain_gives_nan(small, max_norm, sigma):
    """Under jax.jit max_norm ≤ 0 or NaN, noise_multiplier < 0 or NaN: NaN, never −1 × the
    clipped gradient or the unclipped one."""
    net, params, x, y = small
    key = None if sigma is None else jax.random.key(0)

    @jax.jit
    def run(C, sigma):
        return fnn.clipped_grad(net, params, x, y, max_norm=C, noise_multiplier=sigma, key=key)[1]

    got = run(max_norm, sigma)
    assert all(np.all(np.isnan(g)) for g in jax.tree.leaves(got))
    chex.assert_tree_all_finite(run(1.0, None if sigma is None else 0.5))
