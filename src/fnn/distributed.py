r"""Devices and processes: the data mesh, its shardings, and JAX's multi-process runtime (S22, S30).

Data parallelism (S22): :func:`data_mesh` is a one-axis ``Mesh(devices, ("data",))`` over
every device of every process, in process order; :func:`shardings` are training's two
``NamedSharding``\ s — parameters and optimizer state *replicated* (``PartitionSpec()``), a
batch ``(B, D)`` *split* along its leading axis (``PartitionSpec("data")``), so that each of
the ``|mesh|`` devices holds ``B / |mesh|`` rows and ``jax.jit`` sums the per-device partial
gradients; :func:`check_batch_size` checks ``B mod |mesh| = 0`` in Python before tracing.

Several processes (S30): :func:`initialize_distributed` joins a process to a
``jax.distributed`` run, with a bounded wait for the coordinator and messages that say what
is missing. Each process holds only its own rows of the data; :func:`assemble` checks that
all passed the same number and builds the global arrays (their concatenation in process
order). :func:`on_process_0` runs a side effect (a checkpoint write) on process 0 only and
lets every process learn whether it failed; :func:`broadcast_exact` hands its result to all,
bit for bit; :func:`check_agreement` compares settings across processes by digest and
refuses, in every process, what differs. No process is ever left waiting in a collective
for one that has stopped.

This module knows nothing of networks or training; :mod:`fnn.training` builds on it. In one
process every function here is a no-op or a plain check.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnn._checks import check_positive_int
from fnn._coordinator import check_port_free, wait_for_coordinator, watchdog

__all__ = [
    "assemble",
    "broadcast_exact",
    "check_agreement",
    "check_batch_size",
    "check_mesh",
    "combined_digest",
    "data_mesh",
    "default_mesh",
    "initialize_distributed",
    "on_process_0",
    "shardings",
]


# ---------------------------------------------------------------------------------------
# The mesh and its shardings (S22).
# ---------------------------------------------------------------------------------------


def data_mesh(devices=None) -> Mesh:
    """A one-axis ``Mesh(devices, ("data",))`` over ``devices`` (default: every device of every
    process, in process order), for data-parallel :func:`fnn.training.fit` and
    :func:`fnn.training.make_train_step` (S22, S30). In one process that is all local devices.

    Raises:
      ValueError: ``devices`` is empty.

    >>> data_mesh().axis_names
    ('data',)
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    if not devices:
        raise ValueError("devices must name at least one device; got an empty list.")
    return Mesh(np.asarray(devices), ("data",))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """``(replicated, batch)``: everything on every device, and split along the leading
    (batch) axis over ``"data"`` (S22)."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def default_mesh(mesh: Mesh | None) -> Mesh | None:
    """``mesh``, or with several processes and no mesh, :func:`data_mesh` over all of them:
    there is no training in several processes without a mesh over all of them (S30)."""
    return data_mesh() if mesh is None and jax.process_count() > 1 else mesh


def check_mesh(mesh) -> None:
    """Raise ``ValueError`` unless ``mesh`` is a ``Mesh`` with the single axis ``("data",)``
    holding devices of every process (S22, S30)."""
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != ("data",):
        raise ValueError(
            "mesh must be a jax.sharding.Mesh with the single axis ('data',), e.g. "
            f"fnn.distributed.data_mesh(); got {mesh!r}."
        )
    processes = {d.process_index for d in mesh.devices.flat}
    if processes != set(range(jax.process_count())):
        raise ValueError(
            f"mesh must hold devices of all {jax.process_count()} processes, e.g. "
            f"fnn.distributed.data_mesh(); it holds those of processes {sorted(processes)}."
        )


def check_batch_size(batch_size: int, mesh: Mesh | None, name: str) -> None:
    """Raise ``ValueError`` (naming ``name``) unless every device of ``mesh`` gets an equal
    share of a global batch of ``batch_size`` rows (S22)."""
    if mesh is None or batch_size % mesh.size == 0:
        return
    where = "" if jax.process_count() == 1 else f" of all {jax.process_count()} processes"
    raise ValueError(
        f"{name} = {batch_size} must be divisible by the {mesh.size} devices of the mesh"
        f"{where}, so that every device gets an equal share of each batch; use a batch size "
        f"that is a multiple of {mesh.size}."
    )


# ---------------------------------------------------------------------------------------
# Data and results across processes (S30).
# ---------------------------------------------------------------------------------------


def global_data(arrays, sharding: NamedSharding):
    """One process: the arrays as they are. Several: each process's rows assembled into one
    global array, sharded by ``sharding`` (the global data is their concatenation)."""
    if jax.process_count() == 1:
        return arrays
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in arrays)


def assemble(arrays, error: Exception | None, mesh: Mesh | None):
    """The global data set from every process's rows (S30): ``(arrays, N)``, N global.

    ``error`` is this process's refusal of its own data (or ``None``): every process learns
    whether any refused (and raises), so that none waits for the others in a collective.
    Every process must pass the same number of rows, a multiple of its devices in ``mesh``.
    In one process: ``error`` raised, or ``arrays`` as they are.
    """
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return arrays, np.shape(arrays[0])[0]
    rows = -1 if error is not None else np.shape(arrays[0])[0]
    rows = np.asarray(multihost_utils.process_allgather(np.int32(rows))).tolist()
    if error is not None:
        raise error
    if min(rows) < 0:
        failed = [p for p, n in enumerate(rows) if n < 0]
        raise ValueError(f"fit: process(es) {failed} refused their data; see their message.")
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if len(set(rows)) != 1 or rows[0] % local:
        raise ValueError(
            f"x: every process must pass the same number of examples, a multiple of its "
            f"{local} devices in the mesh; got {rows} examples on processes 0 … "
            f"{len(rows) - 1}. Drop the remainder."
        )
    return global_data(arrays, shardings(mesh)[1]), sum(rows)


def on_process_0(fn: Callable, errors: tuple[type[Exception], ...], refusal: Exception):
    """``fn()`` on process 0 only; every process learns whether it raised one of ``errors``
    (S30). Process 0 re-raises its error, the others raise ``refusal``; otherwise process 0
    returns ``fn()``'s result and the others ``None``. In one process: just ``fn()``."""
    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = fn()
        except errors as err:
            error = err
    if jax.process_count() > 1:
        failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed and error is None:
            raise refusal
    if error is not None:
        raise error
    return result


def broadcast_exact(tree, template):
    """Process 0's ``tree`` in every process, bit for bit (S30); the other processes pass
    ``template``, a tree of the same structure, shapes and dtypes (their ``tree`` is ignored).

    The leaves travel as their raw bits (an unsigned integer view), so the broadcast (a sum
    with zeros) is exact for every float: −0.0 stays −0.0, NaN payloads stay.
    """
    tree = tree if jax.process_index() == 0 else template
    bits = multihost_utils.broadcast_one_to_all(jax.tree.map(_bits, tree))
    return jax.tree.map(_unbits, bits, template)


def _bits(leaf) -> np.ndarray:
    leaf = np.asarray(leaf)
    return leaf.view(np.dtype(f"u{leaf.dtype.itemsize}")) if leaf.dtype.kind in "fcb" else leaf


def _unbits(bits, like) -> jax.Array:
    return jnp.asarray(np.asarray(bits).view(np.asarray(like).dtype))


def _digest_words(value) -> np.ndarray:
    """The first 8 bytes of a SHA-256 digest of ``value`` (arrays by shape, dtype and bytes,
    anything else by its ``repr``) as two ``uint32``: small enough to gather."""
    digest = hashlib.sha256()
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, (np.ndarray, jax.Array)):
            item = np.asarray(item)
            digest.update(f"{item.shape}{item.dtype.str}".encode())
            digest.update(np.ascontiguousarray(item).tobytes())
        else:
            digest.update(repr(item).encode())
    return np.frombuffer(digest.digest()[:8], dtype="<u4").copy()


def check_agreement(settings: dict, who: str, *, hint: str | None = None) -> None:
    """Raise the same ``ValueError`` in every process unless every process passed the same
    value for every setting (S30), naming each setting that differs and the processes that
    differ from process 0. ``settings`` maps a name to a value (a number, string, array or
    list of arrays), compared by digest. In one process: nothing to compare."""
    if jax.process_count() == 1:
        return
    names = list(settings)
    mine = np.stack([_digest_words(settings[name]) for name in names])
    every = np.asarray(multihost_utils.process_allgather(mine))  # (processes, settings, 2)
    differ = []
    for i, name in enumerate(names):
        others = [p for p in range(len(every)) if not np.array_equal(every[p, i], every[0, i])]
        if others:
            differ.append(f"{name} (process(es) {others} differ from process 0)")
    if differ:
        raise ValueError(
            f"{who}: the processes disagree on "
            + "; ".join(differ)
            + ". "
            + (hint or "Pass the same arguments in every process")
            + "."
        )


def combined_digest(local: str) -> str:
    """One digest of every process's ``local`` digest, in process order (S30): the same
    string in every process."""
    every = np.asarray(multihost_utils.process_allgather(_digest_words(local)))
    return hashlib.sha256(every.tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Joining a multi-process run (S30).
# ---------------------------------------------------------------------------------------


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

    Process 0 first checks that the coordinator's port is free. Every other process waits,
    up to ``timeout`` seconds, until the coordinator (process 0, at ``coordinator_address``)
    answers as one (a program of another kind on that port is an error within seconds);
    then JAX registers every process, again within ``timeout`` seconds. A coordinator on a
    loopback address (``127.0.0.1:port``) is bound to loopback only.

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
      OSError: (process 0) the coordinator's port is in use by another program.
      TimeoutError: the coordinator did not answer within ``timeout`` seconds.
      ConnectionError: something else answers at the coordinator's address. If the
        coordinator answers but the other processes do not all register in time, JAX itself
        stops the process (after a message on stderr from fnn saying so).
    """
    num_processes = _int_from(num_processes, "num_processes", "JAX_NUM_PROCESSES")
    process_id = _int_from(process_id, "process_id", "JAX_PROCESS_ID")
    _check_processes(num_processes, process_id, timeout)
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    host, port = _parse_address(address)
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    known = process_id is not None and num_processes is not None
    who = f"process {process_id} of {num_processes}" if known else "this process"
    deadline = time.monotonic() + timeout
    if host is not None and process_id == 0:
        check_port_free(host, port, who)
    elif host is not None and process_id is not None:
        wait_for_coordinator(host, port, deadline, who, timeout)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    message = (
        f"fnn: {who} is still waiting for all processes ({num_processes or 'detected'}) to "
        f"register at {address or 'the detected coordinator'}; JAX will stop this process "
        f"when timeout = {timeout} s is up. Are all of them started, with the same address "
        "and num_processes?"
    )
    with watchdog(max(0.9 * (deadline - time.monotonic()), 0.5), message):
        _initialize(address, num_processes, process_id, local_device_ids, deadline,
                    address if loopback else None, known)  # fmt: skip


def _check_processes(num_processes, process_id, timeout) -> None:
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


def _parse_address(address):
    """``(host, port)`` of ``"host:port"`` (brackets of an IPv6 host removed), or
    ``(None, None)``."""
    if address is None:
        return None, None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"coordinator_address must be 'host:port', e.g. '127.0.0.1:1234'; got {address!r}."
        )
    return host.strip("[]"), int(port)


def _int_from(value, name: str, variable: str) -> int | None:
    if value is None and os.environ.get(variable):
        text = os.environ[variable]
        if not text.strip().isdigit():
            raise ValueError(f"{variable} must be a non-negative integer ({name}); got {text!r}.")
        return int(text)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ValueError(f"{name} must be an integer; got {value!r}.")
    return None if value is None else int(value)


def _initialize(address, num_processes, process_id, local_device_ids, deadline, bind, known):
    try:
        jax.distributed.initialize(
            address,
            num_processes,
            process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=max(1, math.ceil(deadline - time.monotonic())),
            coordinator_bind_address=bind,
        )
    except ValueError as err:
        if known and address is not None:
            raise
        raise ValueError(
            f"{err} No cluster was detected: pass coordinator_address, num_processes and "
            "process_id (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
            "JAX_PROCESS_ID) in every process."
        ) from err
