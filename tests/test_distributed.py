"""Training over several JAX processes equals training in one (S30).

Two processes on 127.0.0.1, each with 2 simulated CPU devices (4 in all), joined by
``jax.distributed`` (gloo collectives), started and always stopped by the launcher of
``scripts/train_distributed.py``. Each process passes its own half of the data; a third,
plain process trains on all of it, on one device. Float32.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import fnn
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SRC = {"PYTHONPATH": str(ROOT / "src")}  # the children import this checkout's fnn
LAUNCHER = load_script(ROOT / "scripts" / "train_distributed.py")

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    out, reference = Path(sys.argv[1]), sys.argv[2] == "reference"
    from fnn import training
    if not reference:
        training.initialize_distributed(timeout=30)
    import jax, numpy as np, optax
    import fnn

    me, P = jax.process_index(), jax.process_count()
    net = fnn.MLP((5, 16, 3), ("tanh", "identity"))
    rng = np.random.default_rng(1)  # NumPy draws: no XLA compiles for them
    params = [{k: rng.normal(0.0, 0.5, s).astype(np.float32) for k, s in layer.items()}
              for layer in net.layer_shapes()]
    X = rng.normal(size=(64, 5)).astype(np.float32)
    Y = rng.integers(0, 3, 64)
    n = 64 // P
    x, y = X[me * n:(me + 1) * n], Y[me * n:(me + 1) * n]  # this process's examples
    optimizer = optax.adam(1e-2)
    tag = sys.argv[2]

    def fit(epochs, x=x, y=y, batch_size=16, **kwargs):
        return training.fit(net, params, x, y, optimizer, key=jax.random.key(3), epochs=epochs,
                            loss="softmax_cross_entropy", batch_size=batch_size, **kwargs)

    def save(name, p):
        if me == 0:
            fnn.save(out / f"{tag}_{name}.npz", net, jax.tree.map(np.asarray, p))

    result = {"process": me, "processes": P, "devices": jax.device_count(),
              "local_devices": jax.local_device_count()}
    # A checkpoint path of its own in every process: only process 0's may appear.
    checkpoint = None if reference else out / f"checkpoint_{me}.npz"
    p3, h3 = fit(3, checkpoint=checkpoint)
    save("fit3", p3)
    p5, h5 = fit(5, checkpoint=checkpoint)  # several processes: resumes at epoch 3
    save("fit5", p5)
    result["loss3"], result["loss5"] = h3.loss.tolist(), h5.loss.tolist()
    result["replicated"] = all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(p5))

    step = training.make_train_step(net, optimizer, loss="softmax_cross_entropy")
    b = 16 // P  # each process passes its rows of the global batch X[:16]
    p1, _, L = step(params, X[me * b:(me + 1) * b], Y[me * b:(me + 1) * b], optimizer.init(params))
    save("step", p1)
    result["step_loss"] = float(L)

    if not reference:
        errors = {}
        def refusal(name, call):
            try:
                call()
            except (OSError, ValueError) as err:
                errors[name] = f"{type(err).__name__}: {err}"
        refusal("fit_batch", lambda: fit(1, batch_size=6))
        refusal("step_batch", lambda: step(params, x[:3], y[:3], optimizer.init(params)))
        refusal("unequal", lambda: fit(1, x=x[: n - 2 * me], y=y[: n - 2 * me]))
        x_bad = x.copy()
        x_bad[0, 0] = np.nan if me == 1 else 0.0
        refusal("nan", lambda: fit(1, x=x_bad))
        refusal("write", lambda: fit(1, checkpoint=out / "missing" / f"run_{me}.npz"))
        # Settings that differ between the processes: refused in both, before training …
        def fit_with(epochs=1, key=3, params=params, optimizer=optimizer, batch_size=16, **kw):
            return training.fit(net, params, x, y, optimizer, key=jax.random.key(key),
                                epochs=epochs, loss="softmax_cross_entropy",
                                batch_size=batch_size, **kw)
        refusal("agree_key", lambda: fit_with(key=3 + me))
        refusal("agree_epochs", lambda: fit_with(epochs=1 + me))
        refusal("agree_batch", lambda: fit_with(batch_size=16 if me == 0 else 8))
        refusal("agree_clip", lambda: fit_with(max_norm=None if me == 0 else 1.0))
        refusal("agree_checkpoint", lambda: fit_with(checkpoint=None if me else out / "a.npz"))
        refusal("agree_params", lambda: fit_with(params=jax.tree.map(lambda p: p + me, params)))
        refusal("agree_optimizer", lambda: fit_with(optimizer=optax.sgd(0.1) if me else optimizer))
        # … and what cannot be compared before, after the first epoch.
        refusal("agree_lr", lambda: fit_with(optimizer=optax.adam(1e-2 if me == 0 else 1e-1)))
        result["errors"] = errors
    print(json.dumps(result), flush=True)
    """
)


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    start = time.monotonic()
    reference = subprocess.Popen(  # one plain process on one device, meanwhile
        [sys.executable, "-c", CHILD, str(out), "reference"],
        env={k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
        | SRC
        | {"JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        results = LAUNCHER.launch_local(
            [sys.executable, "-c", CHILD, str(out), "distributed"],
            2,
            devices_per_process=2,
            timeout=240,
            env=SRC,
        )
        ref_out, ref_err = reference.communicate(timeout=240)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    seconds = time.monotonic() - start
    for code, stdout, stderr in results:
        assert code == 0, stdout[-2000:] + stderr[-3000:]
    assert reference.returncode == 0, ref_err[-3000:]
    return {
        "out": out,
        "processes": [_last_json(stdout) for _, stdout, _ in results],
        "reference": _last_json(ref_out),
        "seconds": seconds,
    }


def _max_rel_diff(out, name):
    _, a = fnn.load(out / f"distributed_{name}.npz")
    _, b = fnn.load(out / f"reference_{name}.npz")
    return max(
        float(np.max(np.abs(u - v)) / np.max(np.abs(v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_two_processes_with_two_devices_each_S30(runs):
    for i, r in enumerate(runs["processes"]):
        assert (r["process"], r["processes"], r["devices"], r["local_devices"]) == (i, 2, 4, 2)
        assert r["replicated"]
    assert runs["reference"]["devices"] == 1
    assert runs["seconds"] < 240  # bounded, on a busy machine


@pytest.mark.parametrize("name", ["fit3", "fit5", "step"])
def test_several_processes_train_like_one_S30(runs, name):
    # Float32: the gradient's mean is summed in another order (4 partial sums, all-reduced);
    # measured 9e-8 (fit3), 1.0e-7 (fit5, resumed) and 2e-8 (step) relative. The bound is
    # test_sharding's for one process with 8 devices.
    assert _max_rel_diff(runs["out"], name) < 1e-6


def test_every_process_sees_the_global_losses_S30(runs):
    ref = runs["reference"]
    for r in runs["processes"]:
        assert len(r["loss3"]) == 3 * 4 and len(r["loss5"]) == 5 * 4
        np.testing.assert_allclose(r["loss3"], ref["loss3"], rtol=1e-6)
        np.testing.assert_allclose(r["loss5"], ref["loss5"], rtol=1e-6)  # the resumed run
        np.testing.assert_allclose(r["step_loss"], ref["step_loss"], rtol=1e-6)


def test_only_process_0_writes_the_checkpoint_S30(runs):
    out = runs["out"]
    assert (out / "checkpoint_0.npz").exists()
    assert not (out / "checkpoint_1.npz").exists()
    _, params = fnn.load(out / "checkpoint_0.npz")
    _, final = fnn.load(out / "distributed_fit5.npz")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(final)):
        np.testing.assert_array_equal(a, b)


def test_bad_batches_and_data_are_refused_in_every_process_S30(runs):
    first, second = (r["errors"] for r in runs["processes"])
    for errors in (first, second):
        assert (
            "batch_size = 6 must be divisible by the 4 devices of the mesh of all 2"
            in (errors["fit_batch"])
        )
        assert (
            "global batch x.shape[0] × processes = 6 must be divisible by the 4 devices"
            in (errors["step_batch"])
        )
        assert "same number of examples" in errors["unequal"] and "[32, 30]" in errors["unequal"]
    assert "x must be finite; got nan at index" in second["nan"]
    assert "process(es) [1] refused their data" in first["nan"]


@pytest.mark.parametrize(
    ("case", "setting"),
    [
        ("agree_key", "key"),
        ("agree_epochs", "epochs"),
        ("agree_batch", "batch_size"),
        ("agree_clip", "max_norm"),
        ("agree_checkpoint", "checkpoint (given or not)"),
        ("agree_params", "params"),
        ("agree_optimizer", "optimizer state (structure)"),
    ],
)
def test_settings_that_differ_between_processes_are_refused_in_every_process_S30(
    runs, case, setting
):
    for r in runs["processes"]:
        message = r["errors"][case]
        assert message.startswith("ValueError: fit: the processes disagree on ")
        assert f"{setting} (process(es) [1] differ from process 0)" in message
        assert message.count("differ from process 0") == 1  # only that setting


def test_optimizers_that_differ_are_caught_after_the_first_epoch_S30(runs):
    for r in runs["processes"]:
        message = r["errors"]["agree_lr"]
        assert "the parameters after the first epoch (process(es) [1] differ" in message
        assert "pass the same optimizer in every process" in message


def test_a_checkpoint_that_cannot_be_written_stops_every_process_before_training_S30(runs):
    first, second = (r["errors"] for r in runs["processes"])
    assert first["write"].startswith("ValueError: checkpoint = ")  # process 0's own error
    assert "missing/run_0.npz': the directory" in first["write"]
    assert "does not exist" in first["write"]
    assert "process 0 refused it; see its message" in second["write"]


# ---------------------------------------------------------------------------------------
# Failures end, in bounded time, with a message.
# ---------------------------------------------------------------------------------------


def _initialize(process_id, port, timeout=2):
    code = (
        "from fnn import training; "
        f"training.initialize_distributed('127.0.0.1:{port}', 2, {process_id}, timeout={timeout})"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=dict(os.environ, **SRC),
    )
    return proc, time.monotonic() - start


def test_no_coordinator_is_a_clear_error_within_the_timeout_S30():
    port = LAUNCHER.free_port()  # nobody listens there
    proc, seconds = _initialize(1, port)
    assert proc.returncode == 1
    assert (
        f"TimeoutError: process 1 of 2 could not reach the coordinator at 127.0.0.1:{port} "
        "within timeout = 2 s" in proc.stderr
    )
    assert seconds < 30  # 2 s of waiting, plus starting Python and JAX on a busy machine


def test_a_coordinator_alone_stops_after_the_timeout_with_a_message_S30():
    port = LAUNCHER.free_port()
    proc, seconds = _initialize(0, port)  # process 1 never comes
    assert proc.returncode != 0  # JAX aborts the process at its deadline
    assert (
        "process 0 of 2 is still waiting for all processes (2) to register at 127.0.0.1"
        in proc.stderr
    )
    assert "DEADLINE_EXCEEDED" in proc.stderr
    assert seconds < 30


def test_a_port_in_use_is_an_error_on_process_0_that_process_1_hears_of_S30():
    import socket

    with socket.socket() as squatter:  # another program holds the port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(8)
        port = squatter.getsockname()[1]
        first, _ = _initialize(0, port, timeout=20)
        second, seconds = _initialize(1, port, timeout=20)
    assert first.returncode == 1
    assert (
        f"OSError: [Errno 98] process 0 of 2 cannot start the coordinator: port {port} on "
        "127.0.0.1 is in use by another program" in first.stderr
    )
    assert second.returncode == 1
    assert f"a program at 127.0.0.1:{port} accepts connections but is not JAX's" in second.stderr
    assert seconds < 19  # within seconds, not at its timeout of 20 s


def test_the_launcher_stops_every_process_when_one_fails_S30():
    code = (
        "import os, sys, time; os.environ['JAX_PROCESS_ID'] == '1' and sys.exit(3); time.sleep(60)"
    )
    start = time.monotonic()
    results = LAUNCHER.launch_local([sys.executable, "-c", code], 2, timeout=50)
    assert time.monotonic() - start < 20  # not the 60 s of process 0's sleep
    assert [r[0] for r in results] == [-15, 3]  # process 0 terminated (SIGTERM), 1 failed
    results = LAUNCHER.launch_local(
        [sys.executable, "-c", "import time; time.sleep(60)"], 2, timeout=1
    )
    assert [r[0] for r in results] == [-15, -15]  # both stopped at the timeout


@pytest.mark.slow
def test_train_distributed_script_S30(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_distributed.py"), "--quick",
         "--num-processes", "2", "--devices-per-process", "2", "--timeout", "200",
         "--out", str(tmp_path), "--checkpoint", str(tmp_path / "run.npz")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ, **SRC),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes, 4 devices (cpu)" in proc.stdout
    assert "process 1: 2 devices" in proc.stdout
    result = json.loads((tmp_path / "distributed.json").read_text())
    assert result["processes"] == 2 and result["devices"] == 4
    assert len(result["epoch_loss"]) == 3 and result["epoch_loss"][-1] < result["epoch_loss"][0]
    assert result["test_accuracy"] > 0.85
    assert f"test accuracy {result['test_accuracy']:.2%}" in proc.stdout
    assert (tmp_path / "distributed.png").stat().st_size > 0
    assert fnn.load(tmp_path / "run.npz")[0].sizes == (64, 64, 10)


@pytest.mark.parametrize(
    ("kwargs", "env", "match"),
    [
        ({"coordinator_address": "localhost"}, {}, r"must be 'host:port'.*got 'localhost'"),
        ({"num_processes": 2, "process_id": 2}, {}, r"process_id must be in 0 … 1 .* got 2"),
        ({"process_id": -1}, {}, r"process_id must be a non-negative integer; got -1"),
        ({"num_processes": 0}, {}, r"num_processes must be a positive integer; got 0"),
        ({"timeout": 0}, {}, r"timeout must be a positive integer; got 0"),
        ({}, {"JAX_NUM_PROCESSES": "two"}, r"JAX_NUM_PROCESSES must be a non-negative integer"),
    ],
)
def test_initialize_distributed_checks_its_arguments_first_S30(monkeypatch, kwargs, env, match):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from fnn import training

    with pytest.raises(ValueError, match=match):  # before any call into jax.distributed
        training.initialize_distributed(**kwargs)


def test_no_cluster_and_no_coordinator_is_a_clear_error_S30():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_COORD", "JAX_NUM", "JAX_PROC"))
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from fnn import training; training.initialize_distributed()"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env | SRC,
    )
    assert proc.returncode == 1
    assert "No cluster was detected: pass coordinator_address, num_processes" in proc.stderr


def _fnn_imports(module: str) -> set[str]:
    import ast

    tree = ast.parse((ROOT / "src" / "fnn" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fnn"):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("fnn")}
    return imported


def test_distributed_stands_below_training_S30():
    """The import map is a one-way stack: fnn.distributed imports no other fnn module but
    the private checks and its hand-shake with the coordinator (which imports none), so
    training (and io) may build on it without a cycle."""
    assert _fnn_imports("distributed") == {
        "fnn._checks.check_positive_int",
        "fnn._coordinator.check_port_free",
        "fnn._coordinator.wait_for_coordinator",
        "fnn._coordinator.watchdog",
    }
    assert _fnn_imports("_coordinator") == set()
