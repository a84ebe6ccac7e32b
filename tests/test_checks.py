"""One checked boundary: every public entry point refuses the same bad input the same way —
the same exception type, a message naming the argument — before anything is traced
(``fnn._checks``); every limit of work that can explode honours the caller's value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import _checks, forward_mode, network

NET = fnn.MLP((3, 4, 2), ("tanh", "identity"))
PARAMS = fnn.init(jax.random.key(0), NET)
X = jnp.ones((5, 3))
Y = jnp.zeros((5, 2))

# Every public function of (net, params, x[, y]), as a call with keyword overrides.
ENTRY_POINTS = {
    "apply": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.apply(net, params, x),
    "forward_pass": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.forward_pass(net, params, x),
    "apply_augmented": lambda net=NET, params=PARAMS, x=X, y=Y: network.apply_augmented(
        net, params, x
    ),
    "value_and_grad reverse": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.value_and_grad(
        net, params, x, y
    ),
    "value_and_grad explicit": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.value_and_grad(
        net, params, x, y, method="explicit"
    ),
    "value_and_grad forward": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.value_and_grad(
        net, params, x, y, method="forward"
    ),
    "jvp": lambda net=NET, params=PARAMS, x=X, y=Y: forward_mode.jvp(net, params, x),
    "trace": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.backprop_trace(net, params, x, y),
    "per_example_grads": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.per_example_grads(
        net, params, x, y
    ),
    "per_example_grad_norms": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.per_example_grad_norms(
        net, params, x, y
    ),
    "clipped_grad": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.clipped_grad(
        net, params, x, y, max_norm=1.0
    ),
    "gradient_statistics": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.gradient_statistics(
        net, params, x, y
    ),
    "jacobian": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.jacobian(net, params, x),
    "jacobian explicit": lambda net=NET, params=PARAMS, x=X, y=Y: fnn.jacobian(
        net, params, x, method="explicit"
    ),
}
# Those that take a single example only (x of shape (D,)): none among these.
SINGLE = {}
ALL = {**ENTRY_POINTS, **SINGLE}


@pytest.mark.parametrize("name", ALL)
def test_a_net_that_is_not_an_mlp_is_a_type_error(name):
    with pytest.raises(TypeError, match="net must be an fnn.MLP; got list"):
        ALL[name](net=PARAMS)
    with pytest.raises(TypeError, match="net must be an fnn.MLP; got tuple"):
        ALL[name](net=(3, 4, 2))


@pytest.mark.parametrize("name", ALL)
def test_integer_params_are_a_type_error_not_a_truncated_gradient(name):
    ints = [{k: v.astype(jnp.int32) for k, v in p.items()} for p in PARAMS]
    with pytest.raises(TypeError, match=r"params\[0\]\['W'\] must be a real floating-point"):
        ALL[name](params=ints)


@pytest.mark.parametrize("name", ALL)
def test_complex_input_is_a_type_error(name):
    x = X.astype(jnp.complex64) if name in ENTRY_POINTS else X[0].astype(jnp.complex64)
    with pytest.raises(TypeError, match="x must be a real"):
        ALL[name](x=x)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_an_empty_batch_is_a_value_error(name):
    with pytest.raises(ValueError, match=r"x must hold at least one example; got .*\(0, 3\)"):
        ENTRY_POINTS[name](x=jnp.ones((0, 3)), y=jnp.zeros((0, 2)))


@pytest.mark.parametrize("name", ALL)
def test_the_checks_fire_under_jit_at_trace_time(name):
    """Shapes and dtypes are static: the same ValueError under jax.jit, not an XLA error."""
    x = jnp.ones((4, 7)) if name in ENTRY_POINTS else jnp.ones(7)
    with pytest.raises(ValueError, match="D = 3|= \\(3,\\)"):
        jax.jit(lambda x: ALL[name](x=x))(x)


def test_integer_input_runs_a_forward_pass_but_not_a_gradient():
    """A forward pass accepts integer features (as jnp would); a gradient w.r.t. x does not."""
    np.testing.assert_allclose(
        fnn.apply(NET, PARAMS, jnp.ones(3, jnp.int32)), fnn.apply(NET, PARAMS, jnp.ones(3))
    )
    with pytest.raises(TypeError, match="x must be a real floating-point array; got int32"):
        fnn.value_and_grad(NET, PARAMS, jnp.ones(3, jnp.int32), jnp.zeros(2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"key": 0}, TypeError, "key must be one PRNG key.*got int"),
        ({"key": jax.random.split(jax.random.key(0), 2)}, TypeError, r"key must be one PRNG key"),
        ({"scale": float("nan")}, ValueError, "scale must be a finite positive number; got nan"),
        ({"scale": -1.0}, ValueError, "scale must be a finite positive number; got -1.0"),
        ({"scale": "1"}, ValueError, "scale must be a finite positive number"),
        ({"dtype": jnp.int32}, TypeError, "dtype must be a real floating dtype; got int32"),
        ({"dtype": "float"}, None, None),
        ({"dtype": "banana"}, TypeError, "dtype must be a real floating dtype; got 'banana'"),
        ({"scheme": "glorot_norml"}, ValueError, r"did you mean 'glorot_normal'\?"),
    ],
)
def test_init_checks_key_scale_dtype_and_scheme(kwargs, error, match):
    kwargs = {"key": jax.random.key(0), **kwargs}
    key = kwargs.pop("key")
    if error is None:
        assert fnn.init(key, NET, **kwargs)[0]["W"].dtype.kind == "f"
        return
    with pytest.raises(error, match=match):
        fnn.init(key, NET, **kwargs)


def test_init_accepts_a_legacy_key_identically_shaped():
    legacy = fnn.init(jax.random.PRNGKey(0), NET)
    assert [p["W"].shape for p in legacy] == [(4, 3), (2, 4)]


@pytest.mark.parametrize(
    "option, method",
    [("max_bytes", "reverse"), ("max_tangents", "explicit"), ("chunk_size", "reverse")],
)
def test_an_option_of_another_method_is_refused(option, method):
    with pytest.raises(ValueError, match=f"{option} applies to method="):
        fnn.value_and_grad(NET, PARAMS, X, Y, method=method, **{option: 8})


def test_forward_mode_gradient_has_a_cost_guard_naming_reverse():
    """Forward accumulation pushes P · B tangents: 670k parameters × 256 examples would run
    for minutes; the guard refuses at once and names the cheap alternative."""
    big = fnn.MLP((784, 512, 512, 10), ("relu", "relu", "identity"))
    params = jax.eval_shape(lambda: fnn.init(jax.random.key(0), big))
    x = jax.ShapeDtypeStruct((256, 784), jnp.float32)
    y = jax.ShapeDtypeStruct((256, 10), jnp.float32)
    with pytest.raises(ValueError, match=r"P · B = 669706 · 256.* Use method='reverse'"):
        jax.eval_shape(
            lambda p, x, y: fnn.value_and_grad(big, p, x, y, method="forward"), params, x, y
        )
    # the limit is an argument: a small problem passes, and a lower limit refuses it
    fnn.value_and_grad(NET, PARAMS, X, Y, method="forward")
    with pytest.raises(ValueError, match="max_tangents=10"):
        fnn.value_and_grad(NET, PARAMS, X, Y, method="forward", max_tangents=10)


@pytest.mark.parametrize(
    "call, kind",
    [
        (lambda: fnn.activations.get("tahn"), "activation"),
        (lambda: fnn.losses.get("softmax_crossentropy"), "loss"),
        (lambda: fnn.value_and_grad(NET, PARAMS, X, Y, method="revers"), "method"),
        (lambda: fnn.jacobian(NET, PARAMS, X[0], method="reverse_mode"), "method"),
        (lambda: fnn.MLP((3, 2), ("sigmod",)), "activation"),
    ],
)
def test_an_unknown_name_suggests_the_nearest_valid_one(call, kind):
    with pytest.raises(ValueError, match=rf"Unknown {kind}.*\(did you mean '\w+'\?\); expected"):
        call()


def test_unknown_name_without_a_near_one_lists_the_valid_ones():
    err = _checks.unknown_name("loss", "zzz", ("l1", "l2"))
    assert str(err) == "Unknown loss 'zzz'; expected one of ('l1', 'l2')."


def test_check_finite_names_the_first_bad_entry_and_skips_tracers():
    with pytest.raises(ValueError, match=r"x must be finite; got nan at index \(1, 0\)"):
        _checks.check_finite(np.array([[1.0, 2.0], [np.nan, np.inf]]), "x")
    jax.jit(lambda x: _checks.check_finite(x, "x") or x)(jnp.array([np.nan]))


@pytest.mark.parametrize("method", ["reverse", "explicit", "forward"])
@pytest.mark.parametrize(
    "loss, bad",
    [("softmax_cross_entropy", 3), ("softmax_cross_entropy", -1), ("cross_entropy", 7)],
)
def test_a_label_out_of_range_under_jit_is_nan_never_a_finite_wrong_number(method, loss, bad):
    """Under jax.jit the labels are tracers: no eager check can see them. The engines then
    give NaN for the loss and every gradient entry the bad example touches."""
    out = "identity" if loss == "softmax_cross_entropy" else "softmax"
    net = fnn.MLP((3, 4, 3), ("tanh", out))
    params = fnn.init(jax.random.key(0), net)
    y = jnp.array([0, bad, 1])
    f = jax.jit(lambda p, x, y: fnn.value_and_grad(net, p, x, y, loss=loss, method=method))
    value, grads = f(params, jnp.ones((3, 3)), y)
    assert np.isnan(value)
    assert all(np.isnan(g).any() for g in jax.tree.leaves(grads["params"]))
    assert np.isnan(grads["x"][1]).all()
    with pytest.raises(ValueError, match=rf"labels in \[0, 3\).*got {bad}"):
        fnn.value_and_grad(net, params, jnp.ones((3, 3)), y, loss=loss, method=method)


def test_the_checked_loss_names_the_bad_label_under_jit():
    """The opt-in checked mode: fnn.losses.checked(loss) under checkify names the value."""
    from jax.experimental import checkify

    net = fnn.MLP((3, 4, 3), ("tanh", "identity"))
    params = fnn.init(jax.random.key(0), net)
    loss = fnn.losses.checked("softmax_cross_entropy")
    f = checkify.checkify(jax.jit(lambda p, x, y: fnn.value_and_grad(net, p, x, y, loss=loss)))
    err, _ = f(params, jnp.ones((3, 3)), jnp.array([0, 1, 2]))
    err.throw()  # a good batch passes
    err, _ = f(params, jnp.ones((3, 3)), jnp.array([0, 5, 2]))
    with pytest.raises(checkify.JaxRuntimeError, match="got 5"):
        err.throw()


def test_fit_and_make_train_step_refuse_nan_data_the_same_way():
    """NaN or inf in the data: the same ValueError, naming the first bad entry, from fit and
    from the step make_train_step returns."""
    import optax

    x = np.ones((8, 3))
    x[2, 1] = np.nan
    y = np.zeros((8, 2))
    match = r"x must be finite; got nan at index \(2, 1\)"
    with pytest.raises(ValueError, match=match):
        fnn.training.fit(
            NET, PARAMS, x, y, optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(0)
        )
    step = fnn.training.make_train_step(NET, optax.sgd(0.1))
    with pytest.raises(ValueError, match=match):
        step(PARAMS, x, y, optax.sgd(0.1).init(PARAMS))
    y_bad = np.zeros((8, 2))
    y_bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"y must be finite; got inf at index \(0, 0\)"):
        step(PARAMS, np.ones((8, 3)), y_bad, optax.sgd(0.1).init(PARAMS))


# ---------------------------------------------------------------------------------------
# Limits: one helper (check_limit), the caller's value honoured, one example = batch 1.
# ---------------------------------------------------------------------------------------


def _explicit(max_bytes, x=X, y=Y):
    return fnn.value_and_grad(NET, PARAMS, x, y, method="explicit", max_bytes=max_bytes)


def _forward(max_tangents, x=X, y=Y):
    return fnn.value_and_grad(NET, PARAMS, x, y, method="forward", max_tangents=max_tangents)


def test_max_bytes_raised_above_the_default_is_obeyed(monkeypatch):
    from fnn import backprop

    needed = backprop.explicit_bytes(NET, X.shape[0], X.dtype)
    monkeypatch.setattr(backprop, "EXPLICIT_MAX_BYTES", needed // 2)  # the default refuses
    with pytest.raises(ValueError, match="over max_bytes="):
        _explicit(None)
    _explicit(needed)  # the caller's larger limit is the one that counts
    with pytest.raises(ValueError, match=r"method='explicit'.*Use method='reverse'"):
        _explicit(needed - 1)


def test_max_tangents_is_obeyed_and_one_example_counts_as_batch_one():
    P = fnn.summary(NET).num_params
    _forward(P * X.shape[0])
    with pytest.raises(ValueError, match=rf"P · B = {P} · 5.*over max_tangents={P * 5 - 1}"):
        _forward(P * X.shape[0] - 1)
    _forward(P, x=X[0], y=Y[0])  # one example (D,) is a batch of 1: P tangents suffice
    with pytest.raises(ValueError, match=rf"P · B = {P} · 1"):
        _forward(P - 1, x=X[0], y=Y[0])


def test_max_paths_is_obeyed():
    from fnn import graph

    g = graph.layered_graph(3, 2)  # 8 paths
    edges = {e: float(d) for e, d in graph.local_partials(g, graph.evaluate(g, 0.5)).items()}
    assert graph.sum_over_paths(g, edges, max_paths=graph.MAX_PATHS * 10).num_paths == 8
    with pytest.raises(ValueError, match="8 paths, over max_paths=7 paths.*forward_accumulation"):
        graph.sum_over_paths(g, edges, max_paths=7)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_a_limit_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=f"max_tangents must be a positive integer; got {bad}"):
        _forward(bad) if bad is not None else _checks.check_positive_int(bad, "max_tangents")


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (-1e-9, ValueError, r"atol must be a finite number ≥ 0; got -1e-09"),
        (float("inf"), ValueError, r"atol must be a finite number ≥ 0; got inf"),
        ("1e-6", TypeError, r"atol must be a real number; got '1e-6'"),
        (True, TypeError, r"atol must be a real number; got True"),
    ],
)
def test_a_checks_tolerances_are_finite_numbers_at_least_0(bad, error, match):
    _checks.check_tolerances(threshold=None, atol=0.0, resolution=0)  # None: the default
    with pytest.raises(error, match=match):
        _checks.check_tolerances(threshold=1e-3, atol=bad)


def test_check_limit_prints_sizes_in_their_unit_and_passes_at_the_limit():
    _checks.check_limit(10, 10, name="max_paths", what="w", instead="i", unit="paths")
    with pytest.raises(ValueError, match=r"w needs 3.0 MiB, over max_bytes=2.0 MiB\. i"):
        _checks.check_limit(3 * 2**20, 2 * 2**20, name="max_bytes", what="w", instead="i")


@pytest.mark.parametrize(
    "name, kind, hint",
    [("Relu", "activation", "relu"), ("TANH", "activation", "tanh"), ("mse", "loss", "l2")],
)
def test_unknown_name_hints_ignore_case_and_know_other_libraries_names(name, kind, hint):
    get = fnn.activations.get if kind == "activation" else fnn.losses.get
    with pytest.raises(ValueError, match=f"did you mean '{hint}'"):
        get(name)


def test_engines_check_nothing_the_explicit_engine_has_no_limit_of_its_own(monkeypatch):
    from fnn import backprop

    monkeypatch.setattr(backprop, "EXPLICIT_MAX_BYTES", 1)
    loss = fnn.losses.get("l2")
    value, _ = backprop.explicit(NET, PARAMS, X, Y, loss)  # the door checks, not the engine
    assert jnp.isfinite(value)
