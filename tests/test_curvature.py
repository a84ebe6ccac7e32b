"""fnn.curvature (S27–S29) against JAX's transforms, central differences and closed forms.

Witnesses: ``jax.jvp(jax.grad(L))`` and ``jax.hessian`` of the batch loss built from
``fnn.apply`` and ``fnn.losses``; the Gauss–Newton matrix from ``jax.jvp``/``jax.vjp`` of the
network and ``jax.hessian`` of the loss; central differences of the gradient
(``fnn.gradcheck.check_hvp``); the closed forms of a linear layer under L2. Tolerances:
float64 rtol 1e-10 (atol 1e-12); central differences as ``check_hvp`` (1e-6). One jit per
case: the XLA compile is what costs time here.
"""

import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import fnn
from conftest import load_script
from fnn import (
    _curvature,
    cost_model,
    curvature,
    gauss_newton,
    hessian_backprop,
    layer_curvature,
    losses,
)
from test_backprop import problem

F64 = {"rtol": 1e-10, "atol": 1e-12}
# The tests are about the numbers, not their speed: XLA compiles each case's one program
# without LLVM's expensive passes, about half the compile time (which is what costs here).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_once(f, *args):
    """``f(*args)`` as one compiled program."""
    return jax.jit(f).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def direction(net, seed, dtype=np.float64):
    """A random direction like the parameters of ``net``."""
    rng = np.random.default_rng(seed)
    return [
        {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}
        for shapes in net.layer_shapes()
    ]


def batch_loss(net, loss_name, x, y):
    """The witness: the mean of ``loss.fn(fnn.apply(...))`` as a function of the parameters."""
    fn = losses.get(loss_name).fn

    def L(params):
        y_hat = fnn.apply(net, params, x)
        return fn(y_hat, y) if x.ndim == 1 else jnp.mean(jax.vmap(fn)(y_hat, y))

    return L


def jax_hvp(net, loss_name, params, x, y, v):
    return jax.jvp(jax.grad(batch_loss(net, loss_name, x, y)), (params,), (v,))[1]


def jax_ggn_vp(net, loss_name, params, x, y, v):
    """``(1/B) Σ_b J_bᵀ H_L J_b v`` by jax.jvp and jax.vjp of the network, jax.hessian of L."""
    X, Y = (x, y) if x.ndim == 2 else (x[None], y[None])

    def f(p):
        return fnn.apply(net, p, X)

    y_hat, Jv = jax.jvp(f, (params,), (v,))
    H_L = jax.vmap(jax.hessian(losses.get(loss_name).fn))(y_hat, Y)
    return jax.vjp(f, params)[1](jnp.einsum("bij,bj->bi", H_L, Jv) / X.shape[0])[0]


def dot(a, b):
    return jnp.vdot(ravel_pytree(a)[0], ravel_pytree(b)[0])


# ---------------------------------------------------------------------------------------
# S27: the R-operator and the Gauss–Newton product on random architectures.
# ---------------------------------------------------------------------------------------


@st.composite
def architectures(draw):
    """Depth 1–3, widths 1–6, any activations and loss, one example (batch 0) or up to 5."""
    depth = draw(st.integers(1, 3))
    sizes = tuple(draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1)))
    names = st.sampled_from(fnn.activations.names())
    acts = tuple(draw(st.lists(names, min_size=depth, max_size=depth)))
    loss_name = draw(st.sampled_from(losses.names()))
    return draw(st.integers(0, 2**31 - 1)), sizes, acts, loss_name, draw(st.integers(0, 5))


# Each drawn architecture is a new XLA compile: few examples, no deadline, no shrinking.
@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(architectures())
def test_hvp_and_ggn_vp_equal_jax_linear_and_symmetric(arch):
    """hvp = jax.jvp(jax.grad(L)), ggn_vp = Jᵀ H_L J v from jax transforms; both linear in v
    (H(2u − 3v) = 2Hu − 3Hv) and symmetric (uᵀHv = vᵀHu): every activation and loss drawn,
    single examples and batches."""
    seed, sizes, acts, loss_name, batch = arch
    net, params, x, y = problem(seed, sizes, acts, loss_name, batch)
    u, v = direction(net, seed + 1), direction(net, seed + 2)

    @jax.jit
    def hand(params, x, y, u, v):
        w = jax.tree.map(lambda a, b: 2 * a - 3 * b, u, v)
        directions = jax.tree.map(lambda *t: jnp.stack(t), u, v, w)
        out = {}
        for name, product in (("hvp", fnn.hvp), ("ggn", fnn.ggn_vp)):
            stacked = jax.vmap(lambda d, f=product: f(net, params, x, y, d, loss=loss_name))(
                directions
            )
            out[name] = [jax.tree.map(lambda t, i=i: t[i], stacked) for i in range(3)]
        return out

    def witnesses(params, x, y, u):
        return jax_hvp(net, loss_name, params, x, y, u), jax_ggn_vp(net, loss_name, params, x, y, u)

    # two programs: XLA compiles them faster than the one program holding both
    out = run_once(hand, params, x, y, u, v)
    hvp_jax, ggn_jax = run_once(witnesses, params, x, y, u)
    chex.assert_trees_all_close(out["hvp"][0], hvp_jax, **F64)
    chex.assert_trees_all_close(out["ggn"][0], ggn_jax, **F64)
    for Hu, Hv, Hw in out.values():
        chex.assert_trees_all_equal_shapes_and_dtypes(Hu, params)
        chex.assert_trees_all_close(Hw, jax.tree.map(lambda a, b: 2 * a - 3 * b, Hu, Hv), **F64)
        scale = max(1.0, float(jnp.abs(dot(u, Hv))))
        assert abs(float(dot(u, Hv) - dot(v, Hu))) <= 1e-10 * scale


# ---------------------------------------------------------------------------------------
# S28, S29: dense Hessians, diagonals and blocks against jax.hessian.
# ---------------------------------------------------------------------------------------


def test_hessians_diagonals_and_blocks_equal_jax():
    """fnn.hessian = jax.hessian (ravel_pytree order) in the four modes; the R-operator over
    the identity's columns = H; hessian_diagonal / hessian_blocks = H's diagonal / diagonal
    blocks; ggn_diagonal / ggn_blocks the same of the GGN from jax.jacfwd of the network and
    jax.hessian of the loss, which is positive semi-definite. PReLU (α's rows and columns),
    a softmax hidden layer, a loss on logits."""
    sizes, acts, loss_name = (3, 4, 3, 2), ("prelu", "softmax", "identity"), "softmax_cross_entropy"
    net, params, x, y = problem(11, sizes, acts, loss_name, 3)
    theta, unravel = ravel_pytree(params)

    def witnesses(params, x, y):
        H = jax.hessian(lambda t: batch_loss(net, loss_name, x, y)(unravel(t)))(theta)
        J = jax.jacfwd(lambda t: fnn.apply(net, unravel(t), x))(theta)  # (B, M, P)
        H_L = jax.vmap(jax.hessian(losses.get(loss_name).fn))(fnn.apply(net, params, x), y)
        return H, jnp.einsum("bmp,bmn,bnq->pq", J, H_L, J) / x.shape[0]

    def by_backprop(params, x, y):
        columns = jax.vmap(
            lambda e: ravel_pytree(fnn.hvp(net, params, x, y, unravel(e), loss=loss_name))[0]
        )(jnp.eye(theta.size))
        diagonals = [
            ravel_pytree(d(net, params, x, y, loss=loss_name))[0]
            for d in (fnn.hessian_diagonal, fnn.ggn_diagonal)
        ]
        blocks = [
            b(net, params, x, y, loss=loss_name)
            for b in (curvature.hessian_blocks, curvature.ggn_blocks)
        ]
        return columns, diagonals, blocks

    # several small programs: XLA compiles them faster than one holding them all
    H, GGN = run_once(witnesses, params, x, y)
    columns, diagonals, blocks = run_once(by_backprop, params, x, y)
    dense = {
        m: run_once(lambda p, m=m: fnn.hessian(net, p, x, y, loss=loss_name, method=m), params)
        for m in curvature.HESSIAN_METHODS
    }
    for mode, H_mode in dense.items():
        chex.assert_trees_all_close(H_mode, H, **F64, custom_message=mode)
    chex.assert_trees_all_close(columns.T, H, **F64)
    chex.assert_trees_all_close(diagonals, [jnp.diag(H), jnp.diag(GGN)], **F64)
    start = 0
    for hb, gb, layer_params in zip(*blocks, params):
        stop = start + ravel_pytree(layer_params)[0].size
        chex.assert_trees_all_close(
            (hb, gb), (H[start:stop, start:stop], GGN[start:stop, start:stop]), **F64
        )
        start = stop
    assert start == theta.size
    assert np.linalg.eigvalsh(np.asarray(GGN)).min() >= -1e-10 * np.abs(GGN).max()


# ---------------------------------------------------------------------------------------
# Central differences of the gradient (Bishop 5.4.4): fnn.gradcheck.check_hvp.
# ---------------------------------------------------------------------------------------

CD_CASES = {  # the three paths of the rules: f″ elementwise, PReLU's α, softmax's curvature
    "tanh-prelu-softmax/l2": (("tanh", "prelu", "softmax"), "cos", "l2"),
    "gelu-elu/binary_cross_entropy": (("gelu", "elu"), "sigmoid", "binary_cross_entropy"),
}


@pytest.mark.parametrize("case", CD_CASES)
def test_hvp_equals_central_differences_of_the_gradient(case):
    """check_hvp passes fnn.hvp (each activation's f″ and each loss's H_L are proven against
    central differences in test_activations and test_losses); the Gauss–Newton product,
    without the f″ terms, fails it."""
    hidden, out, loss_name = CD_CASES[case]
    net, params, x, y = problem(3, (3,) + (4,) * len(hidden) + (3,), (*hidden, out), loss_name, 4)
    v = direction(net, 9)
    Hv, Gv = run_once(
        lambda p, v: (
            fnn.hvp(net, p, x, y, v, loss=loss_name),
            fnn.ggn_vp(net, p, x, y, v, loss=loss_name),
        ),
        params,
        v,
    )
    report = fnn.gradcheck.check_hvp(net, params, x, y, v, Hv, loss=loss_name)
    assert report.passed and report.max_error < 1e-6 and report.kinks_crossed == 0, str(report)
    assert str(report).startswith("HVP check PASS (float64)")
    assert not fnn.gradcheck.check_hvp(net, params, x, y, v, Gv, loss=loss_name).passed


def test_check_hvp_fails_a_wrong_product_and_at_a_kink():
    net, params, x, y = problem(4, (3, 6, 2), ("relu", "identity"), "l2", 5)
    v = direction(net, 1)
    Hv = fnn.hvp(net, params, x, y, v)
    assert fnn.gradcheck.check_hvp(net, params, x, y, v, Hv).passed
    wrong = jax.tree.map(lambda t: t * (1 + 1e-4), Hv)
    report = fnn.gradcheck.check_hvp(net, params, x, y, v, wrong)
    assert not report.passed and report.max_error > 1e-5
    assert "HVP check FAIL" in str(report)
    # a step that moves ReLU pre-activations across 0: reported, and never a pass
    crossing = fnn.gradcheck.check_hvp(net, params, x, y, v, Hv, eps=0.5)
    assert crossing.kinks_crossed > 0 and not crossing.passed
    assert "crosses a kink" in str(crossing)


# ---------------------------------------------------------------------------------------
# Closed forms: a linear layer under L2, and K-FAC.
# ---------------------------------------------------------------------------------------


def test_closed_forms_of_a_linear_layer_under_l2():
    """L = (1/B) Σ ‖W x_b + b − y_b‖²: ∇²L v = (2/B) Σ_b (V x_b + v_b) [x_b; 1]ᵀ by every
    method of fnn.hvp and by ggn_vp (GGN = H for a linear network); the diagonal
    (2/B) Σ_b x_bk² for W_jk and 2 for b_j; K-FAC exact for any batch: A = mean
    [1; x][1; x]ᵀ, G = 2I."""
    net, params, x, y = problem(2, (4, 3), ("identity",), "l2", 5)
    v = direction(net, 3)
    got = run_once(
        lambda p, v: (
            [f(net, p, x, y, v)[0] for f in (fnn.hvp, fnn.ggn_vp)]
            + [
                f(net, p, x, y)[0]
                for f in (fnn.hessian_diagonal, fnn.ggn_diagonal, fnn.kfac_factors)
            ]
        ),
        params,
        v,
    )
    X, V = np.asarray(x), np.asarray(v[0]["W"])
    R = X @ V.T + np.asarray(v[0]["b"])  # (B, M): V x_b + v_b
    expected_hv = {"W": 2 * R.T @ X / 5, "b": 2 * R.mean(0)}
    expected_diag = {"W": np.tile(2 * (X**2).mean(0), (3, 1)), "b": np.full(3, 2.0)}
    X_bar = np.concatenate([np.ones((5, 1)), X], axis=1)
    expected_kfac = {"A": X_bar.T @ X_bar / 5, "G": 2 * np.eye(3)}
    chex.assert_trees_all_close(
        got, [expected_hv, expected_hv, expected_diag, expected_diag, expected_kfac], **F64
    )


def augmented_order(M, D):
    """Indices into a layer's ravel order (W row-major, then b) listing vec(Ŵ), Ŵ = [b, W]
    row-major: unit j's bias, then its D weights."""
    return np.array(
        [M * D + j if k == 0 else j * D + k - 1 for j in range(M) for k in range(D + 1)]
    )


def kfac_and_ggn_blocks(net, x, y):
    def run(params, x):
        return fnn.kfac_factors(net, params, x, y), curvature.ggn_blocks(net, params, x, y)

    return jax.jit(run)


@pytest.mark.parametrize("outputs, batch", [(1, 0), (2, 4)])
def test_kfac_kronecker_product_is_the_ggn_block_where_it_must_be(outputs, batch):
    """kron(G, A) = the Gauss–Newton block of vec(Ŵ) for one example with one output, and
    for a batch whose inputs are equal (targets differ, two outputs): there
    E[H_a ⊗ z̄ z̄ᵀ] = E[H_a] ⊗ E[z̄ z̄ᵀ]. On different inputs only an approximation."""
    net, params, x, y = problem(6, (3, 4, outputs), ("tanh", "sigmoid"), "l2", batch)
    run = kfac_and_ggn_blocks(net, x, y)
    same_x = jnp.broadcast_to(x[0], x.shape) if batch else x
    K, blocks = run(params, same_x)
    for (D, M), factors, block in zip(zip(net.sizes[:-1], net.sizes[1:]), K, blocks):
        chex.assert_shape((factors["A"], factors["G"]), [(D + 1, D + 1), (M, M)])
        order = augmented_order(M, D)
        chex.assert_trees_all_close(
            jnp.kron(factors["G"], factors["A"]), block[np.ix_(order, order)], **F64
        )
    if batch:
        K, blocks = run(params, x)  # the same program, different inputs
        order = augmented_order(4, 3)
        assert not np.allclose(jnp.kron(K[0]["G"], K[0]["A"]), blocks[0][np.ix_(order, order)])


@pytest.mark.parametrize("inverse", ["eigh", "cholesky"])
def test_kfac_precondition_is_the_damped_kronecker_solve(inverse):
    """kfac_precondition(∇) = ((G + sI) ⊗ (A + sI))⁻¹ vec(∇Ŵ), Ŵ = [b, W] row-major, by
    jnp.linalg.solve of the dense Kronecker product; PReLU's α passes unchanged."""
    net = fnn.MLP((3, 4, 2), ("prelu", "identity"))
    rng = np.random.default_rng(7)
    factors = []
    for D, M in zip(net.sizes[:-1], net.sizes[1:]):
        a, g = rng.normal(size=(D + 1, D + 1)), rng.normal(size=(M, M))
        factors.append({"A": jnp.asarray(a @ a.T), "G": jnp.asarray(g @ g.T)})
    grads, s = direction(net, 8), 0.3
    decompositions = gauss_newton.kfac_decompose(factors, s, inverse)
    got = gauss_newton.kfac_precondition(grads, decompositions, s, inverse)
    for f, g, out in zip(factors, grads, got):
        X = np.concatenate([g["b"][:, None], g["W"]], axis=1)
        K = np.kron(f["G"] + s * np.eye(len(f["G"])), f["A"] + s * np.eye(len(f["A"])))
        expected = np.linalg.solve(K, X.reshape(-1)).reshape(X.shape)
        chex.assert_trees_all_close({**g, "b": expected[:, 0], "W": expected[:, 1:]}, out, **F64)


# ---------------------------------------------------------------------------------------
# Memory limits, chunks, jit, dtypes, NaN, errors.
# ---------------------------------------------------------------------------------------


def test_chunks_of_the_batch_equal_the_whole_batch():
    """A max_bytes that admits 2 of 5 examples runs 3 chunks (the last one padded with
    weight 0): the same diagonal, = jax.hessian's (softmax output, cross-entropy)."""
    net, params, x, y = problem(8, (3, 4, 3), ("softplus", "softmax"), "cross_entropy", 5)
    # two examples' matrices, and the diagonal held twice (the running sum and a chunk's)
    limit = 2 * curvature.hessian_backprop_bytes(net, 1, "float64")
    limit += 2 * _curvature.param_bytes(net, "float64")
    theta, unravel = ravel_pytree(params)

    def run(p):
        H = jax.hessian(lambda t: batch_loss(net, "cross_entropy", x, y)(unravel(t)))(theta)
        diagonals = [
            ravel_pytree(fnn.hessian_diagonal(net, p, x, y, loss="cross_entropy", max_bytes=m))[0]
            for m in (limit, None)
        ]
        return diagonals, jnp.diag(H)

    (chunked, whole), expected = run_once(run, params)
    chex.assert_trees_all_close((chunked, whole), (expected, expected), **F64)


def test_jit_float32_and_nan_for_a_label_out_of_range_under_jit():
    """float32 in, float32 out; a label out of range is refused eagerly and, under jit where
    its value is unknown, gives NaN (never a finite wrong number)."""
    loss_name = "softmax_cross_entropy"
    net, params, x, y = problem(1, (4, 5, 3), ("tanh", "identity"), loss_name, 3)
    v = direction(net, 2)
    to32 = lambda t: jax.tree.map(lambda a: a.astype(np.float32), t)  # noqa: E731
    hvp = jax.jit(lambda p, x, y, v: fnn.hvp(net, p, x, y, v, loss=loss_name))
    Hv32 = hvp(to32(params), to32(x), y, to32(v))
    chex.assert_trees_all_equal_dtypes(Hv32, to32(params))
    chex.assert_trees_all_close(
        Hv32, fnn.hvp(net, params, x, y, v, loss=loss_name), rtol=1e-4, atol=1e-5
    )
    bad = jnp.array([0, 1, 7])
    with pytest.raises(ValueError, match="labels in"):
        fnn.hvp(net, params, x, bad, v, loss=loss_name)
    for leaf in jax.tree.leaves(hvp(to32(params), to32(x), bad, to32(v))):  # the same program
        assert np.all(np.isnan(leaf))


def test_errors_name_the_argument():
    net, params, x, y = problem(0, (3, 4, 2), ("tanh", "identity"), "l2", 2)
    v = direction(net, 0)
    cases = [
        (lambda: fnn.hvp(params, params, x, y, v), TypeError, "net must be an fnn.MLP"),
        (lambda: fnn.hvp(net, params, x, y, v[:1]), ValueError, "v must hold 2 layers"),
        (lambda: fnn.hvp(net, params, x, y, [v[0], {"W": v[1]["W"]}]), ValueError, r"v\[1\]"),
        (
            lambda: fnn.hvp(net, params, x, y, [v[0], {**v[1], "W": jnp.ones((2, 4), int)}]),
            TypeError,
            r"v\[1\]\['W'\] must be a real floating-point",
        ),
        (lambda: fnn.hvp(net, params, x, y, v, method="r_op"), ValueError, "r_operator"),
        (lambda: fnn.ggn_vp(net, params, x[:, :2], y, v), ValueError, "x must have shape"),
        (lambda: fnn.hessian(net, params, x, y, method="fwd_rev"), ValueError, "fwd_over_rev"),
        (lambda: fnn.hessian(net, params, x, y, max_bytes=100), ValueError, "fnn.hvp"),
        (lambda: fnn.hessian(net, params, x, y, max_bytes=0), ValueError, "max_bytes"),
        (lambda: fnn.hessian_diagonal(net, params, x, y, max_bytes=64), ValueError, "fnn.hvp"),
        (lambda: fnn.kfac_factors(net, params, x, y, max_bytes=-1), ValueError, "max_bytes"),
        (
            lambda: curvature.hessian_blocks(net, params, x, y, max_bytes=500),
            ValueError,
            "hessian_diagonal",
        ),
        (
            lambda: fnn.ggn_diagonal(net, params, x, y, loss="softmax_cross_entropy"),
            ValueError,
            "labels",
        ),
        (lambda: fnn.gradcheck.check_hvp(net, params, x, y, v, v[:1]), ValueError, "Hv"),
        (
            lambda: fnn.gradcheck.check_hvp(net, params, x, y, jax.tree.map(jnp.zeros_like, v), v),
            ValueError,
            "nonzero",
        ),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    wide = fnn.MLP((3, 2048, 2), ("tanh", "identity"))  # P·B over forward mode's limit
    wide_params = [{k: np.ones(s) for k, s in shapes.items()} for shapes in wide.layer_shapes()]
    with pytest.raises(ValueError, match="over max_tangents=4194304 tangents. Use method='r_"):
        fnn.hvp(
            wide,
            wide_params,
            jnp.ones((2048, 3)),
            jnp.ones((2048, 2)),
            wide_params,
            method="rev_over_fwd",
        )


# ---------------------------------------------------------------------------------------
# The cost model (S29).
# ---------------------------------------------------------------------------------------


def test_cost_model_counts():
    """A linear layer D = 3 → M = 2: the R-operator pays a = W x (6) for the primal and
    R{a} = V x, R{∂L/∂W} = R{δ}ᵀ x (12) along v; a dense Hessian P = 8 such directions.
    Reverse and forward outer derivatives count alike; over forward mode costs ~P more."""
    net = fnn.MLP((3, 2), ("identity",))
    assert cost_model.hvp_macs(net, "r_operator") == 18
    assert cost_model.hessian_macs(net, "fwd_over_rev") == 6 + 8 * 12
    wide = fnn.MLP((10, 20, 20, 3), ("tanh", "softmax", "identity"))
    for a, b in (("fwd_over_rev", "rev_over_rev"), ("fwd_over_fwd", "rev_over_fwd")):
        assert cost_model.hessian_macs(wide, a, 7) == cost_model.hessian_macs(wide, b, 7)
    assert cost_model.hvp_macs(wide, "r_operator", 7) == 7 * cost_model.hvp_macs(wide)
    P = fnn.summary(wide).num_params
    ratio = cost_model.hessian_macs(wide, "fwd_over_fwd") / cost_model.hessian_macs(wide)
    assert P / 4 < ratio < 4 * P
    with pytest.raises(ValueError, match="method"):
        cost_model.hessian_macs(wide, "fwd")


def test_cost_model_against_xla_flop_count():
    """The count of the hand HVP against XLA's own count of the compiled program (2 flops per
    multiply-add; XLA also counts the elementwise work): within 3 % on 64-128-128-10."""
    net = fnn.MLP((64, 128, 128, 10), ("tanh", "tanh", "identity"))
    params, v = fnn.init(jax.random.key(0), net), fnn.init(jax.random.key(1), net)
    x, y = jnp.ones((32, 64)), jnp.zeros((32, 10))
    analysis = jax.jit(fnn.hvp).lower(net, params, x, y, v).cost_analysis()  # of the HLO
    flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    assert flops / (2 * cost_model.hvp_macs(net, "r_operator", 32)) == pytest.approx(1, abs=0.03)


# ---------------------------------------------------------------------------------------
# The script.
# ---------------------------------------------------------------------------------------

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_hessian_modes.py"


@pytest.mark.slow
def test_compare_hessian_modes_quick(tmp_path, capsys):
    import json

    script = load_script(SCRIPT)
    assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Verdict" in printed
    result = json.loads((tmp_path / "compare_hessian_modes.json").read_text())
    assert (tmp_path / "compare_hessian_modes.png").stat().st_size > 10_000
    assert result["all_checks_passed"] is True
    assert set(result["hvp"]["time_s"]) == {"r_operator", "jax.jvp(jax.grad)", "rev_over_rev"}
    for row in result["dense"]:
        assert set(row["time_s"]) == set(curvature.HESSIAN_METHODS)
        assert all(t > 0 and math.isfinite(t) for t in row["time_s"].values())
        assert set(row["macs"]) == set(curvature.HESSIAN_METHODS)
    spectra = result["spectra"]
    assert spectra["ggn_min"] >= -1e-8 * spectra["ggn_max"]  # the GGN is PSD
    assert spectra["hessian_min"] < 0  # the Hessian is not


@pytest.mark.slow
def test_bench_curvature_runs_and_skips_backpack_cleanly():
    """The benchmark's structure on a tiny network (its figures are machine-dependent and
    never asserted): every contender timed, the ratios finite, BackPACK reported, not run."""
    bench = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_curvature.py")
    r = bench.measure(sizes=(8, 16, 4), batch=4, reps=3, sample_s=1e-3, with_diagonals=True)
    assert set(r["seconds"]) == set(bench.NAMES)
    for key in ("hvp_ratio", "fnn_hvp_over_gradient", "jax_hvp_over_gradient"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert set(r["diagonals"]) == {"hessian_diagonal", "ggn_diagonal"}
    assert r["backpack"].startswith("skipped") == (bench.backpack_available() is not None)


# ---------------------------------------------------------------------------------------
# S28: the Gauss–Newton family by backpropagating a factor of H_L, against the second
# witness — Hessian backpropagation without the residual terms, full H_a per example.
# ---------------------------------------------------------------------------------------


def reference_ggn(net, params, X, Y, loss_name):
    """The GGN's diagonal, blocks and K-FAC factors by Hessian backpropagation (the full
    ``(M, M)`` ``H_a`` of every example carried down, residual terms dropped): the way fnn
    computed them before the factor of ``H_L``, kept as the tests' second witness."""
    loss = losses.get(loss_name)
    Y_hat, caches = fnn.network.run_with_cache(net, params, X)
    B = X.shape[0]
    G, H = jax.vmap(loss.jacobian)(Y_hat, Y) / B, jax.vmap(loss.hessian)(Y_hat, Y) / B
    diag, blocks, kfac = [], [], []
    for i in reversed(range(net.num_layers)):
        p, cache = params[i], caches[i]
        lh, G, H = layer_curvature.hessian_backward(
            p, net.activations[i], cache, G, H, residual=False
        )
        z_bar = jnp.concatenate([jnp.ones_like(cache.z_prev[:, :1]), cache.z_prev], axis=1)
        diag.insert(0, layer_curvature.param_hessian_diagonal(cache, lh))
        blocks.insert(0, layer_curvature.param_hessian_block(p, cache, lh))
        kfac.insert(0, {"A": z_bar.T @ z_bar / B, "G": jnp.sum(lh.a, axis=0)})
    return diag, blocks, kfac


@pytest.mark.parametrize("loss_name", losses.names())
def test_gauss_newton_by_columns_equals_hessian_backprop_without_residuals(loss_name):
    """ggn_diagonal, ggn_blocks and kfac_factors from the C columns of S = the same numbers
    by Hessian backpropagation (PReLU's α, a softmax hidden layer); the per-example diagonals
    average to ggn_diagonal and each is jax.jacfwd's J_bᵀ H_L J_b diagonal."""
    net, params, x, y = problem(5, (3, 4, 3, 3), ("prelu", "softmax", "tanh"), loss_name, 4)

    def run(params, x, y):
        new = [
            f(net, params, x, y, loss=loss_name)
            for f in (fnn.ggn_diagonal, curvature.ggn_blocks, fnn.kfac_factors)
        ]
        return new, reference_ggn(net, params, x, y, loss_name)

    new, reference = run_once(run, params, x, y)
    chex.assert_trees_all_close(new, list(reference), **F64)
    each = fnn.per_example_ggn_diagonal(net, params, x, y, loss=loss_name)
    chex.assert_trees_all_close(jax.tree.map(lambda t: jnp.mean(t, 0), each), new[0], **F64)
    theta, unravel = ravel_pytree(params)
    J = jax.jacfwd(lambda t: fnn.apply(net, unravel(t), x))(theta)  # (B, M, P)
    H_L = jax.vmap(jax.hessian(losses.get(loss_name).fn))(fnn.apply(net, params, x), y)
    expected = jnp.einsum("bmp,bmn,bnp->bp", J, H_L, J)
    chex.assert_trees_all_close(jax.vmap(lambda t: ravel_pytree(t)[0])(each), expected, **F64)


def test_per_example_hessian_diagonal_is_each_examples_own_hessian():
    """Row b = diag of jax.hessian of L(nn(x_b), y_b) (not divided by B); the mean over b is
    hessian_diagonal; chunks of the batch (a small max_bytes) give the same rows."""
    loss_name = "softmax_cross_entropy"
    net, params, x, y = problem(7, (3, 4, 3), ("prelu", "identity"), loss_name, 5)
    theta, unravel = ravel_pytree(params)
    fn = losses.get(loss_name).fn

    def by_jax(x_b, y_b):
        return jnp.diag(jax.hessian(lambda t: fn(fnn.apply(net, unravel(t), x_b), y_b))(theta))

    each = fnn.per_example_hessian_diagonal(net, params, x, y, loss=loss_name)
    rows = jax.vmap(lambda t: ravel_pytree(t)[0])(each)
    chex.assert_trees_all_close(rows, jax.vmap(by_jax)(x, y), **F64)
    mean = jax.tree.map(lambda t: jnp.mean(t, 0), each)
    chex.assert_trees_all_close(
        mean, fnn.hessian_diagonal(net, params, x, y, loss=loss_name), **F64
    )
    P_bytes = _curvature.param_bytes(net, "float64")
    small = 2 * (curvature.hessian_backprop_bytes(net, 1, "float64") + P_bytes) + 5 * P_bytes
    chunked = fnn.per_example_hessian_diagonal(net, params, x, y, loss=loss_name, max_bytes=small)
    chex.assert_trees_all_close(chunked, each, **F64)


@pytest.mark.parametrize(
    "loss_name, out", [("softmax_cross_entropy", "identity"), ("binary_cross_entropy", "sigmoid")]
)
def test_monte_carlo_estimates_are_unbiased(loss_name, out):
    """ggn_diagonal(mc_samples=1) and kfac_factors(mc_samples=1): the mean over 3000 keys is
    within 5 standard errors of the exact value, entry by entry (a sampled label's gradient
    for softmax cross-entropy; S ε with Rademacher ε for BCE on probabilities); 2 samples per
    key have the same mean. A chunked batch samples the same examples' columns."""
    net, params, x, y = problem(9, (3, 4, 3), ("tanh", out), loss_name, 4)
    keys = jax.random.split(jax.random.key(0), 3000)

    def estimates(key, k=1):
        d = fnn.ggn_diagonal(net, params, x, y, loss=loss_name, mc_samples=k, key=key)
        G = [
            f["G"]
            for f in fnn.kfac_factors(net, params, x, y, loss=loss_name, mc_samples=k, key=key)
        ]
        return ravel_pytree((d, G))[0]

    samples = np.asarray(jax.jit(jax.vmap(estimates))(keys))
    exact_d = fnn.ggn_diagonal(net, params, x, y, loss=loss_name)
    exact_G = [f["G"] for f in fnn.kfac_factors(net, params, x, y, loss=loss_name)]
    exact = np.asarray(ravel_pytree((exact_d, exact_G))[0])
    se = samples.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(samples.mean(0) - exact) <= 5 * se + 1e-12)
    two = np.asarray(jax.jit(jax.vmap(lambda k: estimates(k, 2)))(keys[:1000]))
    assert np.all(np.abs(two.mean(0) - exact) <= 5 * two.std(0) / np.sqrt(1000) + 1e-12)
    one = fnn.ggn_diagonal(net, params, x, y, loss=loss_name, mc_samples=1, key=keys[0])
    gn_bytes = gauss_newton.gauss_newton_bytes(net, 1, "float64")
    small = 2 * gn_bytes + 2 * _curvature.param_bytes(net, "float64")
    chunked = fnn.ggn_diagonal(
        net, params, x, y, loss=loss_name, mc_samples=1, key=keys[0], max_bytes=small
    )
    chex.assert_trees_all_close(chunked, one, **F64)


# ---------------------------------------------------------------------------------------
# The edges: saturated networks, memory counts, refusals, v, dtypes, list leaves.
# ---------------------------------------------------------------------------------------

SATURATED_X = np.array([[1e20, -1e20, 3e19], [1.0, 2.0, -1.0], [1e4, -1e4, 1e4]], np.float32)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus", "elu", "prelu", "softmax"])
def test_diagonals_and_blocks_finite_on_saturated_networks_where_jax_is(act):
    """float32, inputs up to 1e20 and |a| up to 1e4: z² overflows and H_a is 0 — jax.hessian
    is finite, and so is every fnn diagonal and block (no 0 · ∞ that the maths never forms),
    equal to jax's."""
    net = fnn.MLP((3, 4, 3), (act, "identity"))
    params = fnn.init(jax.random.key(0), net)
    x, y, loss_name = jnp.asarray(SATURATED_X), jnp.array([0, 1, 2]), "softmax_cross_entropy"
    theta, unravel = ravel_pytree(params)

    def run(params, x):
        H = jax.hessian(lambda t: batch_loss(net, loss_name, x, y)(unravel(t)))(theta)
        ours = [
            ravel_pytree(f(net, params, x, y, loss=loss_name))[0]
            for f in (fnn.hessian_diagonal, fnn.ggn_diagonal)
        ]
        others = [
            f(net, params, x, y, loss=loss_name)
            for f in (
                fnn.per_example_hessian_diagonal,
                fnn.per_example_ggn_diagonal,
                curvature.hessian_blocks,
                curvature.ggn_blocks,
            )
        ]
        return H, ours, others

    H, (h_diag, g_diag), others = run_once(run, params, x)
    chex.assert_tree_all_finite((H, h_diag, g_diag, others))
    scale = float(jnp.max(jnp.abs(H)))
    chex.assert_trees_all_close(h_diag, jnp.diag(H), rtol=1e-4, atol=1e-6 * scale)


def test_memory_estimates_are_exact_hand_counts():
    """Every estimate counts what is allocated: the per-example arrays and the result (K-FAC's
    A of shape (D+1, D+1) included), by hand for 5-3-2 in float32 (4 bytes)."""
    net = fnn.MLP((5, 3, 2), ("tanh", "identity"))
    assert curvature.hessian_backprop_bytes(net, 1, "float32") == 4 * (9 + 4 + 9)
    assert gauss_newton.gauss_newton_bytes(net, 2, "float32") == 4 * 2 * (2 + 3 + 2 + 3)
    assert _curvature.param_bytes(net, "float32") == 4 * (15 + 3 + 6 + 2)
    assert hessian_backprop.block_bytes(net, "float32") == (
        4 * (3 * 18 + 2 * 8),
        4 * (18**2 + 8**2),
    )
    params = jax.tree.map(lambda t: t.astype(jnp.float32), fnn.init(jax.random.key(0), net))
    x, y = jnp.ones((1, 5), jnp.float32), jnp.zeros((1, 2), jnp.float32)
    # kfac_factors, one example: columns 4·2·(2+3+2+3) = 80, z̄ 4·6 = 24, A 4·36 + G 4·9 and
    # A 4·16 + G 4·4: 80 + 24 + 260 = 364 bytes exactly.
    fnn.kfac_factors(net, params, x, y, max_bytes=364)
    with pytest.raises(ValueError, match=r"kfac_factors needs 364 B, over max_bytes=363 B"):
        fnn.kfac_factors(net, params, x, y, max_bytes=363)


def test_refusals_fire_before_allocation_and_name_the_cheaper_quantity():
    """kfac_factors of 20000 → 1 → 1 would allocate A (20001, 20001), 1.5 GiB: refused under
    the default limit before anything is allocated; sizes in the unit that shows them."""
    big = fnn.MLP((20000, 1, 1), ("tanh", "identity"))
    params = [{"W": np.zeros((1, 20000), np.float32), "b": np.zeros(1, np.float32)},
              {"W": np.zeros((1, 1), np.float32), "b": np.zeros(1, np.float32)}]  # fmt: skip
    x, y = np.zeros((4, 20000), np.float32), np.zeros((4, 1), np.float32)
    with pytest.raises(ValueError, match=r"kfac_factors needs 3\.0 GiB, over max_bytes=256\.0 MiB"):
        fnn.kfac_factors(big, params, x, y)
    with pytest.raises(ValueError, match=r"fnn.ggn_diagonal \(P numbers\)"):
        fnn.kfac_factors(big, params, x, y, mc_samples=1, key=jax.random.key(0))
    net, params, x, y = problem(0, (3, 4, 2), ("tanh", "identity"), "l2", 2)
    with pytest.raises(ValueError, match=r"needs \d+ B, over max_bytes=64 B\. Use fnn.hvp"):
        fnn.hessian_diagonal(net, params, x, y, max_bytes=64)
    with pytest.raises(ValueError, match=r"over max_bytes=64 B\. Use fnn.ggn_vp .* mc_samples=1"):
        fnn.ggn_diagonal(net, params, x, y, max_bytes=64)
    with pytest.raises(ValueError, match=r"Use fnn.ggn_diagonal, fnn.kfac_factors"):
        curvature.ggn_blocks(net, params, x, y, max_bytes=64)
    with pytest.raises(ValueError, match=r"fnn.hessian_diagonal \(summed over the batch\)"):
        fnn.per_example_hessian_diagonal(net, params, x, y, max_bytes=64)


def test_hessian_caps_the_full_cost_of_a_forward_inner_gradient():
    """fwd_over_fwd / rev_over_fwd push P tangents for each of P columns: P² · B passes are
    capped (P · B alone is far below the limit); hvp's refusal names hvp's own options."""
    net = fnn.MLP((3, 20, 2), ("tanh", "identity"))  # P = 122
    params = fnn.init(jax.random.key(0), net)
    x, y = jnp.ones((300, 3)), jnp.zeros((300, 2))  # P · B = 36600, P² · B ≈ 4.5e6 > 2²²
    for method in ("fwd_over_fwd", "rev_over_fwd"):
        with pytest.raises(
            ValueError, match=r"122 × P · B = 122 × 122 · 300.*Use method='fwd_over_rev' or"
        ):
            fnn.hessian(net, params, x, y, method=method)
    with pytest.raises(ValueError, match="max_tangents=100 tangents. Use method='r_operator'"):
        fnn.hvp(net, params, x, y, params, method="fwd_over_fwd", max_tangents=100)
    with pytest.raises(ValueError, match="max_tangents must be a positive integer"):
        fnn.hvp(net, params, x, y, params, max_tangents=0)


def test_v_none_list_leaves_and_other_dtypes():
    """v=None → TypeError naming v; params and v as nested lists work (like x); v in
    bfloat16, float16 or float64 is cast to the parameters' float32 in every method, as the
    R-operator does; x in float64 with float32 parameters in every method of fnn.hessian."""
    net, params, x, y = problem(1, (3, 4, 2), ("tanh", "identity"), "l2", 3, dtype=np.float32)
    v = direction(net, 2, np.float32)
    for f in (fnn.hvp, fnn.ggn_vp):
        with pytest.raises(TypeError, match="v must be a direction like params.*got None"):
            f(net, params, x, y, None)
        with pytest.raises(ValueError, match="v must be a list"):
            f(net, params, x, y, {"W": 1.0})
    v_lists = [{k: np.asarray(t).tolist() for k, t in layer.items()} for layer in v]
    p_lists = [{k: np.asarray(t).tolist() for k, t in layer.items()} for layer in params]
    expected = fnn.hvp(net, params, x, y, v)
    chex.assert_trees_all_close(fnn.hvp(net, p_lists, x, y, v_lists), expected, rtol=1e-5)
    chex.assert_trees_all_close(
        fnn.ggn_diagonal(net, p_lists, x, y), fnn.ggn_diagonal(net, params, x, y), rtol=1e-6
    )
    for dtype in (jnp.bfloat16, jnp.float16, jnp.float64):
        v_other = jax.tree.map(lambda t, d=dtype: t.astype(d), v)
        v_cast = jax.tree.map(lambda t: t.astype(jnp.float32), v_other)
        for method in curvature.HVP_METHODS:
            Hv = fnn.hvp(net, params, x, y, v_other, method=method)
            chex.assert_trees_all_equal_dtypes(Hv, params)
            chex.assert_trees_all_close(
                Hv, fnn.hvp(net, params, x, y, v_cast), rtol=1e-4, atol=1e-5
            )
    H = fnn.hessian(net, params, x, y)
    for method in curvature.HESSIAN_METHODS:
        got = fnn.hessian(net, params, x.astype(jnp.float64), y, method=method)
        chex.assert_trees_all_close(got, H, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compare_backpack_small_agrees_with_backpack_and_opacus(tmp_path):
    """The comparison's smoke test (skipped without the `compare` extra): on the small
    default every exact quantity equals BackPACK's / Opacus's in float64 (Opacus divides by
    ‖g_b‖ + 1e-6), both Monte-Carlo means approach the exact value, and every time is
    positive. The figures themselves are machine-dependent and never asserted."""
    for module in ("torch", "backpack", "opacus"):
        pytest.importorskip(module)
    script = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "compare_backpack.py")
    result = script.main(["--reps", "1", "--draws", "40", "--out", str(tmp_path)])
    assert len(result["rows"]) == len(script.ROWS)
    for row in result["rows"]:
        numbers = row["numbers"]
        if "max_rel_diff" in numbers:
            bound = 1e-5 if row["fnn"] == "clipped_grad" else 1e-12
            assert numbers["max_rel_diff"] < bound, row
        else:
            assert numbers["fnn_mean_vs_exact"] < 0.3 and numbers["backpack_mean_vs_exact"] < 0.3
        assert row["fnn_s"] > 0 and row["torch_s"] > 0
    assert "| `ggn_diagonal` | DiagGGNExact |" in (tmp_path / "compare_backpack.md").read_text()


def test_a_user_activation_record_works_in_curvature_S27_S28():
    """A record built by activations.elementwise (SiLU, hidden and output) goes through the
    curvature doors like a name: the R-operator equals jax.jvp(jax.grad) of the same loss,
    and the GGN diagonal equals the diagonal of the dense Jᵀ H_L J."""
    sig = jax.nn.sigmoid
    silu = fnn.activations.elementwise(
        "silu",
        lambda a: a * sig(a),
        lambda a: sig(a) * (1 + a * sig(-a)),
        lambda a: sig(a) * sig(-a) * (2 + a * (sig(-a) - sig(a))),
    )
    net = fnn.MLP((3, 4, 2), (silu, silu))
    params = fnn.init(jax.random.key(0), net)
    v = fnn.init(jax.random.key(1), net)
    x = jax.random.normal(jax.random.key(2), (5, 3))
    y = jax.random.normal(jax.random.key(3), (5, 2))

    def L(p):
        return fnn.gradcheck.network_loss(net, p, x, y, loss="l2")

    expected = jax.jvp(jax.grad(L), (params,), (v,))[1]
    chex.assert_trees_all_close(fnn.hvp(net, params, x, y, v), expected, rtol=1e-10, atol=1e-12)
    theta, unravel = ravel_pytree(params)
    J = jax.vmap(lambda xb: jax.jacfwd(lambda t: fnn.apply(net, unravel(t), xb))(theta))(x)
    G = 2 * jnp.einsum("bci,bcj->ij", J, J) / x.shape[0]  # H_L = 2I for L2
    diag = ravel_pytree(fnn.ggn_diagonal(net, params, x, y))[0]
    np.testing.assert_allclose(diag, jnp.diag(G), rtol=1e-10, atol=1e-12)
