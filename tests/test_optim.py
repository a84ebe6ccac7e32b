"""K-FAC and Hessian-free as optax transformations: the step against dense linear algebra
(float64), the running averages, the damping rule, jit, fit, checkpoints, chains."""

import functools
import inspect
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import fnn
from fnn import optim


def _problem(sizes, acts, loss="l2", batch=4, seed=0):
    net = fnn.MLP(sizes, acts)
    rng = np.random.default_rng(seed)
    params = [
        {k: jnp.asarray(rng.normal(0.0, 0.6, s)) for k, s in layer.items()}
        for layer in net.layer_shapes()
    ]
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])))
    if fnn.losses.get(loss).target == "label":
        y = jnp.asarray(rng.integers(0, sizes[-1], batch))
    else:
        y = jnp.asarray(rng.normal(size=(batch, sizes[-1])))
    return net, params, x, y


def _grads(net, params, x, y, loss):
    return fnn.value_and_grad(net, params, x, y, loss=loss)[1]["params"]


@functools.lru_cache
def _compiled_update(optimizer, net, loss):
    def step(state, params, x, y):
        return optimizer.update(_grads(net, params, x, y, loss), state, params, x=x, y=y)

    return jax.jit(step)


def _step(optimizer, params, x, y, loss, net, state=None):
    """One compiled ``update`` on the batch's gradient (eager ``lax.cond`` compiles anyway)."""
    state = optimizer.init(params) if state is None else state
    return _compiled_update(optimizer, net, loss)(state, params, x, y)


def _dense_ggn(net, params, x, y, loss):
    """``(1/B) Σ_b J_bᵀ H_L J_b`` in ``ravel_pytree(params)`` order, by jax alone."""
    theta, unravel = ravel_pytree(params)
    loss_fn = fnn.losses.get(loss)

    def one(xb, yb):
        J = jax.jacfwd(lambda t: fnn.apply(net, unravel(t), xb))(theta)
        H = jax.hessian(loss_fn.fn)(fnn.apply(net, params, xb), yb)
        return J.T @ H @ J

    return jnp.mean(jax.vmap(one)(x, y), axis=0)


def _fit(net, params, x, y, optimizer, **kwargs):
    """``fit`` whether its key comes first or as ``key=``."""
    key = jax.random.key(3)
    if next(iter(inspect.signature(fnn.training.fit).parameters)) == "net":
        return fnn.training.fit(net, params, x, y, optimizer, key=key, **kwargs)
    return fnn.training.fit(key, net, params, x, y, optimizer, **kwargs)


# ---------------------------------------------------------------------------------------
# Witness 1: one layer, one example — K-FAC's step is the damped natural-gradient step.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, out", [("l2", 3), ("softmax_cross_entropy", 4), ("binary_cross_entropy", 2)]
)
@pytest.mark.parametrize("inverse", optim.INVERSES)
def test_kfac_step_is_the_natural_gradient_step_for_one_layer_and_one_example(loss, out, inverse):
    act = "sigmoid" if loss == "binary_cross_entropy" else "identity"
    net, params, x, y = _problem((3, out), (act,), loss, batch=1)
    x, y = x[0], y[0]
    if loss == "binary_cross_entropy":
        y = jnp.abs(y) / (1 + jnp.abs(y))
    lam, eta = 0.3, 0.7
    opt = optim.kfac(net, learning_rate=eta, damping=lam, loss=loss, inverse=inverse)
    updates, _ = _step(opt, params, x, y, loss, net)

    # Ŵ = [b, W] row-major, and its gradient, by jax alone.
    W_hat = jnp.concatenate([params[0]["b"][:, None], params[0]["W"]], axis=1)
    z_bar = jnp.concatenate([jnp.ones(1), x])
    loss_fn = fnn.losses.get(loss)
    fwd = {"identity": lambda a: a, "sigmoid": jax.nn.sigmoid}[act]
    L = lambda V: loss_fn.fn(fwd(V @ z_bar), y)  # noqa: E731
    g = jax.grad(L)(W_hat).reshape(-1)
    J = jax.jacfwd(lambda V: fwd(V @ z_bar))(W_hat).reshape(out, -1)
    J_a = jax.jacfwd(fwd)(W_hat @ z_bar)
    H_L = jax.hessian(loss_fn.fn)(fwd(W_hat @ z_bar), y)
    GGN = J.T @ H_L @ J
    G, A = J_a.T @ H_L @ J_a, jnp.outer(z_bar, z_bar)
    np.testing.assert_allclose(GGN, jnp.kron(G, A), atol=1e-12)  # K-FAC is exact here
    s = jnp.sqrt(lam)
    damped = (
        GGN
        + s * jnp.kron(G, jnp.eye(4))
        + s * jnp.kron(jnp.eye(out), A)
        + lam * jnp.eye(GGN.shape[0])
    )
    expected = -eta * jnp.linalg.solve(damped, g)
    got = jnp.concatenate([updates[0]["b"][:, None], updates[0]["W"]], axis=1).reshape(-1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_kfac_step_tends_to_the_pseudo_inverse_natural_gradient():
    net, params, x, y = _problem((3, 2), ("identity",), "l2", batch=1)
    opt = optim.kfac(net, learning_rate=1.0, damping=1e-12, min_damping=1e-12)
    updates, _ = _step(opt, params, x, y, "l2", net)
    GGN = _dense_ggn(net, params, x, y, "l2")  # rank 2 of 8: one example, two outputs
    g, unravel = ravel_pytree(_grads(net, params, x, y, "l2"))
    natural = -jnp.linalg.pinv(GGN, rtol=1e-10) @ g
    chex.assert_trees_all_close(updates, unravel(natural), rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------
# Witness 2: conjugate gradient converges to the dense solve of (G + λI) d = −g.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["l2", "softmax_cross_entropy"])
def test_hessian_free_step_converges_to_the_dense_solve(loss):
    net, params, x, y = _problem((2, 3, 3), ("tanh", "identity"), loss, batch=5)
    lam = 0.1
    GGN = _dense_ggn(net, params, x, y, loss)
    g, _ = ravel_pytree(_grads(net, params, x, y, loss))
    M = GGN + lam * jnp.eye(g.size)
    exact = -jnp.linalg.solve(M, g)
    errors = []
    for n in (1, 2, 4, 8, g.size):
        opt = optim.hessian_free(net, damping=lam, loss=loss, cg_iterations=n, adapt_damping=False)
        d = ravel_pytree(_step(opt, params, x, y, loss, net)[0])[0]
        errors.append(float(jnp.sqrt((d - exact) @ M @ (d - exact))))  # CG's own norm
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-8 * float(jnp.linalg.norm(exact)), errors
    assert errors[0] > 1e3 * errors[-1], errors


def test_conjugate_gradient_solves_a_small_system_exactly():
    rng = np.random.default_rng(1)
    R = rng.normal(size=(6, 6))
    M, b = jnp.asarray(R @ R.T + np.eye(6)), jnp.asarray(rng.normal(size=6))
    x = optim.conjugate_gradient(lambda v: M @ v, b, jnp.zeros(6), 6)
    np.testing.assert_allclose(x, jnp.linalg.solve(M, b), rtol=1e-9)
    # a residual already 0 stays 0, without dividing by it
    x = optim.conjugate_gradient(lambda v: M @ v, b, jnp.linalg.solve(M, b), 3)
    chex.assert_tree_all_finite(x)


def _average(old, fresh, w):
    return jax.tree.map(lambda F, f: w * F + (1 - w) * f, old, fresh)


# ---------------------------------------------------------------------------------------
# Witness 3: the running averages of the factors.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("update_every, decay", [(1, 0.95), (2, 0.5)])
def test_kfac_running_averages_match_a_direct_computation(update_every, decay):
    net, params, _, _ = _problem((3, 4, 2), ("tanh", "identity"), "l2")
    opt = optim.kfac(net, learning_rate=0.1, damping=0.5, update_every=update_every, decay=decay)
    state = opt.init(params)
    expected, r = None, 0
    for t in range(6):
        _, _, x, y = _problem((3, 4, 2), ("tanh", "identity"), "l2", seed=10 + t)
        if t % update_every == 0:
            fresh = fnn.kfac_factors(net, params, x, y, loss="l2")
            w = min(1 - 1 / (r + 1), decay)
            expected = fresh if r == 0 else _average(expected, fresh, w)
            r += 1
        updates, state = _step(opt, params, x, y, "l2", net, state)
        params = optax.apply_updates(params, updates)
        chex.assert_trees_all_close(state.factors, expected, rtol=1e-12, atol=1e-14)
    assert int(state.count) == 6


# ---------------------------------------------------------------------------------------
# The damping rule.
# ---------------------------------------------------------------------------------------


def test_levenberg_marquardt_rule():
    lm = optim.levenberg_marquardt
    assert float(lm(1.0, 0.1, factor=1.5)) == 1.5
    assert float(lm(1.0, 0.5, factor=1.5)) == 1.0
    assert float(lm(1.0, 0.9, factor=2.0)) == 0.5
    assert float(lm(1.0, jnp.nan, factor=2.0)) == 2.0
    assert float(lm(1e-8, 0.9, factor=2.0, min_damping=1e-8)) == 1e-8
    assert float(lm(optim.MAX_DAMPING, -1.0, factor=2.0)) == optim.MAX_DAMPING


def test_reduction_ratio_is_one_on_a_quadratic_loss():
    # A linear network under L2: the loss is its own Gauss–Newton model, so ρ = 1 exactly.
    net, params, x, y = _problem((3, 2), ("identity",), "l2", batch=6)
    grads = _grads(net, params, x, y, "l2")
    step = jax.tree.map(lambda g: -0.3 * g, grads)
    rho = optim.reduction_ratio(net, params, x, y, grads, step, loss="l2")
    np.testing.assert_allclose(rho, 1.0, rtol=1e-12)
    zero = jax.tree.map(jnp.zeros_like, grads)  # no predicted decrease: ρ = 0, not NaN
    assert float(optim.reduction_ratio(net, params, x, y, grads, zero, loss="l2")) == 0.0


@pytest.mark.parametrize("make", ["kfac", "hessian_free"])
def test_damping_falls_where_the_model_is_exact(make):
    net, params, x, y = _problem((3, 2), ("identity",), "l2", batch=6)
    opt = (
        optim.kfac(net, learning_rate=0.5, damping=1.0, damping_factor=2.0)
        if make == "kfac"
        else optim.hessian_free(net, damping=1.0, damping_factor=2.0, cg_iterations=3)
    )
    _, state = _step(opt, params, x, y, "l2", net)
    assert float(state.damping) == 0.5


# ---------------------------------------------------------------------------------------
# Options, jit, fit, checkpoints, chains.
# ---------------------------------------------------------------------------------------


def test_eigh_and_cholesky_give_the_same_steps():
    net, params, x, y = _problem((3, 5, 2), ("tanh", "identity"), "l2", batch=8)
    runs = []
    for inverse in optim.INVERSES:
        opt = optim.kfac(net, learning_rate=0.3, damping=0.2, inverse=inverse)
        p, state = params, opt.init(params)
        for _ in range(3):
            updates, state = _step(opt, p, x, y, "l2", net, state)
            p = optax.apply_updates(p, updates)
        runs.append(p)
    chex.assert_trees_all_close(*runs, rtol=1e-10)


@pytest.mark.parametrize("make", ["kfac", "hessian_free"])
def test_update_under_jit_equals_eager(make):
    net, params, x, y = _problem((3, 4, 3), ("tanh", "identity"), "softmax_cross_entropy")
    loss = "softmax_cross_entropy"
    opt = (
        optim.kfac(net, learning_rate=0.2, loss=loss, update_every=2)
        if make == "kfac"
        else optim.hessian_free(net, loss=loss, cg_iterations=4, warm_start=0.9)
    )
    grads, state = _grads(net, params, x, y, loss), opt.init(params)
    eager = opt.update(grads, state, params, x=x, y=y)
    jitted = jax.jit(lambda g, s, p, x, y: opt.update(g, s, p, x=x, y=y))(
        grads, state, params, x, y
    )
    chex.assert_trees_all_close(eager, jitted, rtol=1e-10)
    chex.assert_tree_all_finite(eager)


@pytest.mark.parametrize("make", ["kfac", "hessian_free"])
def test_fit_trains_and_resumes_exactly(make, tmp_path):
    net = fnn.MLP((1, 6, 1), ("tanh", "identity"))
    x = jnp.linspace(-1, 1, 24)[:, None]
    y = jnp.sin(3 * x)
    params = fnn.init(jax.random.key(0), net, dtype=jnp.float64)
    opt = (
        optim.kfac(net, learning_rate=0.5, damping=0.1, update_every=2)
        if make == "kfac"
        else optim.hessian_free(net, damping=0.1, cg_iterations=5, warm_start=0.5)
    )
    whole, history = _fit(net, params, x, y, opt, epochs=4, batch_size=8)
    assert history.epoch_loss[-1] < 0.5 * history.epoch_loss[0]
    path = str(tmp_path / "run.npz")
    _fit(net, params, x, y, opt, epochs=2, batch_size=8, checkpoint=path)
    resumed, history2 = _fit(net, params, x, y, opt, epochs=4, batch_size=8, checkpoint=path)
    chex.assert_trees_all_equal(whole, resumed)
    np.testing.assert_array_equal(history.loss, history2.loss)


def test_kfac_in_a_chain_with_clipping_and_a_schedule():
    net = fnn.MLP((1, 6, 1), ("tanh", "identity"))
    x = jnp.linspace(-1, 1, 16)[:, None]
    params = fnn.init(jax.random.key(0), net, dtype=jnp.float64)
    schedule = optax.exponential_decay(0.5, transition_steps=1, decay_rate=0.5)
    opt = optax.chain(
        optax.clip_by_global_norm(0.1), optim.kfac(net, learning_rate=schedule, damping=0.1)
    )
    plain = optim.kfac(net, learning_rate=0.5, damping=0.1)
    grads = _grads(net, params, x, x**2, "l2")
    clipped, _ = optax.clip_by_global_norm(0.1).update(grads, None)
    chained, state = opt.update(grads, opt.init(params), params, x=x, y=x**2)
    alone, _ = plain.update(clipped, plain.init(params), params, x=x, y=x**2)
    chex.assert_trees_all_close(chained, alone, rtol=1e-12)  # step 0: η = 0.5
    _, (_, kstate) = opt.update(grads, state, params, x=x, y=x**2)
    assert int(kstate.count) == 2
    _, history = _fit(net, params, x, x**2, opt, epochs=3, batch_size=8)
    assert np.all(np.isfinite(history.loss))


def test_monte_carlo_factors():
    if "mc_samples" not in inspect.signature(fnn.kfac_factors).parameters:
        pytest.skip("fnn.kfac_factors has no mc_samples (Monte-Carlo factors) in this build")
    net, params, x, y = _problem((3, 4, 3), ("tanh", "identity"), "softmax_cross_entropy")
    opt = optim.kfac(
        net, learning_rate=0.2, loss="softmax_cross_entropy", mc_samples=2, key=jax.random.key(1)
    )
    updates, state = _step(opt, params, x, y, "softmax_cross_entropy", net)
    chex.assert_tree_all_finite((updates, state))
    assert not np.allclose(state.factors[1]["G"], 0)


# ---------------------------------------------------------------------------------------
# Refusals.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"learning_rate": -1.0}, ValueError, "learning_rate"),
        ({"damping": 0.0}, ValueError, "damping"),
        ({"damping_factor": 1.0}, ValueError, "damping_factor"),
        ({"damping": 1e-9}, ValueError, "min_damping"),
        ({"inverse": "svd"}, ValueError, "inverse"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"decay": 1.0}, ValueError, "decay"),
        ({"mc_samples": 2}, ValueError, "key"),
        ({"key": jax.random.key(0)}, ValueError, "mc_samples"),
        ({"mc_samples": 2, "key": 3}, TypeError, "key"),
        ({"loss": "hinge"}, ValueError, "loss"),
    ],
)
def test_kfac_refuses_bad_options(kwargs, error, match):
    net = fnn.MLP((2, 3), ("identity",))
    with pytest.raises(error, match=match):
        optim.kfac(net, **{"learning_rate": 0.1, **kwargs})


@pytest.mark.parametrize(
    "kwargs, match",
    [({"cg_iterations": 0}, "cg_iterations"), ({"warm_start": 1.5}, "warm_start")],
)
def test_hessian_free_refuses_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optim.hessian_free(fnn.MLP((2, 3), ("identity",)), **kwargs)


@pytest.mark.parametrize("make", [optim.kfac, optim.hessian_free])
def test_update_needs_the_batch_and_a_net(make):
    with pytest.raises(TypeError, match="MLP"):
        make((2, 3), learning_rate=0.1)
    net, params, x, y = _problem((2, 3), ("identity",), "l2")
    opt = make(net, learning_rate=0.1)
    grads = _grads(net, params, x, y, "l2")
    with pytest.raises(TypeError, match="x=x, y=y"):
        opt.update(grads, opt.init(params), params)
    with pytest.raises(TypeError, match="params"):
        opt.update(grads, opt.init(params), None, x=x, y=y)
