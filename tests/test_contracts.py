"""Contracts that a one-line bug would break silently: each test here failed on a bug
planted in fnn that the rest of the suite let pass. Only public behaviour is used, so that
the contracts outlive any refactoring of the code behind them.

The calling convention (docs/conventions.md): every public function of a network's
parameters and inputs is ``f(net, params, x, y[, v], *, loss=..., method=..., <options>)``.

Training (S21): a new shuffle every epoch, the parameters handed to the optimizer, the
epoch's mean loss. Losses (S16): binary cross-entropy accurate for ŷ → 0. Networks (S4):
PReLU's α in init's dtype. Symmetries (S9): every odd activation's sign flips.
"""

import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnn
from fnn import symmetry, training


def data(N=12, D=2, M=1, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(N, D)).astype(dtype))
    y = jnp.asarray(rng.normal(size=(N, M)).astype(dtype))
    return x, y


@pytest.fixture(scope="module")
def problem():
    net = fnn.MLP((2, 3, 1), ("tanh", "identity"))
    params = fnn.init(jax.random.key(0), net)
    x, y = data()
    return net, params, x, y


# ---------------------------------------------------------------------------------------
# Training (S21).
# ---------------------------------------------------------------------------------------


def test_every_epoch_draws_a_new_shuffle(problem):
    """With a zero learning rate the parameters never move, so each step's loss is the loss
    of its batch: the same sequence every epoch would mean the same batches every epoch."""
    net, params, x, y = problem
    _, history = training.fit(
        net, params, x, y, optax.sgd(0.0), key=jax.random.key(1), epochs=4, batch_size=3
    )
    per_epoch = np.asarray(history.loss).reshape(4, 4)
    orders = {tuple(np.round(epoch, 12)) for epoch in per_epoch}
    assert len(orders) == 4, per_epoch  # four epochs, four different batch orders
    # … and the same key gives the same shuffles.
    _, again = training.fit(
        net, params, x, y, optax.sgd(0.0), key=jax.random.key(1), epochs=4, batch_size=3
    )
    np.testing.assert_array_equal(again.loss, history.loss)


def test_the_epoch_loss_is_the_mean_over_its_steps(problem):
    """With a zero learning rate and N divisible by the batch size, every example is seen
    once per epoch: the epoch's mean loss is the full-data loss; its last step's is not."""
    net, params, x, y = problem
    _, history = training.fit(
        net, params, x, y, optax.sgd(0.0), key=jax.random.key(2), epochs=2, batch_size=4
    )
    full, _ = fnn.value_and_grad(net, params, x, y)
    steps = np.asarray(history.loss).reshape(2, 3)
    np.testing.assert_allclose(history.epoch_loss, [full, full], rtol=1e-12)
    np.testing.assert_allclose(history.epoch_loss, steps.mean(axis=1), rtol=1e-12)
    assert not np.allclose(history.epoch_loss, steps[:, -1])  # the case the rule is for


def manual_adamw(net, params, x, y, optimizer, steps):
    """optax's own loop around fnn.value_and_grad: the parameters go to update()."""
    state = optimizer.init(params)
    for _ in range(steps):
        _, grads = fnn.value_and_grad(net, params, x, y)
        updates, state = optimizer.update(grads["params"], state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_the_optimizer_sees_the_parameters(problem):
    """optax.adamw decays the weights it is given: a step without params would differ (or
    refuse). make_train_step and fit (full batch: no shuffling) match optax's own loop."""
    net, params, x, y = problem
    optimizer = optax.adamw(0.1, weight_decay=0.5)
    expected = manual_adamw(net, params, x, y, optimizer, steps=3)
    step = training.make_train_step(net, optimizer)
    got, state = params, optimizer.init(params)
    for _ in range(3):
        got, state, _ = step(got, x, y, state)
    chex.assert_trees_all_close(got, expected, rtol=1e-10)
    fitted, _ = training.fit(
        net, params, x, y, optimizer, key=jax.random.key(0), epochs=3, batch_size=None
    )
    chex.assert_trees_all_close(fitted, expected, rtol=1e-10)
    # The decay is there to be seen: adam alone ends elsewhere.
    adam = manual_adamw(net, params, x, y, optax.adam(0.1), steps=3)
    assert not np.allclose(adam[0]["W"], expected[0]["W"])


# ---------------------------------------------------------------------------------------
# Losses (S16) and initialisation (S4).
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "rtol"), [(jnp.float32, 1e-6), (jnp.float64, 1e-12)])
def test_binary_cross_entropy_is_accurate_for_a_tiny_prediction_of_a_zero(dtype, rtol):
    """−log(1 − ŷ) = ŷ + ŷ²/2 + … for y = 0: log1p(−ŷ) keeps every digit; log(1 − ŷ)
    rounds 1 − 1e-10 (to 1 in float32: a loss of 0)."""
    bce = fnn.losses.get("binary_cross_entropy")
    y_hat = jnp.asarray([1e-10, 3e-9], dtype)
    got = bce.fn(y_hat, jnp.zeros(2, dtype))
    expected = float(-np.log1p(-np.float64(1e-10)) - np.log1p(-np.float64(3e-9)))
    assert got.dtype == dtype
    assert float(got) == pytest.approx(expected, rel=rtol)
    # and its mirror, y = 1 at ŷ = 1 − δ: −log ŷ = δ + …
    one = jnp.asarray([1.0], dtype)
    assert float(bce.fn(one - jnp.asarray([2.0**-20], dtype), one)) == pytest.approx(
        -math.log1p(-(2.0**-20)), rel=rtol
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_prelu_alpha_is_initialised_in_inits_dtype(dtype):
    net = fnn.MLP((2, 3, 3, 1), ("prelu", "prelu", "identity"))
    params = fnn.init(jax.random.key(0), net, dtype=dtype)
    for layer in params:
        assert {leaf.dtype for leaf in layer.values()} == {jnp.dtype(dtype)}, layer
    assert float(params[0]["alpha"]) == 0.25


# ---------------------------------------------------------------------------------------
# Symmetries (S9): every activation with f(−a) = c − f(a) has its 2^M sign flips.
# ---------------------------------------------------------------------------------------

ODD = ("identity", "tanh", "hard_tanh", "sin")


@pytest.mark.parametrize("act", [*ODD, "sigmoid"])
def test_sign_flips_of_every_symmetric_activation_keep_the_function(act):
    net = fnn.MLP((3, 4, 2), (act, "identity"))
    params = fnn.init(jax.random.key(3), net, scale=2.0)  # |a| > 1: hard_tanh's flat parts
    x = jax.random.normal(jax.random.key(4), (6, 3))
    flipped = symmetry.flip(net, params, 0, jnp.array([True, False, True, True]))
    assert not np.allclose(flipped[0]["W"], params[0]["W"])
    np.testing.assert_allclose(
        fnn.apply(net, flipped, x), fnn.apply(net, params, x), rtol=1e-12, atol=1e-12
    )
    assert symmetry.network_symmetry_count(net) == math.factorial(4) * 2**4
    assert fnn.activations.get(act).flip_offset == (1.0 if act == "sigmoid" else 0.0)


@pytest.mark.parametrize("act", ["relu", "softplus", "elu", "gelu", "cos"])
def test_activations_without_sign_flips_are_refused_and_not_counted(act):
    net = fnn.MLP((3, 4, 2), (act, "identity"))
    params = fnn.init(jax.random.key(3), net)
    with pytest.raises(ValueError, match="no sign-flip symmetry"):
        symmetry.flip(net, params, 0, jnp.ones(4, bool))
    assert symmetry.network_symmetry_count(net) == math.factorial(4)


# ---------------------------------------------------------------------------------------
# The calling convention, walked with inspect over the public API.
# ---------------------------------------------------------------------------------------

# Modules whose public functions of (net, params, x, …) follow the convention.
CONVENTION_MODULES = (
    "derivatives", "forward_mode", "extensions", "traces", "curvature", "hessian_backprop",
    "gauss_newton", "gradcheck", "network_checks", "testing", "training", "step",
)  # fmt: skip
# Positional after (net, params, x[, y]): the vector of a product (v), the derivative a
# check compares (grads, Hv), the optimizer of a training step and its state.
POSITIONAL_AFTER_Y = ("v", "grads", "Hv", "optimizer", "opt_state")
# Functions that make something from a PRNG key take it first, as stax's init_fun(rng, …).
KEY_FIRST = {"fnn.init", "fnn.network.init", "fnn.symmetry.random_symmetry"}
# Not of the (net, params, x, y) shape on purpose: the shared door takes the loss it checks
# as an argument like the others.
OTHER_SHAPES = {"fnn.derivatives.check_loss_problem"}


def _public_functions():
    found = {f"fnn.{n}": getattr(fnn, n) for n in fnn.__all__}
    for module_name in CONVENTION_MODULES:
        module = getattr(fnn, module_name)
        for n in module.__all__:
            found.setdefault(f"fnn.{module_name}.{n}", getattr(module, n))
    return {q: f for q, f in sorted(found.items()) if inspect.isfunction(f)}


def convention_breaches(qualname: str, f) -> list[str]:
    """What in ``f``'s signature breaks the calling convention (empty: none)."""
    params = list(inspect.signature(f).parameters.values())
    names = [p.name for p in params]
    breaches = [f"has {bad}=" for bad in ("mode", "clip_norm") if bad in names]
    if "key" in names and qualname not in KEY_FIRST:
        if params[names.index("key")].kind is not inspect.Parameter.KEYWORD_ONLY:
            breaches.append("key is not keyword-only")
    if "net" not in names or qualname in KEY_FIRST | OTHER_SHAPES:
        return breaches
    if "params" not in names or "x" not in names:  # a function of the architecture only
        return breaches
    if names[:3] != ["net", "params", "x"]:
        breaches.append(f"starts {names[:3]}, not ['net', 'params', 'x']")
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    rest = positional[3:]
    if rest[:1] == ["y"]:
        rest = rest[1:]
    extra = [n for n in rest if n not in POSITIONAL_AFTER_Y]
    if extra:
        breaches.append(f"{extra} not keyword-only")
    if f.__doc__ and "unchecked" in f.__doc__.lower():
        breaches = []  # an engine, called by a door with the checked loss record
    return breaches


def test_the_convention_walk_finds_the_differentiating_functions():
    functions = _public_functions()
    for q in ("fnn.value_and_grad", "fnn.jacobian", "fnn.hvp", "fnn.hessian", "fnn.training.fit"):
        assert q in functions, q


@pytest.mark.parametrize("qualname", sorted(_public_functions()))
def test_every_public_function_follows_the_calling_convention(qualname):
    breaches = convention_breaches(qualname, _public_functions()[qualname])
    assert not breaches, f"{qualname}: {breaches}"


def test_the_convention_check_catches_what_it_is_for():
    def mode_positional(net, params, x, y, loss="l2", mode="auto"): ...

    def clip(net, params, x, y, *, clip_norm=1.0): ...

    def key_positional(net, params, x, y, key): ...

    def good(net, params, x, y, v, *, loss="l2", method="r_operator", key=None): ...

    assert convention_breaches("m", mode_positional) == [
        "has mode=", "['loss', 'mode'] not keyword-only"
    ]  # fmt: skip
    assert convention_breaches("c", clip) == ["has clip_norm="]
    assert "key is not keyword-only" in convention_breaches("k", key_positional)
    assert convention_breaches("g", good) == []
