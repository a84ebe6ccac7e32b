r"""Training with the hand-written gradients and optax (S21), data-parallel when asked (S22).

The recap of the lecture, as code: gradient descent on the mean loss of a mini-batch,

.. math::  L(θ) = \frac{1}{B} \sum_{n=1}^{B} L(nn_θ(x_n), y_n), \qquad
           θ ← θ + \mathrm{update}(∇_θ L),

where ``∇_θ L`` comes from fnn's own backpropagation (:func:`fnn.value_and_grad`, method
``"reverse"``, ``"explicit"`` or ``"forward"``) and ``update`` is any optax
``GradientTransformation``: ``optax.sgd(η)`` gives ``−η ∇L``, ``optax.sgd(η, momentum=0.9)``
the heavy ball, ``optax.adam(η)`` the adaptive learning rates.

* :func:`train_step` is one such step, a pure function;
* :func:`make_train_step` returns it compiled by ``jax.jit`` for a fixed network,
  optimizer, loss and method;
* :func:`fit` runs epochs of shuffled mini-batches, driven by an explicit PRNG key, and
  returns the trained parameters and the history of losses.

Data parallelism (S22): given a ``jax.sharding.Mesh`` with one axis ``"data"`` (see
:func:`data_mesh`), every mini-batch is split across the mesh's devices with a
``NamedSharding`` and the parameters and optimizer state are replicated. The program is the
same — ``jax.jit`` partitions the hand-written backward pass and sums the per-device
partial gradients — so the gradient is the mean over the *global* batch, whatever the
number of devices.

Several processes (S30): when JAX runs as several processes (``jax.distributed``, started by
:func:`initialize_distributed`), :func:`fit` and :func:`make_train_step` train on one global
mesh over the devices of all processes (``data_mesh()``). Each process passes only *its own*
examples; the global data set is their concatenation in process order, assembled with
``jax.make_array_from_process_local_data``. The parameters are replicated, the gradient is
the mean over the global batch, the permutation of every epoch comes from the shared key
inside the compiled program (so every process agrees on it), and only process 0 shows
progress and writes checkpoints. The result equals one process training on all the data.

Checkpoints (S30): ``fit(..., checkpoint=path, every=k)`` writes the parameters, the optimizer
state, the epoch, the key and the losses so far to ``path`` (an :func:`fnn.save` file, written
atomically) every ``k`` epochs and after the last one; called again with the same arguments,
``fit`` resumes from it and ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnn import derivatives, losses
from fnn import io as fnn_io
from fnn._checks import check_input, check_key, check_params, check_positive_int
from fnn.derivatives import value_and_grad
from fnn.network import MLP, Params, check_net

__all__ = [
    "METHODS",
    "History",
    "data_mesh",
    "fit",
    "initialize_distributed",
    "make_train_step",
    "train_step",
]

METHODS = derivatives.METHODS  # ("reverse", "explicit", "forward")


class History(NamedTuple):
    """The losses seen during :func:`fit` (S21): ``loss[k]`` is the mini-batch loss at step
    k (before that step's update), ``epoch_loss[e]`` the mean over the steps of epoch e."""

    loss: np.ndarray
    epoch_loss: np.ndarray


# ---------------------------------------------------------------------------------------
# One step.
# ---------------------------------------------------------------------------------------


def train_step(
    net: MLP,
    params: Params,
    opt_state: optax.OptState,
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "l2",
    method: str = "reverse",
):
    r"""One step of gradient descent with the hand-written gradient (S21).

    .. math::  L, ∇_θ L = \mathrm{value\_and\_grad}(θ; x, y), \qquad
               Δθ, s ← \mathrm{optimizer.update}(∇_θ L, s, θ), \qquad θ ← θ + Δθ.

    A pure function: it jit-compiles with ``net`` and ``optimizer`` static (see
    :func:`make_train_step`).

    Returns:
      ``(params, opt_state, L)``: the updated parameters and optimizer state, and the
      batch loss ``L`` at the parameters *before* the update.
    """
    L, grads = value_and_grad(net, params, x, y, loss=loss, method=method)
    updates, opt_state = optimizer.update(grads["params"], opt_state, params)
    return optax.apply_updates(params, updates), opt_state, L


def make_train_step(
    net: MLP,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "l2",
    method: str = "reverse",
    mesh: Mesh | None = None,
) -> Callable:
    """:func:`train_step` compiled by ``jax.jit`` for one network, optimizer, loss and method
    (S21; data-parallel over a mesh, S22; over several processes, S30).

    Args:
      net: the architecture.
      optimizer: any optax ``GradientTransformation``.
      loss: a loss name of :mod:`fnn.losses`.
      method: ``"reverse"``, ``"explicit"`` or ``"forward"`` (see :func:`fnn.value_and_grad`).
      mesh: optional ``Mesh`` with one axis ``"data"``: the batch is sharded along it, the
        parameters and optimizer state are replicated (S22). With several processes it
        defaults to ``data_mesh()`` over the devices of all of them (S30).

    Returns:
      ``step(params, opt_state, x, y) -> (params, opt_state, loss)`` for a batch ``x`` of
      shape ``(B, D)``. It checks its inputs in Python before calling the compiled step.
      With several processes each one passes its own ``B`` rows (the same ``B`` in every
      process): the global batch is their concatenation in process order, and ``loss`` and
      the gradient are its means.

    Raises:
      TypeError, ValueError: a bad argument (named in the message), here or when ``step``
        is called (wrong shapes; a global batch not divisible by the mesh's devices).

    >>> import fnn, jax, optax
    >>> net = fnn.MLP((2, 8, 1), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> optimizer = optax.adam(1e-2)
    >>> step = make_train_step(net, optimizer)
    >>> params, state, L = step(params, optimizer.init(params), jnp.ones((4, 2)), jnp.ones((4, 1)))
    """
    mesh = _default_mesh(mesh)
    loss_fn = _check_config(net, optimizer, loss, method, mesh)

    def step(params, opt_state, x, y):
        return train_step(net, params, opt_state, x, y, optimizer, loss=loss, method=method)

    if mesh is None:
        compiled = jax.jit(step)
    else:
        replicated, batch = _shardings(mesh)
        compiled = jax.jit(
            step,
            in_shardings=(replicated, replicated, batch, batch),
            out_shardings=(replicated, replicated, replicated),
        )

    def checked_step(params, opt_state, x, y):
        check_params(net, params)
        x, y = _check_data(net, params, loss_fn, x, y)
        if jax.process_count() == 1:
            _check_batch_size(x.shape[0], mesh, "x.shape[0]")
        else:  # every process passes x.shape[0] rows of the global batch
            rows = x.shape[0] * jax.process_count()
            _check_batch_size(rows, mesh, "the global batch x.shape[0] × processes")
        if mesh is not None:
            replicated, batch = _shardings(mesh)
            params, opt_state = jax.device_put((params, opt_state), replicated)
            x, y = _global_data((x, y), batch)
        return compiled(params, opt_state, x, y)

    return checked_step


# ---------------------------------------------------------------------------------------
# The training loop.
# ---------------------------------------------------------------------------------------


def fit(
    key: jax.Array,
    net: MLP,
    params: Params,
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "l2",
    method: str = "reverse",
    epochs: int = 10,
    batch_size: int | None = 32,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    every: int = 1,
) -> tuple[Params, History]:
    """Train ``params`` on ``(x, y)`` with shuffled mini-batches (S21), resumably (S30).

    Each epoch draws a fresh permutation of the N examples from ``fold_in(key, epoch)`` and
    takes ``N // batch_size`` steps of :func:`train_step`; the ``N mod batch_size``
    examples left over are skipped in that epoch only (a new permutation next epoch), so
    that every batch has the same shape and the step compiles once. One epoch is one
    compiled ``lax.scan`` over its steps: one dispatch and one look at the losses per epoch.
    ``x`` (and a vector ``y``) are cast to the parameters' dtype. The same key, data and
    arguments give the same result.

    Args:
      key: PRNG key that drives the shuffling.
      net, params: the network and its initial parameters.
      x: inputs, shape ``(N, D)``; with several processes, this process's examples.
      y: targets, ``(N, M)`` for a vector loss or integer labels ``(N,)``.
      optimizer: any optax ``GradientTransformation`` (``optax.sgd``, ``optax.adam``, …).
      loss: a loss name of :mod:`fnn.losses`.
      method: how the gradient is computed: ``"reverse"``, ``"explicit"`` or ``"forward"``.
      epochs: number of passes over the data, a positive int.
      batch_size: examples per step (over all processes), ``1 ≤ batch_size ≤ N``; ``None``
        for full batch.
      mesh: optional ``Mesh`` with axis ``"data"`` to shard every batch across its devices
        (S22); ``batch_size`` must then be divisible by the number of devices. In one
        process the data set is replicated on every device (gathered batch by batch on
        device). With several processes (S30) the mesh defaults to ``data_mesh()`` over
        all their devices; every process must then pass the same number of examples, a
        multiple of its devices in the mesh, and the data set stays sharded.
      progress: show a tqdm progress bar (if tqdm is installed; process 0 only); ``None``
        shows it for runs of at least 1000 steps on a terminal, ``False`` never.
      checkpoint: a file path: write the training state there (atomically; process 0 only)
        every ``every`` epochs and after the last, and resume from it when it exists. The
        run resumed must have the same network, key, data size, batch size, loss, method
        and optimizer state structure (else ``ValueError``; a changed learning rate is
        not in the file and goes unnoticed); the ``params`` passed are then replaced by the
        checkpoint's. ``fnn.load(checkpoint)`` reads the network and parameters from it.
      every: write the checkpoint every this many epochs, a positive int.

    Returns:
      ``(params, history)``: the trained parameters and a :class:`History` (of the whole
      run, resumed or not).

    Raises:
      TypeError, ValueError: a bad argument, named in the message, before anything runs.
      FloatingPointError: the loss became NaN or ±inf; the message names epoch and step.

    >>> import fnn, jax, optax
    >>> net = fnn.MLP((1, 3, 1), ("tanh", "identity"))
    >>> x = jnp.linspace(-1, 1, 50)[:, None]
    >>> params = fnn.init(jax.random.key(0), net)
    >>> params, history = fit(jax.random.key(1), net, params, x, x**2, optax.adam(0.05),
    ...                       epochs=100, batch_size=10)
    >>> bool(history.epoch_loss[-1] < 0.1 * history.epoch_loss[0])
    True
    """
    mesh = _default_mesh(mesh)
    loss_fn = _check_config(net, optimizer, loss, method, mesh)
    check_key(key)
    check_params(net, params)
    check_positive_int(epochs, "epochs")
    check_positive_int(every, "every")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path or None; got {type(checkpoint).__name__}.")
    x, y, N = _check_fit_data(net, params, loss_fn, x, y, mesh)
    batch_size = N if batch_size is None else batch_size
    if batch_size > N:
        raise ValueError(
            f"batch_size must be at most the number of examples N = {N}; got {batch_size}."
        )
    _check_batch_size(batch_size, mesh, "batch_size")

    steps = N // batch_size
    config = (net, optimizer, loss, method, mesh, steps, batch_size)
    try:  # a second fit with the same configuration reuses the compiled epoch
        run_epoch = _cached_epoch_fn(*config)
    except TypeError:  # an optimizer that cannot be hashed
        run_epoch = _epoch_fn(*config)
    opt_state = optimizer.init(params)
    start, step_losses = 0, []
    if checkpoint is not None:
        run = {"N": N, "batch_size": batch_size, "loss": loss, "method": method}
        resumed = _resume(checkpoint, net, params, opt_state, key, run, steps)
        if resumed is not None:
            params, opt_state, start, L = resumed
            if start > epochs:
                raise ValueError(
                    f"{checkpoint}: the checkpoint is at epoch {start}, past epochs = {epochs}."
                )
            if np.size(L) != start * steps:
                raise ValueError(
                    f"{checkpoint}: the checkpoint holds {np.size(L)} step losses for "
                    f"{start} epochs of {steps} steps; the file is damaged."
                )
            step_losses = list(np.asarray(L).reshape(start, steps))
    if mesh is not None:
        replicated, _ = _shardings(mesh)
        params, opt_state = jax.device_put((params, opt_state), replicated)
        if jax.process_count() == 1:
            x, y = jax.device_put((x, y), replicated)

    bar = _progress_bar(epochs, steps, progress, start)
    try:
        for epoch in range(start, epochs):
            params, opt_state, L = run_epoch(
                params, opt_state, jax.random.fold_in(key, epoch), x, y
            )
            L = np.asarray(L)
            if not np.all(np.isfinite(L)):
                bad = int(np.argmin(np.isfinite(L)))
                raise FloatingPointError(
                    f"fit: the loss became {L[bad]} at epoch {epoch + 1} of {epochs}, step "
                    f"{bad + 1} of {steps} (counting from 1); try a smaller learning rate."
                )
            step_losses.append(L)
            if checkpoint is not None and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
                _write_checkpoint(
                    checkpoint, net, params, opt_state, epoch=epoch + 1, key=key,
                    loss=np.concatenate(step_losses), run=run,
                )  # fmt: skip
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{L.mean():.4g}")
    finally:
        if bar is not None:
            bar.close()
    losses_ = np.asarray(step_losses).reshape(len(step_losses), steps)
    return params, History(losses_.reshape(-1), losses_.mean(axis=1))


def _epoch_fn(net, optimizer, loss, method, mesh, steps, batch_size):
    """One epoch as one compiled function: shuffle, then ``lax.scan`` over the steps."""
    batch_sharding = None if mesh is None else _shardings(mesh)[1]

    def run_epoch(params, opt_state, key, x, y):
        order = jax.random.permutation(key, x.shape[0])[: steps * batch_size]

        def one_step(carry, idx):
            params, opt_state = carry
            xb, yb = x[idx], y[idx]
            if batch_sharding is not None:
                xb, yb = jax.lax.with_sharding_constraint((xb, yb), batch_sharding)
            params, opt_state, L = train_step(
                net, params, opt_state, xb, yb, optimizer, loss=loss, method=method
            )
            return (params, opt_state), L

        (params, opt_state), L = jax.lax.scan(
            one_step, (params, opt_state), order.reshape(steps, batch_size)
        )
        return params, opt_state, L

    if mesh is None:
        return jax.jit(run_epoch)
    replicated, _ = _shardings(mesh)
    return jax.jit(run_epoch, out_shardings=(replicated, replicated, replicated))


_cached_epoch_fn = functools.lru_cache(maxsize=32)(_epoch_fn)


def _resume(path, net, params, opt_state, key, run, steps):
    """The checkpoint's ``(params, opt_state, epoch, losses)`` or ``None``; with several
    processes, process 0 reads the file and broadcasts what it found, bit for bit."""
    if jax.process_count() == 1:
        return fnn_io.read_checkpoint(path, net, params, opt_state, key=key, run=run)
    found, error = None, None
    if jax.process_index() == 0:
        try:
            found = fnn_io.read_checkpoint(path, net, params, opt_state, key=key, run=run)
        except (TypeError, ValueError) as err:
            error = err
    epoch = -2 if error is not None else -1 if found is None else found[2]
    epoch = int(multihost_utils.broadcast_one_to_all(np.int32(epoch)))
    if epoch == -2:
        if error is not None:
            raise error
        raise ValueError(f"{path}: process 0 refused the checkpoint; see its message.")
    if epoch == -1:
        return None
    dtype = jnp.result_type(params[0]["W"])
    template = (params, opt_state, np.zeros(epoch * steps, dtype))
    tree = (found[0], found[1], found[3]) if found is not None else template
    tree = jax.tree.map(_bits, tree)  # psum of raw bits with zeros: exact (−0.0 stays −0.0)
    tree = multihost_utils.broadcast_one_to_all(tree)
    params, opt_state, L = jax.tree.map(lambda b, t: _unbits(b, t), tree, template)
    return params, opt_state, epoch, L


def _write_checkpoint(path, *args, **kwargs) -> None:
    """Process 0 writes; with several processes, all learn whether it could (so that none
    waits for it in the next epoch's collectives when it could not)."""
    error = None
    if jax.process_index() == 0:
        try:
            fnn_io.write_checkpoint(path, *args, **kwargs)
        except (OSError, TypeError, ValueError) as err:
            error = err
    if jax.process_count() > 1:
        failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed and error is None:
            raise OSError(f"{path}: process 0 could not write the checkpoint; see its message.")
    if error is not None:
        raise error


def _bits(leaf) -> np.ndarray:
    leaf = np.asarray(leaf)
    return leaf.view(np.dtype(f"u{leaf.dtype.itemsize}")) if leaf.dtype.kind in "fcb" else leaf


def _unbits(bits, like) -> jax.Array:
    return jnp.asarray(np.asarray(bits).view(np.asarray(like).dtype))


# ---------------------------------------------------------------------------------------
# Devices (S22) and processes (S30).
# ---------------------------------------------------------------------------------------


def data_mesh(devices=None) -> Mesh:
    """A one-axis ``Mesh(devices, ("data",))`` over ``devices`` (default: every device of every
    process, in process order), for data-parallel :func:`fit` and :func:`make_train_step`
    (S22, S30). In one process that is all local devices."""
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    if not devices:
        raise ValueError("devices must name at least one device; got an empty list.")
    return Mesh(np.asarray(devices), ("data",))


def _shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the leading batch axis over "data")."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def _default_mesh(mesh: Mesh | None) -> Mesh | None:
    """With several processes there is no training without a mesh over all of them."""
    return data_mesh() if mesh is None and jax.process_count() > 1 else mesh


def _local_devices(mesh: Mesh) -> int:
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def _global_data(arrays, sharding: NamedSharding):
    """One process: the arrays as they are. Several: each process's rows assembled into one
    global array, sharded by ``sharding`` (the global data is their concatenation)."""
    if jax.process_count() == 1:
        return arrays
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in arrays)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 60,
    local_device_ids=None,
    cpu_collectives: str = "gloo",
) -> None:
    """Join this process to a JAX multi-process run (``jax.distributed.initialize``) (S30).

    Call it first, before any other JAX call, in every process. What is not passed is read
    from the environment — ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here) — and what is still missing is
    left to JAX's own cluster auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU).
    Collectives between CPU devices of different processes go through gloo.

    A process other than 0 first waits, up to ``timeout`` seconds, until the coordinator
    (process 0, at ``coordinator_address``) accepts connections; then JAX registers every
    process, again within ``timeout`` seconds. A coordinator on a loopback address
    (``127.0.0.1:port``) is bound to loopback only.

    Args:
      coordinator_address: ``"host:port"`` of process 0.
      num_processes: how many processes take part.
      process_id: this process's index, ``0 ≤ process_id < num_processes``.
      timeout: seconds to wait for the coordinator and for all processes to register
        (JAX's ``initialization_timeout``), a positive int; default 60.
      local_device_ids: restrict this process to these local devices (JAX's argument).
      cpu_collectives: ``jax_cpu_collectives_implementation``: ``"gloo"`` (default) or
        ``"mpi"``.

    Raises:
      ValueError: a bad argument, or no coordinator given and none detected.
      TimeoutError: the coordinator did not accept a connection within ``timeout`` seconds.
        If it does but the other processes do not all register in time, JAX itself stops
        the process (after a message on stderr from fnn saying so).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    num_processes = _int_from(num_processes, "num_processes", "JAX_NUM_PROCESSES")
    process_id = _int_from(process_id, "process_id", "JAX_PROCESS_ID")
    check_positive_int(timeout, "timeout")
    if process_id is not None and process_id < 0:
        raise ValueError(f"process_id must be a non-negative integer; got {process_id}.")
    if num_processes is not None:
        check_positive_int(num_processes, "num_processes")
        if process_id is not None and not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be in 0 … {num_processes - 1} for num_processes = "
                f"{num_processes}; got {process_id}."
            )
    host = port = None
    if coordinator_address is not None:
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"coordinator_address must be 'host:port', e.g. '127.0.0.1:1234'; "
                f"got {coordinator_address!r}."
            )
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    known = process_id is not None and num_processes is not None
    who = f"process {process_id} of {num_processes}" if known else "this process"
    deadline = time.monotonic() + timeout
    if host is not None and process_id not in (None, 0):
        _wait_for_coordinator(host.strip("[]"), int(port), deadline, who, timeout)
    loopback = host in ("127.0.0.1", "localhost", "[::1]")
    watchdog = threading.Timer(
        max(0.9 * (deadline - time.monotonic()), 0.5),
        lambda: print(
            f"fnn: {who} is still waiting for all processes ({num_processes or 'detected'}) "
            f"to register at {coordinator_address or 'the detected coordinator'}; JAX will "
            f"stop this process when timeout = {timeout} s "
            "is up. Are all of them started, with the same address and num_processes?",
            file=sys.stderr,
            flush=True,
        ),
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=max(1, math.ceil(deadline - time.monotonic())),
            coordinator_bind_address=coordinator_address if loopback else None,
        )
    except ValueError as err:
        if known and coordinator_address is not None:
            raise
        raise ValueError(
            f"{err} No cluster was detected: pass coordinator_address, num_processes and "
            "process_id (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
            "JAX_PROCESS_ID) in every process."
        ) from err
    finally:
        watchdog.cancel()


def _int_from(value, name: str, variable: str) -> int | None:
    if value is None and os.environ.get(variable):
        text = os.environ[variable]
        if not text.strip().isdigit():
            raise ValueError(f"{variable} must be a non-negative integer ({name}); got {text!r}.")
        return int(text)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ValueError(f"{name} must be an integer; got {value!r}.")
    return None if value is None else int(value)


def _wait_for_coordinator(host: str, port: int, deadline: float, who: str, timeout: int):
    """Try to open a TCP connection to the coordinator until ``deadline``: JAX itself would
    abort the process when it cannot register, so fail first, in Python, with a message."""
    error = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            error = err
            time.sleep(0.1)
    raise TimeoutError(
        f"{who} could not reach the coordinator at {host}:{port} within timeout = {timeout} s "
        f"({error}). Start process 0 (it runs the coordinator) with the same address, check "
        "the host and port, and that no firewall blocks it; or raise the timeout."
    )


# ---------------------------------------------------------------------------------------
# Checks, in Python, before tracing.
# ---------------------------------------------------------------------------------------


def _check_config(net, optimizer, loss, method, mesh) -> losses.Loss:
    check_net(net)
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (with init and update), "
            f"e.g. optax.adam(1e-3); got {type(optimizer).__name__}."
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if mesh is not None:
        if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != ("data",):
            raise ValueError(
                "mesh must be a jax.sharding.Mesh with the single axis ('data',), e.g. "
                f"fnn.training.data_mesh(); got {mesh!r}."
            )
        processes = {d.process_index for d in mesh.devices.flat}
        if processes != set(range(jax.process_count())):
            raise ValueError(
                f"mesh must hold devices of all {jax.process_count()} processes, e.g. "
                f"fnn.training.data_mesh(); it holds those of processes {sorted(processes)}."
            )
    return losses.get(loss)


def _check_data(net, params, loss_fn, x, y):
    """Check ``x (N, D)`` and ``y`` against ``net`` and the loss; cast to the params' dtype."""
    if np.ndim(x) != 2:
        raise ValueError(
            f"x must be a batch of shape (N, D) with D = {net.in_features}; "
            f"got {tuple(np.shape(x))}."
        )
    check_input(net, x)
    N = np.shape(x)[0]
    if N < 1:
        raise ValueError("x must hold at least one example; got N = 0.")
    losses.check_target(loss_fn, (N, net.out_features), y)
    dtype = jnp.result_type(params[0]["W"])
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype) if loss_fn.target == "vector" else jnp.asarray(y)
    return x, y


def _check_fit_data(net, params, loss_fn, x, y, mesh):
    """:func:`_check_data` plus finiteness; with several processes, every process learns
    whether every other one passed (no process is left waiting in a collective), and the
    rows of all are assembled into one global data set. Returns ``(x, y, N)``, N global."""
    error = None
    try:
        x, y = _check_data(net, params, loss_fn, x, y)
        for name, data in (("x", x), ("y", y)):
            if not bool(jnp.all(jnp.isfinite(data))):
                raise ValueError(f"{name} must hold only finite values; it holds NaN or inf.")
    except (TypeError, ValueError) as err:
        error = err
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return x, y, x.shape[0]
    rows = -1 if error is not None else x.shape[0]
    rows = np.asarray(multihost_utils.process_allgather(np.int32(rows))).tolist()
    if error is not None:
        raise error
    if min(rows) < 0:
        failed = [p for p, n in enumerate(rows) if n < 0]
        raise ValueError(f"fit: process(es) {failed} refused their data; see their message.")
    local = _local_devices(mesh)
    if len(set(rows)) != 1 or rows[0] % local:
        raise ValueError(
            f"x: every process must pass the same number of examples, a multiple of its "
            f"{local} devices in the mesh; got {rows} examples on processes 0 … "
            f"{len(rows) - 1}. Drop the remainder."
        )
    x, y = _global_data((x, y), _shardings(mesh)[1])
    return x, y, sum(rows)


def _check_batch_size(batch_size: int, mesh: Mesh | None, name: str) -> None:
    if mesh is None or batch_size % mesh.size == 0:
        return
    where = "" if jax.process_count() == 1 else f" of all {jax.process_count()} processes"
    raise ValueError(
        f"{name} = {batch_size} must be divisible by the {mesh.size} devices of the mesh"
        f"{where}, so that every device gets an equal share of each batch; use a batch size "
        f"that is a multiple of {mesh.size}."
    )


def _progress_bar(epochs: int, steps: int, progress: bool | None, start: int = 0):
    if jax.process_index() != 0:
        return None
    if progress is None:
        progress = epochs * steps >= 1000 and sys.stderr.isatty()
    if not progress:
        return None
    try:  # tqdm is an optional extra ("data"): without it, train silently.
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, initial=start, unit="epoch", desc="fit", leave=False)
