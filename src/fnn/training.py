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
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnn import derivatives, losses
from fnn._checks import check_input, check_key, check_params, check_positive_int
from fnn.derivatives import value_and_grad
from fnn.network import MLP, Params

__all__ = ["METHODS", "History", "data_mesh", "fit", "make_train_step", "train_step"]

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
    (S21; data-parallel over a mesh, S22).

    Args:
      net: the architecture.
      optimizer: any optax ``GradientTransformation``.
      loss: a loss name of :mod:`fnn.losses`.
      method: ``"reverse"``, ``"explicit"`` or ``"forward"`` (see :func:`fnn.value_and_grad`).
      mesh: optional ``Mesh`` with one axis ``"data"``: the batch is sharded along it, the
        parameters and optimizer state are replicated (S22).

    Returns:
      ``step(params, opt_state, x, y) -> (params, opt_state, loss)`` for a batch ``x`` of
      shape ``(B, D)``. It checks its inputs in Python before calling the compiled step.

    Raises:
      TypeError, ValueError: a bad argument (named in the message), here or when ``step``
        is called (wrong shapes; a batch size not divisible by the mesh's devices).

    >>> import fnn, jax, optax
    >>> net = fnn.MLP((2, 8, 1), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> optimizer = optax.adam(1e-2)
    >>> step = make_train_step(net, optimizer)
    >>> params, state, L = step(params, optimizer.init(params), jnp.ones((4, 2)), jnp.ones((4, 1)))
    """
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
        _check_batch_size(x.shape[0], mesh, "x.shape[0]")
        if mesh is not None:
            replicated, batch = _shardings(mesh)
            params, opt_state = jax.device_put((params, opt_state), replicated)
            x, y = jax.device_put((x, y), batch)
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
) -> tuple[Params, History]:
    """Train ``params`` on ``(x, y)`` with shuffled mini-batches (S21).

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
      x: inputs, shape ``(N, D)``.
      y: targets, ``(N, M)`` for a vector loss or integer labels ``(N,)``.
      optimizer: any optax ``GradientTransformation`` (``optax.sgd``, ``optax.adam``, …).
      loss: a loss name of :mod:`fnn.losses`.
      method: how the gradient is computed: ``"reverse"``, ``"explicit"`` or ``"forward"``.
      epochs: number of passes over the data, a positive int.
      batch_size: examples per step, ``1 ≤ batch_size ≤ N``; ``None`` for full batch.
      mesh: optional ``Mesh`` with axis ``"data"`` to shard every batch across its devices
        (S22); ``batch_size`` must then be divisible by the number of devices. The data set
        itself is replicated on every device (it is gathered batch by batch on device).
      progress: show a tqdm progress bar (if tqdm is installed); ``None`` shows it for
        runs of at least 1000 steps on a terminal, ``False`` never.

    Returns:
      ``(params, history)``: the trained parameters and a :class:`History`.

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
    loss_fn = _check_config(net, optimizer, loss, method, mesh)
    check_key(key)
    check_params(net, params)
    x, y = _check_data(net, params, loss_fn, x, y)
    N = x.shape[0]
    check_positive_int(epochs, "epochs")
    batch_size = N if batch_size is None else batch_size
    check_positive_int(batch_size, "batch_size")
    if batch_size > N:
        raise ValueError(
            f"batch_size must be at most the number of examples N = {N}; got {batch_size}."
        )
    _check_batch_size(batch_size, mesh, "batch_size")
    for name, data in (("x", x), ("y", y)):
        if not bool(jnp.all(jnp.isfinite(data))):
            raise ValueError(f"{name} must hold only finite values; it holds NaN or inf.")

    steps = N // batch_size
    config = (net, optimizer, loss, method, mesh, steps, batch_size)
    try:  # a second fit with the same configuration reuses the compiled epoch
        run_epoch = _cached_epoch_fn(*config)
    except TypeError:  # an optimizer that cannot be hashed
        run_epoch = _epoch_fn(*config)
    opt_state = optimizer.init(params)
    if mesh is not None:
        replicated, _ = _shardings(mesh)
        params, opt_state, x, y = jax.device_put((params, opt_state, x, y), replicated)

    bar = _progress_bar(epochs, steps, progress)
    step_losses, epoch_losses = [], []
    try:
        for epoch in range(epochs):
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
            epoch_losses.append(L.mean())
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{epoch_losses[-1]:.4g}")
    finally:
        if bar is not None:
            bar.close()
    return params, History(np.concatenate(step_losses), np.asarray(epoch_losses))


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


# ---------------------------------------------------------------------------------------
# Devices (S22).
# ---------------------------------------------------------------------------------------


def data_mesh(devices=None) -> Mesh:
    """A one-axis ``Mesh(devices, ("data",))`` over ``devices`` (default: all local ones),
    for data-parallel :func:`fit` and :func:`make_train_step` (S22)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must name at least one device; got an empty list.")
    return Mesh(np.asarray(devices), ("data",))


def _shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the leading batch axis over "data")."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


# ---------------------------------------------------------------------------------------
# Checks, in Python, before tracing.
# ---------------------------------------------------------------------------------------


def _check_config(net, optimizer, loss, method, mesh) -> losses.Loss:
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an fnn.MLP; got {type(net).__name__}.")
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


def _check_batch_size(batch_size: int, mesh: Mesh | None, name: str) -> None:
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(
            f"{name} = {batch_size} must be divisible by the {mesh.size} devices of the mesh, "
            f"so that every device gets an equal share of each batch; use a batch size that "
            f"is a multiple of {mesh.size}."
        )


def _progress_bar(epochs: int, steps: int, progress: bool | None):
    if progress is None:
        progress = epochs * steps >= 1000 and sys.stderr.isatty()
    if not progress:
        return None
    try:  # tqdm is an optional extra ("data"): without it, train silently.
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, unit="epoch", desc="fit", leave=False)
