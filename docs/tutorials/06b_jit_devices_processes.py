# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6b. One program, many devices: jit, meshes and several processes
#
# Every derivative in fnn is a pure function of arrays (S22). That is what lets
# `jax.jit` compile it once for whatever device is there — CPU, GPU or TPU — and what lets
# the same gradient be computed with the batch split over several devices, or over several
# processes on several machines (S30), without a line of the derivative changing. This page
# runs everything on the CPU: four *simulated* CPU devices stand in for four accelerators,
# and two local processes for two machines.

# %%
import os

# Four CPU devices in this process: set before JAX starts (a GPU or TPU needs nothing).
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import fnn
from fnn import distributed

print(jax.devices())

# %% [markdown]
# ## jax.jit: compile once, run many times
#
# A network and a batch; the gradient of the L2 loss by fnn's hand-written reverse mode.
# The network `net` is static configuration (a hashable, frozen dataclass), so it can be
# closed over; only arrays are traced.

# %%
net = fnn.MLP((16, 64, 64, 1), ("tanh", "tanh", "identity"))
params = fnn.init(jax.random.key(0), net)
x = jax.random.normal(jax.random.key(1), (256, 16))
y = jnp.sin(x.sum(axis=1, keepdims=True))


def loss_and_grad(params, x, y):
    loss, grads = fnn.value_and_grad(net, params, x, y, loss="l2")
    return loss, grads["params"]


def seconds(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


step = jax.jit(loss_and_grad)
first = seconds(step, params, x, y)  # traces and compiles
later = np.median([seconds(step, params, x, y) for _ in range(20)])
eager = np.median([seconds(loss_and_grad, params, x, y) for _ in range(3)])
print(f"eager (op by op)   {eager * 1e3:8.2f} ms")
print(f"jit, first call    {first * 1e3:8.2f} ms   (trace + compile + run)")
print(f"jit, later calls   {later * 1e3:8.2f} ms")

# %%
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.barh(["jit, later", "jit, first", "eager"], [later * 1e3, first * 1e3, eager * 1e3])
ax.set_xscale("log")
ax.set_xlabel("milliseconds per gradient (log scale)")
ax.set_title("compile once, then every call runs the compiled program")
plt.tight_layout()
plt.show()

# %% [markdown]
# The first call pays for tracing and compiling; every later call with the same shapes and
# dtypes reuses the program. (Timings on a shared machine vary; the order of magnitude is
# the point.)
#
# ## Data parallelism over the devices of one process (S22)
#
# [`distributed.data_mesh`][fnn.distributed.data_mesh] puts the devices on one axis called
# `"data"`; [`distributed.shardings`][fnn.distributed.shardings] gives the two layouts of
# training: the parameters *replicated* on every device, the batch *split* along its first
# axis. With the inputs placed that way, the *same* jitted function runs on all four
# devices, each on its 64 rows, and XLA adds the partial gradients — the mean over the
# batch is a sum, and a sum can be split.

# %%
mesh = distributed.data_mesh()
replicated, batch = distributed.shardings(mesh)
params_r = jax.device_put(params, replicated)
x_b, y_b = jax.device_put(x, batch), jax.device_put(y, batch)
for shard in x_b.addressable_shards:
    print(f"{shard.device}: rows {shard.index[0].start:3}–{shard.index[0].stop - 1:3} of x")

loss_1, g_1 = step(params, x, y)
loss_4, g_4 = step(params_r, x_b, y_b)
diff = max(
    float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_1), jax.tree.leaves(g_4))
)
print(f"loss on one device {float(loss_1):.6f}, on four {float(loss_4):.6f}")
print(f"largest gradient difference: {diff:.1e} (rounding: sums in another order)")

# %% [markdown]
# Nothing in `loss_and_grad` knows about devices. That is S22's promise: the derivative is a
# pure function, and where it runs is decided by how its inputs are placed. On a machine
# with GPUs or TPUs, `jax.devices()` lists them and the same cell runs there.
#
# ## Several processes (S30)
#
# On a cluster each machine runs its own Python process with its own devices, and holds
# only its own part of the data.
# [`initialize_distributed`][fnn.distributed.initialize_distributed] joins the processes
# through JAX's coordinator (process 0's address, the number of processes and this one's
# index, here from environment variables); then `jax.devices()` lists the devices of *all*
# processes, and a mesh over them spans the machines. Each process contributes its rows
# with `jax.make_array_from_process_local_data`; the jitted gradient is the same function
# as above.
#
# Two processes on this machine, with two CPU devices each, stand in for two machines:

# %%
worker = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import fnn
    from fnn import distributed

    distributed.initialize_distributed()  # reads JAX_COORDINATOR_ADDRESS, … from the env
    net = fnn.MLP((16, 64, 64, 1), ("tanh", "tanh", "identity"))
    params = fnn.init(jax.random.key(0), net)
    x = np.asarray(jax.random.normal(jax.random.key(1), (256, 16)))
    y = np.sin(x.sum(axis=1, keepdims=True))
    rows = slice(128 * jax.process_index(), 128 * (jax.process_index() + 1))  # my half

    mesh = distributed.data_mesh()  # all 4 devices of both processes
    replicated, batch = distributed.shardings(mesh)
    xg, yg = (jax.make_array_from_process_local_data(batch, a[rows]) for a in (x, y))
    step = jax.jit(lambda p, x, y: fnn.value_and_grad(net, p, x, y, loss="l2"))
    loss, grads = step(jax.device_put(params, replicated), xg, yg)
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads["params"])))
    print(f"process {jax.process_index()} of {jax.process_count()}: "
          f"{len(jax.local_devices())} of {len(jax.devices())} devices, rows {rows.start}–"
          f"{rows.stop - 1}; loss {float(loss):.6f}, |grad| {float(norm):.6f}")
    """
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


with tempfile.TemporaryDirectory() as tmp:
    script = os.path.join(tmp, "worker.py")
    with open(script, "w") as f:
        f.write(worker)
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
        JAX_NUM_PROCESSES="2",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, script],
            env=dict(env, JAX_PROCESS_ID=str(i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
for p, (out, err) in zip(procs, outs):
    mine = [line for line in out.splitlines() if not line.startswith("[Gloo]")]
    print("\n".join(mine) if p.returncode == 0 else f"failed ({p.returncode}):\n{err[-1500:]}")

g_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(g_1)))
print(f"one process, one device:  loss {float(loss_1):.6f}, |grad| {float(g_norm):.6f}")

# %% [markdown]
# Both processes print the same loss and gradient, and they are the single-device numbers:
# each process saw only half of the batch, yet the compiled program summed over all of it.
# Training works the same way: [`training.fit`][fnn.training.fit] takes a `mesh=` and does
# this at every step, and `scripts/train_distributed.py --num-processes 2` trains the
# digits classifier across two processes (on a cluster, each host runs the script with
# its own `JAX_PROCESS_ID`).
