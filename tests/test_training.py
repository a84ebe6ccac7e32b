"""Training with the hand-written gradients and optax (S21), and the two training scripts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fnn
from fnn import training

ROOT = Path(__file__).resolve().parents[1]
NET = fnn.MLP((2, 8, 1), ("tanh", "identity"))


@pytest.fixture(scope="module")
def problem():
    """A small regression problem, y = sin(2 x₁) x₂, float64."""
    x = jax.random.uniform(jax.random.key(1), (48, 2), minval=-1.0, maxval=1.0)
    y = jnp.sin(2 * x[:, :1]) * x[:, 1:]
    return fnn.init(jax.random.key(0), NET), x, y


def _full_loss(params, x, y):
    return float(jnp.mean(jnp.sum((fnn.apply(NET, params, x) - y) ** 2, axis=-1)))


ADAM = optax.adam(0.05)  # one object: fits with the same configuration share one compile


def _fit_adam(problem, method, seed=3):
    params, x, y = problem
    return training.fit(
        NET, params, x, y, ADAM, method=method, epochs=15, batch_size=8, key=jax.random.key(seed)
    )


@pytest.fixture(scope="module")
def reverse_run(problem):
    return _fit_adam(problem, "reverse")


@pytest.mark.parametrize("method", training.METHODS)
def test_fit_lowers_the_loss_for_every_method_deterministically_S21(problem, reverse_run, method):
    params, x, y = problem
    trained, history = _fit_adam(problem, method)
    assert history.loss.shape == (15 * 6,) and history.epoch_loss.shape == (15,)
    assert _full_loss(trained, x, y) < 0.2 * _full_loss(params, x, y)
    # Same seed, same result: bit for bit with the same method …
    again, history_again = _fit_adam(problem, method)
    chex.assert_trees_all_equal(again, trained)
    np.testing.assert_array_equal(history_again.loss, history.loss)
    # … and to rounding across methods: they compute the same gradient.
    chex.assert_trees_all_close(trained, reverse_run[0], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "optimizer",
    [optax.sgd(0.2), optax.sgd(0.1, momentum=0.9)],
    ids=["sgd", "momentum"],  # Adam: above
)
def test_fit_lowers_the_loss_for_every_optimizer_S21(problem, optimizer):
    params, x, y = problem
    trained, history = training.fit(
        NET, params, x, y, optimizer, epochs=15, batch_size=8, key=jax.random.key(4)
    )
    assert _full_loss(trained, x, y) < 0.5 * _full_loss(params, x, y)
    assert history.epoch_loss[-1] < history.epoch_loss[0]


def test_the_key_drives_the_shuffling_S21(problem, reverse_run):
    assert not np.allclose(_fit_adam(problem, "reverse", seed=4)[1].loss, reverse_run[1].loss)


def test_train_step_is_gradient_descent_with_the_hand_gradient_S21(problem):
    """θ ← θ − η ∇L, the gradient from fnn.value_and_grad; jit and no jit agree."""
    params, x, y = problem
    eta = 0.3
    optimizer = optax.sgd(eta)
    L, grads = fnn.value_and_grad(NET, params, x, y, loss="l2", method="reverse")
    expected = jax.tree.map(lambda p, g: p - eta * g, params, grads["params"])
    step = training.make_train_step(NET, optimizer)
    new, _, L_step = step(params, x, y, optimizer.init(params))
    chex.assert_trees_all_close(new, expected, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(L_step, L)
    new_eager, _, _ = training.train_step(NET, params, x, y, optimizer, optimizer.init(params))
    chex.assert_trees_all_close(new_eager, new, rtol=1e-12, atol=1e-14)


def test_full_batch_fit_is_one_train_step_per_epoch_S21(problem):
    params, x, y = problem
    optimizer = optax.sgd(0.3)
    trained, history = training.fit(
        NET, params, x, y, optimizer, epochs=1, batch_size=None, key=jax.random.key(0)
    )
    stepped, _, L = training.make_train_step(NET, optimizer)(params, x, y, optimizer.init(params))
    chex.assert_trees_all_close(trained, stepped, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history.loss, [L], rtol=1e-12)


def test_fit_on_labels_with_float32_parameters_S21():
    """A classifier: integer labels, softmax_cross_entropy on logits, float32 kept."""
    net = fnn.MLP((2, 8, 3), ("tanh", "identity"))
    centres = jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    labels = jnp.repeat(jnp.arange(3), 20)
    x = centres[labels] + 0.3 * jax.random.normal(jax.random.key(0), (60, 2))
    params = fnn.init(jax.random.key(1), net, dtype=jnp.float32)
    trained, history = training.fit(
        net,
        params,
        x,
        labels,
        optax.adam(0.05),
        loss="softmax_cross_entropy",
        epochs=20,
        batch_size=12,
        key=jax.random.key(2),
    )
    chex.assert_trees_all_equal_dtypes(trained, params)
    accuracy = jnp.mean(jnp.argmax(fnn.apply(net, trained, x.astype(jnp.float32)), -1) == labels)
    assert accuracy > 0.9
    assert history.epoch_loss[-1] < 0.5 * history.epoch_loss[0]


def _poison_at(step: int) -> optax.GradientTransformation:
    """An SGD whose update at ``step`` (0-based, counted over the whole run) is NaN."""

    def init(params):
        del params
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        del params
        bad = jnp.where(count == step, jnp.nan, 0.0)
        return jax.tree.map(lambda g: -0.01 * g + bad, grads), count + 1

    return optax.GradientTransformation(init, update)


def test_a_nonfinite_loss_names_epoch_and_step_S21(problem):
    params, x, y = problem  # 48 examples, batch 12: 4 steps per epoch
    # The update of run step 5 (epoch 2, step 2) is NaN, so the loss of the next step is.
    with pytest.raises(FloatingPointError, match=r"nan at epoch 2 of 3, step 3 of 4"):
        training.fit(
            NET, params, x, y, _poison_at(5), epochs=3, batch_size=12, key=jax.random.key(0)
        )


def test_a_diverging_learning_rate_is_stopped_S21(problem):
    params, x, y = problem
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    net = fnn.MLP((2, 8, 1), ("identity", "identity"))
    with pytest.raises(FloatingPointError, match=r"at epoch \d+ of 50, step \d+ of 1"):
        training.fit(
            net, params32, x, y, optax.sgd(100.0), epochs=50, batch_size=None, key=jax.random.key(0)
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": jnp.ones((48,))}, ValueError, r"x must be a batch of shape \(N, D\).*got \(48,\)"),
        ({"x": jnp.ones((48, 3))}, ValueError, r"D = 2; got \(48, 3\)"),
        ({"y": jnp.ones((47, 1))}, ValueError, r"y .* must have the output's shape \(48, 1\)"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer; got 0"),
        ({"batch_size": 8.0}, ValueError, r"batch_size must be a positive integer; got 8.0"),
        ({"batch_size": 49}, ValueError, r"batch_size must be at most .* N = 48; got 49"),
        ({"epochs": 0}, ValueError, r"epochs must be a positive integer; got 0"),
        ({"method": "sideways"}, ValueError, r"method must be one of .*'reverse'.*'sideways'"),
        ({"loss": "l3"}, ValueError, r"Unknown loss 'l3'"),
        ({"optimizer": "adam"}, TypeError, r"optimizer must be an optax.GradientTransformation"),
        ({"key": 0}, TypeError, r"key must be one PRNG key"),
        ({"net": "2-8-1"}, TypeError, r"net must be an fnn.MLP; got str"),
        ({"mesh": "data"}, ValueError, r"mesh must be a jax.sharding.Mesh"),
        (
            {"x": jnp.full((48, 2), jnp.nan)},
            ValueError,
            r"x must be finite; got nan at index \(0, 0\)",
        ),
        ({"loss": "softmax_cross_entropy"}, ValueError, r"integer labels of shape \(48,\)"),
        ({"max_norm": 0}, ValueError, r"max_norm must be a finite number > 0; got 0.0"),
        ({"max_norm": jnp.inf}, ValueError, r"max_norm must be a finite number > 0; got inf"),
        ({"max_norm": "1"}, TypeError, r"max_norm must be a real number; got '1'"),
        (
            {"max_norm": 1.0, "noise_multiplier": -1.0},
            ValueError,
            r"noise_multiplier must be a finite number > 0; got -1.0",
        ),
        (
            {"max_norm": 1.0, "noise_multiplier": 0.0},
            ValueError,
            r"noise_multiplier must be a finite number > 0; got 0.0",
        ),
        ({"noise_multiplier": 1.0}, ValueError, r"noise_multiplier = 1.0 needs max_norm"),
        (
            {"max_norm": 1.0, "method": "explicit"},
            ValueError,
            r"max_norm needs method='reverse' .*; got method='explicit'",
        ),
    ],
)
def test_fit_refuses_bad_input_before_tracing_S21(problem, kwargs, error, match):
    params, x, y = problem
    args = {
        "net": NET,
        "params": params,
        "x": x,
        "y": y,
        "optimizer": optax.sgd(0.1),
    }
    fit_kwargs = {"key": jax.random.key(0)}
    fit_kwargs.update({k: kwargs.pop(k) for k in list(kwargs) if k not in args})
    args.update(kwargs)
    with pytest.raises(error, match=match):
        training.fit(*args.values(), **fit_kwargs)


def test_float_labels_are_refused_S21():
    net = fnn.MLP((2, 3), ("identity",))
    params = fnn.init(jax.random.key(0), net)
    with pytest.raises(ValueError, match=r"must be integer (class )?labels; got .*float"):
        training.fit(
            net,
            params,
            jnp.ones((4, 2)),
            jnp.zeros(4),
            optax.sgd(0.1),
            loss="softmax_cross_entropy",
            key=jax.random.key(0),
        )


def test_the_step_refuses_bad_input_S21(problem):
    params, x, y = problem
    step = training.make_train_step(NET, optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"y .* must have the output's shape \(48, 1\)"):
        step(params, x, y[:, 0], optax.sgd(0.1).init(params))
    with pytest.raises(ValueError, match=r"params must hold 2 layers"):
        step(params[:1], x, y, optax.sgd(0.1).init(params))


def test_progress_bar_and_its_silence_S21(problem, capsys, monkeypatch):
    def fit(progress):
        return training.fit(
            NET, *problem, ADAM, epochs=15, batch_size=8, progress=progress, key=jax.random.key(3)
        )

    fit(False)
    assert capsys.readouterr().err == ""
    fit(True)
    assert "15/15" in capsys.readouterr().err  # tqdm's counter
    fit(None)  # 90 steps, not a terminal: silent
    assert capsys.readouterr().err == ""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed: train silently
    fit(True)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------
# The scripts, end to end (S10, S21).
# ---------------------------------------------------------------------------------------


def _run_script(name, out):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),  # this checkout's fnn
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bishop_fig5_3_script_S10(tmp_path):
    stdout = _run_script("bishop_fig5_3.py", tmp_path)
    assert (tmp_path / "bishop_fig5_3.png").stat().st_size > 0
    results = json.loads((tmp_path / "bishop_fig5_3.json").read_text())["functions"]
    assert list(results) == ["x²", "sin(x)", "|x|", "H(x)"]
    for name, r in results.items():
        assert name in stdout
        # Even 200 steps beat the best constant by far (the variance of y is ≥ 0.08 for all four).
        assert 0 <= r["mse"] < 0.04, (name, r["mse"])
        assert np.shape(r["params"][0]["W"]) == (3, 1)


@pytest.mark.slow
def test_train_classifier_script_S21(tmp_path):
    stdout = _run_script("train_classifier.py", tmp_path)
    assert (tmp_path / "optimizers.png").stat().st_size > 0
    results = json.loads((tmp_path / "optimizers.json").read_text())["optimizers"]
    assert list(results) == ["SGD", "momentum", "Adam"]
    for name, r in results.items():
        assert name in stdout
        assert len(r["epoch_loss"]) == 3 and r["epoch_loss"][-1] < r["epoch_loss"][0]
        assert r["test_accuracy"] > 0.85, (name, r["test_accuracy"])


# ---------------------------------------------------------------------------------------
# Checkpoints: a run killed mid-way and started again ends where an uninterrupted one does
# (S30).
# ---------------------------------------------------------------------------------------

RESUMABLE = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax
    import fnn
    from fnn import training

    # FNN_TEST_KILL="after:2": SIGKILL right after the 2nd checkpoint is in place;
    # "before:3": SIGKILL when the 3rd is written but not yet renamed over the 2nd.
    when, _, n = os.environ.get("FNN_TEST_KILL", "never:0").partition(":")
    writes, real_replace = [], os.replace
    def replace(src, dst):
        writes.append(dst)
        if when == "before" and len(writes) == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if when == "after" and len(writes) == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace

    checkpoint, out, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
    net, params, x, y = PROBLEM()
    params, history = training.fit(net, params, x, y, optax.adam(0.05),
                                   epochs=EPOCHS, batch_size=8, checkpoint=checkpoint,
                                   every=every, key=jax.random.key(5))
    print("checkpoints written:", len(writes))
    fnn.save(out, net, params)
    np.save(out + ".loss.npy", history.loss)
    """
)
EPOCHS = 6


def _resumable_problem():
    """Float64 parameters and data drawn by NumPy: the same in every process."""
    net = fnn.MLP((2, 8, 1), ("prelu", "identity"))
    rng = np.random.default_rng(7)
    params = [
        {k: rng.normal(0.0, 0.5, s) for k, s in layer.items()} for layer in net.layer_shapes()
    ]
    x = rng.uniform(-1.0, 1.0, (48, 2))
    return net, params, x, np.sin(2 * x[:, :1]) * x[:, 1:]


def _child_source():
    import inspect

    source = inspect.getsource(_resumable_problem).replace("_resumable_problem", "PROBLEM")
    return source + RESUMABLE.replace("EPOCHS", str(EPOCHS))


def _run_resumable(checkpoint, out, every, kill=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("FNN_TEST_KILL", None)
    if kill:
        env["FNN_TEST_KILL"] = kill
    return subprocess.run(
        [sys.executable, "-c", _child_source(), str(checkpoint), str(out), str(every)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def uninterrupted():
    net, params, x, y = _resumable_problem()
    return training.fit(
        net, params, x, y, optax.adam(0.05), epochs=EPOCHS, batch_size=8, key=jax.random.key(5)
    )


def _epoch_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(str(npz["__fnn__"]))["checkpoint"]["epoch"]


@pytest.mark.parametrize(
    ("every", "kill", "epoch_left"),
    [(1, "after:2", 2), (2, "before:2", 2)],
    ids=["killed-after-a-checkpoint", "killed-while-writing-one"],
)
def test_a_killed_run_resumes_bit_for_bit_S30(tmp_path, uninterrupted, every, kill, epoch_left):
    checkpoint, out = tmp_path / "run.ckpt", tmp_path / "final.npz"
    killed = _run_resumable(checkpoint, out, every, kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not out.exists()  # it really died mid-way
    assert _epoch_of(checkpoint) == epoch_left < EPOCHS
    temporary = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temporary) == (1 if kill.startswith("before") else 0)

    resumed = _run_resumable(checkpoint, out, every)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _epoch_of(checkpoint) == EPOCHS
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # cleaned up
    # It went on from the checkpoint, not from the start (which would end the same).
    assert f"checkpoints written: {(EPOCHS - epoch_left) // every}" in resumed.stdout
    _, params = fnn.load(out)
    chex.assert_trees_all_equal(params, uninterrupted[0])  # bit for bit
    np.testing.assert_array_equal(np.load(f"{out}.loss.npy"), uninterrupted[1].loss)


def test_a_longer_run_resumes_a_shorter_one_exactly_S30(tmp_path, uninterrupted, monkeypatch):
    net, params, x, y = _resumable_problem()
    checkpoint = tmp_path / "run.npz"

    def fit(epochs, optimizer=ADAM_05, **kwargs):
        kwargs = {"batch_size": 8, "checkpoint": checkpoint, **kwargs}
        return training.fit(
            net, params, x, y, optimizer, epochs=epochs, **kwargs, key=jax.random.key(5)
        )

    short, _ = fit(4, every=3)  # checkpoints after epochs 3 and 4 (the last)
    assert _epoch_of(checkpoint) == 4
    chex.assert_trees_all_equal(fnn.load(checkpoint), (net, short))
    epochs_run = []
    cached = training._cached_epoch_fn

    def counting(*config):
        run_epoch = cached(*config)
        return lambda *args: epochs_run.append(1) or run_epoch(*args)

    with monkeypatch.context() as patch:
        patch.setattr(training, "_cached_epoch_fn", counting)
        full, history = fit(EPOCHS, every=3)
    assert len(epochs_run) == EPOCHS - 4  # it went on from epoch 4
    chex.assert_trees_all_equal(full, uninterrupted[0])
    np.testing.assert_array_equal(history.loss, uninterrupted[1].loss)
    np.testing.assert_array_equal(history.epoch_loss, uninterrupted[1].epoch_loss)

    # Done already: the same call returns the checkpoint's result without training.
    def no_training(*config):
        return lambda *args: pytest.fail("fit trained although the checkpoint is complete")

    monkeypatch.setattr(training, "_cached_epoch_fn", no_training)
    again, history_again = fit(EPOCHS)
    chex.assert_trees_all_equal(again, full)
    np.testing.assert_array_equal(history_again.loss, history.loss)
    # What does not match the checkpoint is refused, naming the file and the difference.
    with pytest.raises(ValueError, match=rf"{checkpoint}: .* batch_size = 8; .* batch_size = 12"):
        fit(EPOCHS, batch_size=12)
    with pytest.raises(ValueError, match=rf"{checkpoint}: .* another key"):
        training.fit(
            net,
            params,
            x,
            y,
            ADAM_05,
            checkpoint=checkpoint,
            epochs=EPOCHS,
            batch_size=8,
            key=jax.random.key(6),
        )
    with pytest.raises(
        ValueError, match=r"holds 11 optimizer state arrays; this run's optimizer has [0-9]+\."
    ):
        fit(EPOCHS, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match=rf"{checkpoint}: the checkpoint is at epoch 6, past"):
        fit(3)
    with pytest.raises(ValueError, match=r"the checkpoint holds MLP\(sizes=\(2, 8, 1\)"):
        other = fnn.MLP((2, 8, 1), ("tanh", "identity"))
        training.fit(
            other,
            fnn.init(jax.random.key(0), other),
            x,
            y,
            ADAM_05,
            checkpoint=checkpoint,
            epochs=EPOCHS,
            batch_size=8,
            key=jax.random.key(5),
        )


ADAM_05 = optax.adam(0.05)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every": 0}, ValueError, r"every must be a positive integer; got 0"),
        ({"checkpoint": 3}, TypeError, r"checkpoint must be a file path or None; got int"),
    ],
)
def test_checkpoint_arguments_are_checked_S30(problem, kwargs, error, match):
    with pytest.raises(error, match=match):
        training.fit(NET, *problem, optax.sgd(0.1), **kwargs, key=jax.random.key(0))


def test_a_saved_network_is_not_a_checkpoint_S30(tmp_path, problem):
    path = tmp_path / "net.npz"
    fnn.save(path, NET, problem[0])
    with pytest.raises(ValueError, match=rf"{path}: an fnn network file, but not a training"):
        training.fit(NET, *problem, optax.sgd(0.1), checkpoint=path, key=jax.random.key(0))


# ---------------------------------------------------------------------------------------
# DP-SGD's clipping and noise in training (S24).
# ---------------------------------------------------------------------------------------

SGD = optax.sgd(0.2)  # one object: the clipped fits below share their compiled epochs
CLIP = 1.0  # the problem's per-example gradient norms at init run from 0.14 to 7.9


@pytest.mark.parametrize("noise_multiplier", [None, 0.5])
def test_clipped_fit_is_sgd_on_clipped_grad_S24(problem, noise_multiplier):
    """θ ← θ − η g̃ with g̃ = clipped_grad(θ; batch), the batches and the noise keys drawn from
    fit's key as its docstring says: fold_in(key, epoch) shuffles, split(fold_in(·, 1))."""
    params, x, y = problem
    norms = fnn.extensions.per_example_grad_norms(NET, params, x, y)
    assert jnp.any(norms > CLIP) and jnp.any(norms < CLIP)  # clipping matters, not everywhere
    key, epochs, B = jax.random.key(3), 3, 8
    trained, history = training.fit(
        NET,
        params,
        x,
        y,
        SGD,
        epochs=epochs,
        batch_size=B,
        max_norm=CLIP,
        noise_multiplier=noise_multiplier,
        key=key,
    )
    clipped_grad = jax.jit(
        fnn.extensions.clipped_grad, static_argnums=0, static_argnames=("loss", "noise_multiplier")
    )  # 18 steps: compile once
    hand, losses_ = params, []
    for epoch in range(epochs):
        epoch_key = jax.random.fold_in(key, epoch)
        order = jax.random.permutation(epoch_key, 48).reshape(48 // B, B)
        noise_keys = jax.random.split(jax.random.fold_in(epoch_key, 1), 48 // B)
        for idx, noise_key in zip(order, noise_keys):
            noise = {} if noise_multiplier is None else {"key": noise_key}
            L, g = clipped_grad(
                NET,
                hand,
                x[idx],
                y[idx],
                loss="l2",
                max_norm=CLIP,
                noise_multiplier=noise_multiplier,
                **noise,
            )
            hand = jax.tree.map(lambda p, g: p - 0.2 * g, hand, g)
            losses_.append(L)
    chex.assert_trees_all_close(trained, hand, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history.loss, losses_, rtol=1e-12)


def test_a_max_norm_above_every_gradient_is_plain_fit_S24(problem):
    params, x, y = problem
    kwargs = {"epochs": 3, "batch_size": 8}
    plain, plain_history = training.fit(NET, params, x, y, SGD, **kwargs, key=jax.random.key(3))
    clipped, history = training.fit(
        NET, params, x, y, SGD, max_norm=1e6, **kwargs, key=jax.random.key(3)
    )
    chex.assert_trees_all_close(clipped, plain, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history.loss, plain_history.loss, rtol=1e-12)


def test_the_key_drives_the_noise_S24(problem):
    params, x, y = problem

    def fit(seed, noise_multiplier=1.0):
        kwargs = {"max_norm": CLIP, "noise_multiplier": noise_multiplier}
        return training.fit(
            NET, params, x, y, SGD, epochs=2, batch_size=8, **kwargs, key=jax.random.key(seed)
        )

    trained, history = fit(3)
    again, history_again = fit(3)
    chex.assert_trees_all_equal(again, trained)  # same key: bit for bit
    np.testing.assert_array_equal(history_again.loss, history.loss)
    assert not np.allclose(fit(4)[1].loss, history.loss)  # another key, another run
    # The noise moved the parameters: the same key without it ends elsewhere (and the first
    # step's loss, taken before any update, is the same).
    quiet, quiet_history = fit(3, noise_multiplier=None)
    assert quiet_history.loss[0] == history.loss[0]
    assert not np.allclose(quiet[0]["W"], trained[0]["W"], rtol=1e-3)


def test_the_clipped_step_S24(problem):
    params, x, y = problem
    step = training.make_train_step(NET, SGD, max_norm=CLIP)
    new, _, L = step(params, x, y, SGD.init(params))
    L_hand, g = fnn.extensions.clipped_grad(NET, params, x, y, loss="l2", max_norm=CLIP)
    chex.assert_trees_all_close(
        new, jax.tree.map(lambda p, g: p - 0.2 * g, params, g), rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(L, L_hand, rtol=1e-12)
    with pytest.raises(ValueError, match=r"max_norm must be a finite number > 0; got -1.0"):
        training.make_train_step(NET, SGD, max_norm=-1.0)
    with pytest.raises(ValueError, match=r"max_norm needs method='reverse'.*'forward'"):
        training.make_train_step(NET, SGD, max_norm=CLIP, method="forward")
    state = SGD.init(params)
    with pytest.raises(ValueError, match=r"key is for the noise"):
        training.train_step(NET, params, x, y, SGD, state, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"noise_multiplier = 1.0 needs max_norm"):
        training.train_step(NET, params, x, y, SGD, state, noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"noise_multiplier needs key="):
        training.train_step(NET, params, x, y, SGD, state, max_norm=CLIP, noise_multiplier=1.0)


def test_a_noisy_run_resumes_exactly_and_its_checkpoint_knows_the_noise_S24(tmp_path, problem):
    params, x, y = problem
    checkpoint = tmp_path / "dp.npz"

    def fit(epochs, max_norm=CLIP, noise_multiplier=1.0, **kwargs):
        return training.fit(
            NET,
            params,
            x,
            y,
            SGD,
            epochs=epochs,
            batch_size=8,
            max_norm=max_norm,
            noise_multiplier=noise_multiplier,
            **kwargs,
            key=jax.random.key(3),
        )

    uninterrupted, history = fit(4)
    fit(2, checkpoint=checkpoint)
    resumed, resumed_history = fit(4, checkpoint=checkpoint)
    chex.assert_trees_all_equal(resumed, uninterrupted)
    np.testing.assert_array_equal(resumed_history.loss, history.loss)
    with pytest.raises(ValueError, match=rf"{checkpoint}: .* noise_multiplier = 1.0; .* = 2.0"):
        fit(4, noise_multiplier=2.0, checkpoint=checkpoint)
    with pytest.raises(ValueError, match=rf"{checkpoint}: .* max_norm = 1.0; .* = None"):
        fit(4, max_norm=None, noise_multiplier=None, checkpoint=checkpoint)


# ---------------------------------------------------------------------------------------
# The edges of fit's inputs and checkpoints (S21, S30).
# ---------------------------------------------------------------------------------------


def test_fit_casts_integer_features_to_the_parameters_dtype_S21():
    net = fnn.MLP((4, 6, 3), ("tanh", "identity"))
    params = fnn.init(jax.random.key(0), net, dtype=jnp.float32)
    pixels = jax.random.randint(jax.random.key(1), (24, 4), 0, 17)  # like the bundled digits
    labels = jnp.arange(24) % 3
    kwargs = {"loss": "softmax_cross_entropy", "epochs": 2, "batch_size": 8}
    ints, h_ints = training.fit(net, params, pixels, labels, SGD, key=jax.random.key(2), **kwargs)
    floats, h_floats = training.fit(
        net, params, pixels.astype(jnp.float32), labels, SGD, key=jax.random.key(2), **kwargs
    )
    chex.assert_trees_all_equal(ints, floats)
    chex.assert_trees_all_equal_dtypes(ints, params)
    np.testing.assert_array_equal(h_ints.loss, h_floats.loss)


def test_fit_takes_a_loss_record_and_key_is_keyword_only_S21(problem):
    params, x, y = problem
    kwargs = {"epochs": 2, "batch_size": 8, "key": jax.random.key(3)}
    by_name = training.fit(NET, params, x, y, SGD, loss="l2", **kwargs)
    by_record = training.fit(NET, params, x, y, SGD, loss=fnn.losses.get("l2"), **kwargs)
    chex.assert_trees_all_equal(by_record, by_name)
    with pytest.raises(TypeError):
        training.fit(jax.random.key(0), NET, params, x, y, SGD)  # the old order
    with pytest.raises(TypeError, match="key"):
        training.fit(NET, params, x, y, SGD)  # key is required


def _no_training(monkeypatch):
    def refuse(*config):
        pytest.fail("fit trained before refusing its checkpoint path")

    monkeypatch.setattr(training, "_cached_epoch_fn", refuse)


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("missing/run.npz", r"checkpoint = '.*missing/run.npz': the directory .* does not exist"),
        (".", r"checkpoint must be a file path; '.*' is a directory"),
    ],
)
def test_a_bad_checkpoint_path_is_refused_before_the_first_epoch_S30(
    tmp_path, problem, monkeypatch, where, match
):
    _no_training(monkeypatch)
    with pytest.raises(ValueError, match=match):
        training.fit(NET, *problem, SGD, key=jax.random.key(0), checkpoint=str(tmp_path / where))


def test_numpy_numbers_and_loss_records_go_into_a_checkpoint_S30(tmp_path, problem):
    path = tmp_path / "run.npz"

    def fit(epochs, batch_size, loss):
        return training.fit(
            NET, *problem, SGD, key=jax.random.key(3), epochs=epochs, batch_size=batch_size,
            loss=loss, checkpoint=path, max_norm=np.float32(1.0),
        )  # fmt: skip

    fit(np.int64(1), np.int64(16), fnn.losses.get("l2"))
    with np.load(path, allow_pickle=False) as npz:
        run = json.loads(str(npz["__fnn__"]))["checkpoint"]["run"]
    assert run["batch_size"] == 16 and run["loss"] == "l2" and run["max_norm"] == 1.0
    resumed, history = fit(2, 16, "l2")  # the record is stored by its name: the same run
    uninterrupted, full = training.fit(
        NET, *problem, SGD, key=jax.random.key(3), epochs=2, batch_size=16, max_norm=1.0
    )
    chex.assert_trees_all_equal(resumed, uninterrupted)
    np.testing.assert_array_equal(history.loss, full.loss)


@pytest.fixture
def written(tmp_path, problem):
    """A checkpoint of one epoch of plain SGD on ``problem``, and a function to resume it."""
    path = tmp_path / "run.npz"

    def fit(params=None, x=None, y=None, **kwargs):
        p, x0, y0 = problem
        kwargs = {"epochs": 2, "batch_size": 8, "checkpoint": path, **kwargs}
        p, x, y = p if params is None else params, x0 if x is None else x, y0 if y is None else y
        return training.fit(NET, p, x, y, SGD, key=jax.random.key(3), **kwargs)

    fit(epochs=1)
    return path, fit


def test_other_data_at_resume_is_noticed_S30(written, problem):
    path, fit = written
    _, x, y = problem
    with pytest.raises(ValueError, match=rf"{path}: the checkpoint was trained on other data x, y"):
        fit(x=x[::-1], y=y[::-1])  # the same size, another order
    with pytest.raises(ValueError, match=r"trained on other data"):
        fit(y=y + 1.0)


def test_a_setting_only_one_side_has_is_a_difference_S30(written):
    path, fit = written
    with pytest.raises(
        ValueError, match=rf"{path}: .* max_norm = None; this run has max_norm = 1.0"
    ):
        fit(max_norm=1.0)

    def drop_setting(header):
        del header["checkpoint"]["run"]["method"]

    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(str(arrays["__fnn__"]))
    drop_setting(header)
    arrays["__fnn__"] = np.asarray(json.dumps(header))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"method = '<not set>'; this run has method = 'reverse'"):
        fit()


def test_a_restored_state_of_another_dtype_is_refused_S30(written, problem):
    path, fit = written
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), problem[0])
    match = r"params\[0\]\['W'\] is stored with shape \(8, 2\) and dtype float64; this run has"
    with pytest.raises(ValueError, match=rf"{path}: {match} \(8, 2\) and float32"):
        fit(params=params32)


def test_the_compiled_step_casts_integer_features_and_takes_a_loss_record_S21():
    net = fnn.MLP((4, 6, 3), ("tanh", "identity"))
    params = fnn.init(jax.random.key(0), net, dtype=jnp.float32)
    pixels = jax.random.randint(jax.random.key(1), (8, 4), 0, 17)
    labels = jnp.arange(8) % 3
    record = fnn.losses.get("softmax_cross_entropy")
    step = training.make_train_step(net, SGD, loss=record)
    new, _, L = step(params, pixels, labels, SGD.init(params))
    same, _, L_float = step(params, pixels.astype(jnp.float32), labels, SGD.init(params))
    chex.assert_trees_all_equal((new, L), (same, L_float))
    chex.assert_trees_all_equal_dtypes(new, params)
