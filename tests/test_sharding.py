"""Data-parallel training on 8 (simulated) devices equals training on one (S22).

JAX fixes its device count when it starts, so the check runs in a fresh Python process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX is imported: the CPU
then shows up as 8 devices, enough to prove that sharding the batch along a ``("data",)``
mesh axis changes nothing but where the work happens. Float32, as on an accelerator.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

CHECK = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import fnn
    from fnn import training
    from jax.sharding import NamedSharding, PartitionSpec as P

    out = {"devices": len(jax.devices())}
    mesh = training.data_mesh()
    net = fnn.MLP((5, 16, 16, 3), ("tanh", "sigmoid", "identity"))
    params = fnn.init(jax.random.key(0), net, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (64, 5), jnp.float32)
    labels = jax.random.randint(jax.random.key(2), (64,), 0, 3)

    def max_rel(a, b):
        return max(float(jnp.max(jnp.abs(u - v)) / (jnp.max(jnp.abs(v)) + 1e-30))
                   for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    # 1. The hand gradient under jit, batch sharded over 8 devices vs on one device.
    grad = jax.jit(lambda p, x, y: fnn.value_and_grad(net, p, x, y, loss="softmax_cross_entropy"))
    batch = NamedSharding(mesh, P("data"))
    x8, y8 = jax.device_put((x, labels), batch)
    out["x_shards"] = len(x8.addressable_shards)
    L1, g1 = grad(params, x, labels)
    grad8 = grad.lower(params, x8, y8).compile()  # compiled once: run it and read its HLO
    L8, g8 = grad8(params, x8, y8)
    out["grad_rel_diff"] = max_rel((L8, g8["params"]), (L1, g1["params"]))
    # The partitioned program sums the per-device partial gradients: an all-reduce.
    out["grad_all_reduce"] = "all-reduce" in grad8.as_text()

    # 2. One compiled training step.
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)
    step1 = training.make_train_step(net, optimizer, loss="softmax_cross_entropy")
    step8 = training.make_train_step(net, optimizer, loss="softmax_cross_entropy", mesh=mesh)
    p1, _, l1 = step1(params, x, labels, state)
    p8, _, l8 = step8(params, x, labels, state)
    out["step_rel_diff"] = max_rel((l8, p8), (l1, p1))
    out["step_params_replicated"] = all(
        leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
        for leaf in jax.tree.leaves(p8))

    # 3. A few epochs of fit.
    fit = lambda mesh: training.fit(net, params, x, labels, optimizer,
                                    loss="softmax_cross_entropy", epochs=3, batch_size=16,
                                    mesh=mesh, key=jax.random.key(3))
    (f1, h1), (f8, h8) = fit(None), fit(mesh)
    out["fit_rel_diff"] = max_rel((h8.loss, f8), (h1.loss, f1))
    out["fit_params_devices"] = len(jax.tree.leaves(f8)[0].sharding.device_set)

    # 4. A batch size that 8 devices cannot share equally.
    def refusal(call):
        try:
            call()
        except ValueError as err:
            return str(err)
        return None

    errors = [
        refusal(lambda: training.fit(net, params, x, labels, optimizer,
                                     loss="softmax_cross_entropy", batch_size=12, mesh=mesh,
                                     key=jax.random.key(3))),
        refusal(lambda: step8(params, x[:12], labels[:12], state)),
    ]
    out["errors"] = errors
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=SRC,  # this checkout's fnn, also in a git worktree
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_simulated_devices_S22(eight_devices):
    assert eight_devices["devices"] == 8
    assert eight_devices["x_shards"] == 8


def test_sharded_gradient_equals_single_device_S22(eight_devices):
    # float32: only the order of the partial sums of the mean differs.
    assert eight_devices["grad_rel_diff"] < 1e-6
    assert eight_devices["grad_all_reduce"]


def test_sharded_train_step_equals_single_device_S22(eight_devices):
    assert eight_devices["step_rel_diff"] < 1e-6
    assert eight_devices["step_params_replicated"]


def test_sharded_fit_equals_single_device_S22(eight_devices):
    # 12 Adam steps in float32: the same bound as one step (measured ≈ 2e-7).
    assert eight_devices["fit_rel_diff"] < 1e-6
    assert eight_devices["fit_params_devices"] == 8


def test_indivisible_batch_is_refused_S22(eight_devices):
    fit_error, step_error = eight_devices["errors"]
    assert "batch_size = 12 must be divisible by the 8 devices" in fit_error
    assert "x.shape[0] = 12 must be divisible by the 8 devices" in step_error


def test_device_check_script_runs_on_cpu_S22(tmp_path):
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "scripts" / "device_check.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=SRC),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert result["backend"] == "cpu" and "backend: cpu" in proc.stdout
    checks = {(r["check"], r["dtype"]) for r in result["proofs"]}
    assert len(checks) == 2 * 5 and all(r["passed"] for r in result["proofs"])
    assert {t["dtype"] for t in result["timings"]} == {"float32", "bfloat16"}
    for t in result["timings"]:
        assert t["flop_per_step"] == 6 * 128 * 3 * 256 * 256
        assert t["seconds_fnn"] > 0 and t["tflops_fnn"] > 0


def test_training_re_exports_the_mesh_and_initialize_distributed_S22():
    import fnn
    from fnn import distributed, training

    assert training.data_mesh is distributed.data_mesh
    assert training.initialize_distributed is distributed.initialize_distributed
    assert fnn.distributed is distributed
