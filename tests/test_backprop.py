"""Backpropagation (S14, S17) proven against jax.grad and central differences (S19).

Tolerances: float64 engines vs ``jax.value_and_grad`` of the loss built from ``fnn.apply``
and ``fnn.losses``: rtol 1e-10 (atol 1e-12); float32: rtol 1e-4, atol 1e-5 (both sides
round differently, ~1e-7 per operation); central differences (float64, ε = 1e-6):
rtol 1e-6, atol 1e-8.
"""

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import fnn
from conftest import load_script
from fnn import activations, backprop, losses, network

F64 = {"rtol": 1e-10, "atol": 1e-12}
F32 = {"rtol": 1e-4, "atol": 1e-5}
CD = {"rtol": 1e-6, "atol": 1e-8}
ENGINES = ("reverse", "explicit")


# ---------------------------------------------------------------------------------------
# Helpers: a problem for any architecture and loss, JAX's own gradient, central differences.
# ---------------------------------------------------------------------------------------


def output_for(loss_name, drawn):
    """The output activation a loss needs (logits, probabilities), else the drawn one."""
    loss = losses.get(loss_name)
    if loss.on_logits:
        return "identity"
    if loss.on_probabilities:
        return "softmax" if loss.target == "label" else "sigmoid"
    return drawn


def problem(seed, sizes, acts, loss_name, batch, dtype=np.float64):
    """Network, random parameters (b and α away from their init), x and a valid y, drawn with
    NumPy (no XLA compile per new shape). ``batch = 0`` means one example of shape (D,).

    ``W`` has LeCun's scale 1/√D, so pre-activations stay O(1) at any depth: a saturated
    sigmoid (1 − ŷ ≈ 1e-7) would make the binary cross-entropy gradient ill-conditioned
    (two tiny factors, each known only to ε/(1 − ŷ)) for jax.grad and fnn alike."""
    rng = np.random.default_rng(seed)
    net = fnn.MLP(sizes, (*acts[:-1], output_for(loss_name, acts[-1])))

    def draw(name, shape):
        return jnp.asarray(
            rng.normal(0.0, 1 / np.sqrt(shape[1]) if name == "W" else 0.2, shape), dtype
        )

    params = [{k: draw(k, s) for k, s in layer.items()} for layer in net.layer_shapes()]
    lead = (batch,) if batch else ()
    x = jnp.asarray(rng.normal(size=(*lead, sizes[0])), dtype)
    loss = losses.get(loss_name)
    if loss.target == "label":
        y = jnp.asarray(rng.integers(0, sizes[-1], lead))
    elif loss.on_probabilities:
        y = jnp.asarray(rng.uniform(size=(*lead, sizes[-1])), dtype)
    else:
        y = jnp.asarray(rng.normal(size=(*lead, sizes[-1])), dtype)
    return net, params, x, y


def batch_loss(net, loss_name, y):
    """The witness: mean over examples of loss.fn(fnn.apply(...)), as a function of (θ, x)."""
    loss_fn = losses.get(loss_name).fn

    def L(params, x):
        y_hat = fnn.apply(net, params, x)
        return loss_fn(y_hat, y) if x.ndim == 1 else jnp.mean(jax.vmap(loss_fn)(y_hat, y))

    return L


def jax_value_and_grad(net, params, x, y, loss_name):
    value, (g_params, g_x) = jax.value_and_grad(batch_loss(net, loss_name, y), argnums=(0, 1))(
        params, x
    )
    return value, {"params": g_params, "x": g_x}


def central_differences(f, tree, eps=1e-6):
    """(f(θ + ε eₖ) − f(θ − ε eₖ)) / 2ε for every entry θₖ of a pytree (S11), shaped like it."""
    theta, unravel = ravel_pytree(tree)

    def d(e):
        return (f(unravel(theta + eps * e)) - f(unravel(theta - eps * e))) / (2 * eps)

    return unravel(jax.vmap(d)(jnp.eye(theta.size, dtype=theta.dtype)))


def engines_and_jax(net, params, x, y, loss_name, methods=ENGINES):
    """Every engine's (loss, grads) and jax.value_and_grad's, in ONE jit: one XLA compile per
    architecture (what costs time in these tests), not one per engine or per operation."""

    @jax.jit
    def run(params, x, y):
        got = {m: fnn.value_and_grad(net, params, x, y, loss=loss_name, method=m) for m in methods}
        return got, jax_value_and_grad(net, params, x, y, loss_name)

    return run(params, x, y)


def assert_engines_equal_jax(net, params, x, y, loss_name, tol):
    got, expected = engines_and_jax(net, params, x, y, loss_name)
    for value, grads in got.values():
        chex.assert_trees_all_close(value, expected[0], **tol)
        chex.assert_trees_all_equal_shapes_and_dtypes(grads, expected[1])
        chex.assert_trees_all_close(grads, expected[1], **tol)


# ---------------------------------------------------------------------------------------
# S19: both engines equal jax.grad on random architectures, every activation and loss.
# ---------------------------------------------------------------------------------------


@st.composite
def architectures(draw):
    depth = draw(st.integers(1, 5))
    sizes = tuple(draw(st.lists(st.integers(1, 16), min_size=depth + 1, max_size=depth + 1)))
    acts = tuple(
        draw(st.lists(st.sampled_from(activations.names()), min_size=depth, max_size=depth))
    )
    loss_name = draw(st.sampled_from(losses.names()))
    batch = draw(st.integers(0, 8))  # 0: a single example of shape (D,)
    seed = draw(st.integers(0, 2**31 - 1))
    return seed, sizes, acts, loss_name, batch


# Every new architecture is a new XLA compile: few examples, no deadline, and no shrinking
# (it would recompile for minutes; the unshrunk failing example is reported as it is).
@settings(
    max_examples=20,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(architectures())
def test_engines_equal_jax_grad_float64(arch):
    seed, sizes, acts, loss_name, batch = arch
    net, params, x, y = problem(seed, sizes, acts, loss_name, batch)
    assert_engines_equal_jax(net, params, x, y, loss_name, F64)


@pytest.mark.parametrize("loss_name", losses.names())
def test_engines_equal_jax_grad_float32(loss_name):
    net, params, x, y = problem(
        7, (6, 8, 8, 4), ("tanh", "prelu", "softmax"), loss_name, 5, np.float32
    )
    assert_engines_equal_jax(net, params, x, y, loss_name, F32)


# Every activation as a hidden unit (three per network) and every loss, cycled.
_ACTS, _LOSSES = activations.names(), losses.names()
_CD_CASES = [(_ACTS[i : i + 3], _LOSSES[(i // 3) % len(_LOSSES)]) for i in range(0, len(_ACTS), 3)]
_CD_IDS = ["-".join(hidden) + "/" + loss_name for hidden, loss_name in _CD_CASES]


@pytest.mark.parametrize("hidden, loss_name", _CD_CASES, ids=_CD_IDS)
def test_engines_equal_central_differences(hidden, loss_name):
    """S19: the hand-written gradient agrees with (L(θ+ε) − L(θ−ε)) / 2ε, θ and x at once."""
    sizes = (*(3, 5, 4, 4)[: len(hidden) + 1], 3)
    net, params, x, y = problem(3, sizes, (*hidden, "sigmoid"), loss_name, 4)

    @jax.jit
    def run(params, x, y):
        L = batch_loss(net, loss_name, y)
        numerical = central_differences(
            lambda t: L(t["params"], t["x"]), {"params": params, "x": x}
        )
        grads = [
            fnn.value_and_grad(net, params, x, y, loss=loss_name, method=m)[1] for m in ENGINES
        ]
        return grads, numerical

    grads, numerical = run(params, x, y)
    for g in grads:
        chex.assert_trees_all_close(g, numerical, **CD)


# ---------------------------------------------------------------------------------------
# vmap, jit, dtypes.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_name", ["l2", "softmax_cross_entropy"])
def test_vmap_per_example_gradients_equal_explicit(loss_name):
    """Per-example gradients = vmap of the reverse engine over single examples, equal to the
    explicit engine's dense-matrix gradients of each example, and their mean is the batch's."""
    net, params, x, y = problem(5, (4, 6, 3), ("prelu", "tanh"), loss_name, 6)
    loss = losses.get(loss_name)

    @jax.jit
    def run(x, y):
        def per_example(x, y):
            return fnn.value_and_grad(net, params, x, y, loss=loss_name, method="reverse")

        def explicit_per_example(x, y):
            return backprop._explicit_single(net, params, x, y, loss)

        batch = fnn.value_and_grad(net, params, x, y, loss=loss_name)
        return jax.vmap(per_example)(x, y), jax.vmap(explicit_per_example)(x, y), batch

    (values, grads), (values_explicit, grads_explicit), (value, batch_grads) = run(x, y)
    chex.assert_shape(grads["x"], x.shape)
    chex.assert_trees_all_close(values, values_explicit, **F64)
    chex.assert_trees_all_close(grads, grads_explicit, **F64)
    chex.assert_trees_all_close(jnp.mean(values), value, **F64)
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads["params"])
    chex.assert_trees_all_close(mean, batch_grads["params"], **F64)
    chex.assert_trees_all_close(grads["x"] / x.shape[0], batch_grads["x"], **F64)


class JitParityTest(chex.TestCase):
    """S22: the engines give the same numbers jitted and not (net static, loss/method closed)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        ("reverse", "l2"),
        ("explicit", "l2"),
        ("reverse", "softmax_cross_entropy"),
        ("explicit", "softmax_cross_entropy"),
    )
    def test_jit_parity(self, method, loss_name):
        net, params, x, y = problem(11, (5, 7, 4), ("prelu", "softmax"), loss_name, 3)

        @self.variant
        def f(params, x, y):
            return fnn.value_and_grad(net, params, x, y, loss=loss_name, method=method)

        value, grads = f(params, x, y)
        expected_value, expected = jax_value_and_grad(net, params, x, y, loss_name)
        chex.assert_trees_all_close(value, expected_value, **F64)
        chex.assert_trees_all_close(grads, expected, **F64)


def test_jit_with_net_as_argument():
    """``net`` is a static pytree: value_and_grad jits with only the names static."""
    net, params, x, y = problem(2, (3, 4, 2), ("sigmoid", "identity"), "l2", 2)
    jitted = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))
    chex.assert_trees_all_close(
        jitted(net, params, x, y), fnn.value_and_grad(net, params, x, y), **F64
    )


def test_gradients_keep_their_variables_dtypes():
    """float32 parameters with a float64 x: like jax.grad, each gradient has its primal's dtype."""
    net, params, _, y = problem(1, (3, 4, 2), ("prelu", "identity"), "l2", 2, np.float32)
    x = jnp.ones((2, 3), jnp.float64)
    _, grads = fnn.value_and_grad(net, params, x, y)
    chex.assert_trees_all_equal_dtypes(grads["params"], params)
    assert grads["x"].dtype == jnp.float64


# ---------------------------------------------------------------------------------------
# The pieces: forward twin, one layer, PReLU's α, one neuron (S14).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", activations.names())
def test_the_batch_first_forward_pass_equals_one_example_at_a_time(name):
    """One forward pass, rows are examples: a batch gives every example's output and cache."""
    net, params, x, _ = problem(4, (3, 5, 2), (name, name), "l2", 4)
    chex.assert_trees_all_close(
        fnn.forward_pass(net, params, x),
        jax.vmap(lambda x: network.run_with_cache(net, params, x))(x),
        **F64,
    )


def test_prelu_alpha_gets_its_gradient():
    net, params, x, y = problem(9, (3, 6, 2), ("prelu", "identity"), "l2", 8)
    x = x - 1.0  # plenty of negative pre-activations, where ∂f/∂α = a ≠ 0
    got, (_, expected) = engines_and_jax(net, params, x, y, "l2")
    for _, grads in got.values():
        assert jnp.abs(grads["params"][0]["alpha"]) > 1e-3
        chex.assert_trees_all_close(
            grads["params"][0]["alpha"], expected["params"][0]["alpha"], **F64
        )


def test_softmax_cross_entropy_row_is_s_minus_onehot():
    """δ⁽ᴺ⁾ for softmax cross-entropy on logits is s − onehot(y): the output bias gradient."""
    net, params, x, y = problem(6, (3, 4), ("identity",), "softmax_cross_entropy", 0)
    for method, (_, grads) in engines_and_jax(net, params, x, y, "softmax_cross_entropy")[
        0
    ].items():
        s = activations.get("softmax").fn(fnn.apply(net, params, x))
        chex.assert_trees_all_close(grads["params"][0]["b"], s - jax.nn.one_hot(y, 4), **F64)
        assert method in ENGINES


@pytest.mark.parametrize("name", [n for n in activations.names() if activations.get(n).elementwise])
def test_neuron_backprop_equals_jax(name):
    """S14: ∂L/∂a = ∂L/∂z f′(a), ∂L/∂b = ∂L/∂a, ∂L/∂wᵢ = ∂L/∂a xᵢ, ∂L/∂xᵢ = ∂L/∂a wᵢ,
    for L = (z − t)²."""
    w, x, b, t = jnp.array([0.3, -0.8, 0.5]), jnp.array([1.2, 0.4, -0.7]), 0.1, 0.25
    p = {q: 0.2 for q in activations.get(name).params}
    z, cache = backprop.neuron_forward(w, b, x, name, **p)
    if not p:
        chex.assert_trees_all_close(z, network.neuron(w, b, x, name), **F64)
    grads = backprop.neuron_backward(w, cache, 2 * (z - t), name, **p)

    def L(w, b, x):
        return (activations.get(name).fn(jnp.dot(w, x) + b, **p) - t) ** 2

    g_w, g_b, g_x = jax.grad(L, argnums=(0, 1, 2))(w, b, x)
    g_a = jax.grad(lambda a: (activations.get(name).fn(a, **p) - t) ** 2)(cache.a)
    chex.assert_trees_all_close(grads, backprop.NeuronGrads(g_a, g_b, g_w, g_x), **F64)


# ---------------------------------------------------------------------------------------
# Errors, raised in Python before tracing.
# ---------------------------------------------------------------------------------------


@pytest.fixture
def small():
    return problem(0, (3, 4, 2), ("tanh", "identity"), "l2", 2)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"loss": "l3"}, ValueError, "Unknown loss 'l3'"),
        ({"method": "sideways"}, ValueError, "Unknown method 'sideways'"),
        ({"y": jnp.zeros((2, 3))}, ValueError, r"y for loss 'l2' must have .* \(2, 2\)"),
        ({"x": jnp.zeros((2, 4))}, ValueError, r"x must have shape \(D,\) or \(B, D\)"),
        ({"x": jnp.ones((2, 3), jnp.int32)}, TypeError, "x must be a real floating-point array"),
        ({"params": []}, ValueError, "params must hold 2 layers"),
        ({"net": (3, 4, 2)}, TypeError, "net must be an fnn.MLP"),
    ],
)
def test_bad_input_raises(small, change, error, match):
    net, params, x, y = small
    kwargs = {"net": net, "params": params, "x": x, "y": y, **change}
    with pytest.raises(error, match=match):
        fnn.value_and_grad(**kwargs)


def test_bad_input_raises_under_jit(small):
    net, params, x, _ = small
    jitted = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))
    with pytest.raises(ValueError, match="y for loss 'l2'"):
        jitted(net, params, x, jnp.zeros((2, 5)))


def test_loss_on_logits_needs_identity_output():
    net, params, x, y = problem(0, (3, 4), ("softmax",), "l2", 2)
    y = jnp.array([0, 3])
    with pytest.raises(ValueError, match="output activation must be 'identity'; got 'softmax'"):
        fnn.value_and_grad(net, params, x, y, loss="softmax_cross_entropy")


@pytest.mark.parametrize("loss_name", [n for n in losses.names() if losses.get(n).on_probabilities])
def test_loss_on_probabilities_needs_probability_output(loss_name):
    net, params, x, y = problem(0, (3, 4), ("softmax",), loss_name, 2)
    net = fnn.MLP(net.sizes, ("identity",))
    with pytest.raises(ValueError, match="takes probabilities.*got 'identity'"):
        fnn.value_and_grad(net, params, x, y, loss=loss_name)


def test_explicit_refuses_above_its_memory_limit(small, monkeypatch):
    net, params, x, y = small
    needed = backprop.explicit_bytes(net, 2, jnp.float64)
    assert needed == 2 * (4 * 4 + 4 * 3 + 2 * 2 + 2 * 4) * 8

    def shapes(method):  # traces (and so checks) without compiling
        return jax.eval_shape(
            lambda p, x: fnn.value_and_grad(net, p, x, y, method=method), params, x
        )

    monkeypatch.setattr(backprop, "EXPLICIT_MAX_BYTES", needed - 1)
    with pytest.raises(
        ValueError, match="method='explicit' for sizes .* needs .*, over max_bytes="
    ):
        shapes("explicit")
    shapes("reverse")  # the structured engine builds no dense matrices: no limit
    monkeypatch.setattr(backprop, "EXPLICIT_MAX_BYTES", needed)
    chex.assert_shape(shapes("explicit")[1]["x"], x.shape)


def test_explicit_refuses_the_benchmark_network():
    """784-512-512-10 at batch 256 needs over 1 GiB of dense Jacobians: refused, not OOM."""
    net = fnn.MLP((784, 512, 512, 10), ("relu", "relu", "identity"))
    params = [
        {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
        for shapes in net.layer_shapes()
    ]
    x = jax.ShapeDtypeStruct((256, 784), jnp.float32)
    y = jax.ShapeDtypeStruct((256, 10), jnp.float32)
    with pytest.raises(ValueError, match="Use method='reverse'"):
        jax.eval_shape(
            lambda p, x, y: fnn.value_and_grad(net, p, x, y, method="explicit"), params, x, y
        )


def test_forward_method_dispatches_to_forward_mode(small):
    net, params, x, y = small
    got, _ = engines_and_jax(net, params, x, y, "l2", methods=("forward", "reverse"))
    chex.assert_trees_all_close(got["forward"], got["reverse"], **F64)


# ---------------------------------------------------------------------------------------
# S20: the lecture's PyTorch example, end to end.
# ---------------------------------------------------------------------------------------


def test_lecture_example_script(tmp_path, capsys):
    """The script prints the lecture's gradients; in float64 they equal jax.grad's."""
    path = Path(__file__).parents[1] / "scripts" / "lecture_example.py"
    script = load_script(path)
    result = script.main(["--quick", "--x64", "--seed", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    for name in ("x.grad = ", "W[0].grad = ", "b[2].grad = ", "largest difference from jax.grad"):
        assert name in out
    assert set(result["max_abs_diff_jax"]) == {"x", "W[0]", "b[0]", "W[1]", "b[1]", "W[2]", "b[2]"}
    assert max(result["max_abs_diff_jax"].values()) < 1e-12
    assert np.shape(result["grads"]["W[1]"]) == (10, 10)
    assert (tmp_path / "lecture_example.json").is_file()
    assert (tmp_path / "lecture_example.png").stat().st_size > 0
