"""Reaching the coordinator of a ``jax.distributed`` run, with messages that say what is wrong
(S30).

Private machinery of :func:`fnn.distributed.initialize_distributed`. JAX's own failures here
are a raw RPC error, a crash, or the process stopped at a deadline without a word on what to
check; these checks fail first, in Python, and name the port, the address and the cure:

* :func:`check_port_free` — process 0 binds the coordinator's port once before JAX does;
* :func:`wait_for_coordinator` — every other process waits, up to a deadline, for a program
  at the address that answers JAX's gRPC hand-shake as a coordinator does;
* :func:`watchdog` — a message on stderr while the processes are still registering, before
  JAX stops the process at its deadline.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import threading
import time

__all__ = ["check_port_free", "wait_for_coordinator", "watchdog"]


def check_port_free(host: str, port: int, who: str) -> None:
    """Bind the coordinator's port once, in Python: JAX's own failure to bind is a raw RPC
    error (or a crash) that says nothing of the port."""
    loopback = host in ("127.0.0.1", "localhost", "::1")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host if loopback else "", port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise OSError(
                errno.EADDRINUSE,
                f"{who} cannot start the coordinator: port {port} on {host} is in use by "
                "another program. Pick a free port and pass the same address to every "
                "process (the others stop within seconds when they find no coordinator there).",
            ) from err


_GRPC_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers_as_coordinator(connection: socket.socket) -> bool:
    """JAX's coordinator speaks gRPC (HTTP/2): to a client's preface and empty SETTINGS
    frame it answers with a frame of its own, a SETTINGS frame (type 4), within a second."""
    try:
        connection.settimeout(1.0)
        connection.sendall(_GRPC_PREFACE)
        frame = connection.recv(9, socket.MSG_WAITALL)
    except OSError:
        return False
    return len(frame) == 9 and frame[3] == 4


def wait_for_coordinator(host: str, port: int, deadline: float, who: str, timeout: int):
    """Try to reach the coordinator until ``deadline``: JAX itself would abort the process
    when it cannot register, so fail first, in Python, with a message. A program that
    accepts the connection but does not answer as a coordinator three times in a row is
    another program on the port: an error at once, not at the deadline."""
    error, strangers = None, 0
    while time.monotonic() < deadline and strangers < 3:
        try:
            with socket.create_connection((host, port), timeout=1.0) as connection:
                if _answers_as_coordinator(connection):
                    return
                strangers += 1
        except OSError as err:
            error = err
        time.sleep(0.1)
    if strangers == 3:
        raise ConnectionError(
            f"{who}: a program at {host}:{port} accepts connections but is not JAX's "
            "coordinator; the port is in use by another program (process 0 says so in its own "
            "message). Pick a free port for every process."
        )
    raise TimeoutError(
        f"{who} could not reach the coordinator at {host}:{port} within timeout = {timeout} s "
        f"({error}). Start process 0 (it runs the coordinator) with the same address, check "
        "the host and port, and that no firewall blocks it; or raise the timeout."
    )


@contextlib.contextmanager
def watchdog(seconds: float, message: str):
    """Print ``message`` on stderr if the block still runs after ``seconds``: JAX stops the
    process at its deadline with a message of its own that does not say what to check."""
    timer = threading.Timer(seconds, lambda: print(message, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
