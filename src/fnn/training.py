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

Clipping and noise (S24): with ``clip_norm = C`` the gradient of every step is DP-SGD's
clipped mean :func:`fnn.extensions.clipped_grad`, every example's gradient scaled to norm at
most ``C``; with ``noise_multiplier = σ`` as well, :func:`fit` adds Gaussian noise of standard
deviation ``σ C / B`` drawn from its key, one fresh key per step. There is no privacy
accountant here: turning ``(σ, B, N, steps)`` into an ``(ε, δ)`` guarantee is its job.

Data parallelism (S22): given a ``jax.sharding.Mesh`` with one axis ``"data"`` (see
:func:`fnn.distributed.data_mesh`), every mini-batch is split across the mesh's devices and
the parameters and optimizer state are replicated. The program is the same — ``jax.jit``
partitions the hand-written backward pass and sums the per-device partial gradients — so
the gradient is the mean over the *global* batch, whatever the number of devices.

Several processes (S30): when JAX runs as several processes (``jax.distributed``, started by
:func:`fnn.distributed.initialize_distributed`), :func:`fit` and :func:`make_train_step` train
on one global mesh over the devices of all processes. Each process passes only *its own*
examples; the global data set is their concatenation in process order. The parameters are
replicated, the permutation of every epoch comes from the shared key inside the compiled
program (so every process agrees on it), and only process 0 shows progress and writes
checkpoints. The result equals one process training on all the data.

Checkpoints (S30): ``fit(..., checkpoint=path, every=k)`` writes the parameters, the optimizer
state, the epoch, the key and the losses so far to ``path`` (an :func:`fnn.save` file, written
atomically) every ``k`` epochs and after the last one; called again with the same arguments,
``fit`` resumes from it and ends with exactly the parameters of an uninterrupted run.

How the pieces fit: this module is the training loop and its checks; it stands on three
others and none of them knows about it.

* :mod:`fnn.derivatives` gives the gradient of every step;
* :mod:`fnn.distributed` (S22, S30) knows devices and processes: the mesh and its two
  shardings, the batch-size-vs-devices check, the assembly of every process's rows into one
  global data set, "process 0 does it, every process learns the outcome", and
  ``initialize_distributed`` (``data_mesh`` and ``initialize_distributed`` are re-exported
  here, their old home);
* :mod:`fnn.io` (S30) holds the checkpoint *file* (``write_checkpoint``/``read_checkpoint``:
  format, atomic write, validation against the run). What stays here is fit's own use of it
  — when to write, resuming in every process (``_resume``) — because it is fit's logic.

The module is longer than ~300 lines because :func:`fit` and its Python-side checks (every
argument refused with a message before anything is traced) are one concept and read best
together.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from fnn import derivatives, distributed, extensions, losses
from fnn import io as fnn_io
from fnn._checks import (
    check_finite,
    check_input,
    check_key,
    check_number,
    check_params,
    check_positive_int,
)
from fnn.derivatives import value_and_grad
from fnn.distributed import data_mesh, initialize_distributed
from fnn.network import MLP, Params, check_net

__all__ = [
    "METHODS",
    "History",
    "data_mesh",  # from fnn.distributed
    "fit",
    "initialize_distributed",  # from fnn.distributed
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
    clip_norm: float | None = None,
    noise_multiplier: float | None = None,
    key: jax.Array | None = None,
):
    r"""One step of gradient descent with the hand-written gradient (S21), clipped (S24).

    .. math::  L, ∇_θ L = \mathrm{value\_and\_grad}(θ; x, y), \qquad
               Δθ, s ← \mathrm{optimizer.update}(∇_θ L, s, θ), \qquad θ ← θ + Δθ.

    With ``clip_norm = C`` the gradient is :func:`fnn.extensions.clipped_grad`'s
    ``(1/B) Σ_b ∇_θ L_b · min(1, C/‖∇_θ L_b‖)`` instead (``method`` must be ``"reverse"``),
    plus its Gaussian noise drawn from ``key`` when ``noise_multiplier`` is given; ``L`` is the
    unclipped batch loss either way.

    A pure function: it jit-compiles with ``net`` and ``optimizer`` static (see
    :func:`make_train_step`).

    Returns:
      ``(params, opt_state, L)``: the updated parameters and optimizer state, and the
      batch loss ``L`` at the parameters *before* the update.

    Raises:
      TypeError, ValueError: ``clip_norm`` or ``noise_multiplier`` not a finite number > 0;
        ``clip_norm`` with a ``method`` other than ``"reverse"``; ``noise_multiplier`` without
        ``clip_norm``; ``key`` without ``noise_multiplier`` or the other way round.
    """
    _check_clipping(clip_norm, noise_multiplier, method)
    if clip_norm is None:
        if key is not None:
            raise ValueError("key is for the noise: pass clip_norm and noise_multiplier too.")
        L, grads = value_and_grad(net, params, x, y, loss=loss, method=method)
        grads = grads["params"]
    else:
        L, grads = extensions.clipped_grad(
            net, params, x, y, clip_norm, loss, noise_multiplier=noise_multiplier, key=key
        )
    # Optimizers that take extra arguments get the batch (fnn.optim's curvature needs it).
    batch = {"x": x, "y": y} if isinstance(optimizer, optax.GradientTransformationExtraArgs) else {}
    updates, opt_state = optimizer.update(grads, opt_state, params, **batch)
    return optax.apply_updates(params, updates), opt_state, L


def make_train_step(
    net: MLP,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "l2",
    method: str = "reverse",
    mesh: Mesh | None = None,
    clip_norm: float | None = None,
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
      clip_norm: ``C > 0`` to clip every example's gradient to norm ``C`` (S24, see
        :func:`train_step`; ``method="reverse"`` only), or ``None``. Clipping only: the step
        adds no noise (for DP-SGD's noise use :func:`fit`, or :func:`train_step` with a key).

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
    mesh = distributed.default_mesh(mesh)
    loss_fn = _check_config(net, optimizer, loss, method, mesh)
    clip_norm, _ = _check_clipping(clip_norm, None, method)

    def step(params, opt_state, x, y):
        return train_step(
            net, params, opt_state, x, y, optimizer, loss=loss, method=method, clip_norm=clip_norm
        )

    if mesh is None:
        compiled = jax.jit(step)
    else:
        replicated, batch = distributed.shardings(mesh)
        compiled = jax.jit(
            step,
            in_shardings=(replicated, replicated, batch, batch),
            out_shardings=(replicated, replicated, replicated),
        )

    def checked_step(params, opt_state, x, y):
        check_params(net, params)
        x, y = _check_data(net, params, loss_fn, x, y)
        if jax.process_count() == 1:
            distributed.check_batch_size(x.shape[0], mesh, "x.shape[0]")
        else:  # every process passes x.shape[0] rows of the global batch
            rows = x.shape[0] * jax.process_count()
            distributed.check_batch_size(rows, mesh, "the global batch x.shape[0] × processes")
        if mesh is not None:
            replicated, batch = distributed.shardings(mesh)
            params, opt_state = jax.device_put((params, opt_state), replicated)
            x, y = distributed.global_data((x, y), batch)
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
    clip_norm: float | None = None,
    noise_multiplier: float | None = None,
) -> tuple[Params, History]:
    """Train ``params`` on ``(x, y)`` with shuffled mini-batches (S21), resumably (S30).

    Each epoch draws a fresh permutation of the N examples from ``fold_in(key, epoch)`` and
    takes ``N // batch_size`` steps of :func:`train_step`; the ``N mod batch_size``
    examples left over are skipped in that epoch only (a new permutation next epoch), so
    that every batch has the same shape and the step compiles once. One epoch is one
    compiled ``lax.scan`` over its steps: one dispatch and one look at the losses per epoch.
    ``x`` (and a vector ``y``) are cast to the parameters' dtype. The same key, data and
    arguments give the same result.

    DP-SGD's clipping and noise (S24): with ``clip_norm = C`` every step's gradient is
    :func:`fnn.extensions.clipped_grad`'s clipped mean; with ``noise_multiplier = σ`` too it
    gets Gaussian noise of standard deviation ``σ C / B`` from step ``k``'s key
    ``split(fold_in(fold_in(key, epoch), 1), steps)[k]``, so the noise, like the shuffling,
    is a function of ``key`` alone: the same in every process of a multi-process run (they
    share the key and draw it inside the one compiled program) and the same after a resume.
    No privacy accountant: the ``(ε, δ)`` of a run is for one to compute from ``σ``, the
    sampling rate ``batch_size / N`` and the number of steps (and batches here are a shuffle,
    not Poisson sampling).

    Args:
      key: PRNG key that drives the shuffling (and the noise).
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
        run resumed must have the same network, key, data size, batch size, loss, method,
        ``clip_norm``, ``noise_multiplier`` and optimizer state structure (else
        ``ValueError``; a changed learning rate is not in the file and goes unnoticed); the
        ``params`` passed are then replaced by the checkpoint's. ``fnn.load(checkpoint)``
        reads the network and parameters from it.
      every: write the checkpoint every this many epochs, a positive int.
      clip_norm: ``C``, a finite number > 0: clip every example's gradient to norm ``C``
        (``method="reverse"`` only); ``None`` (default): no clipping.
      noise_multiplier: ``σ``, a finite number > 0: add DP-SGD's noise ``N(0, (σ C / B)² I)``
        to every clipped mean gradient (needs ``clip_norm``); ``None`` (default): no noise.

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
    mesh = distributed.default_mesh(mesh)
    loss_fn = _check_config(net, optimizer, loss, method, mesh)
    check_key(key)
    check_params(net, params)
    clip_norm, noise_multiplier = _check_clipping(clip_norm, noise_multiplier, method)
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
    distributed.check_batch_size(batch_size, mesh, "batch_size")

    steps = N // batch_size
    config = (net, optimizer, loss, method, mesh, steps, batch_size, clip_norm, noise_multiplier)
    try:  # a second fit with the same configuration reuses the compiled epoch
        run_epoch = _cached_epoch_fn(*config)
    except TypeError:  # an optimizer that cannot be hashed
        run_epoch = _epoch_fn(*config)
    opt_state = optimizer.init(params)
    start, step_losses = 0, []
    if checkpoint is not None:
        run = {"N": N, "batch_size": batch_size, "loss": loss, "method": method,
               "clip_norm": clip_norm, "noise_multiplier": noise_multiplier}  # fmt: skip
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
        replicated, _ = distributed.shardings(mesh)
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


def _epoch_fn(
    net, optimizer, loss, method, mesh, steps, batch_size, clip_norm=None, noise_multiplier=None
):
    """One epoch as one compiled function: shuffle, then ``lax.scan`` over the steps (with
    one noise key per step when ``noise_multiplier`` is set, S24)."""
    batch_sharding = None if mesh is None else distributed.shardings(mesh)[1]

    def run_epoch(params, opt_state, key, x, y):
        order = jax.random.permutation(key, x.shape[0])[: steps * batch_size]
        xs = {"idx": order.reshape(steps, batch_size)}
        if noise_multiplier is not None:  # a stream apart from the permutation's
            xs["key"] = jax.random.split(jax.random.fold_in(key, 1), steps)

        def one_step(carry, xs):
            params, opt_state = carry
            xb, yb = x[xs["idx"]], y[xs["idx"]]
            if batch_sharding is not None:
                xb, yb = jax.lax.with_sharding_constraint((xb, yb), batch_sharding)
            params, opt_state, L = train_step(
                net, params, opt_state, xb, yb, optimizer, loss=loss, method=method,
                clip_norm=clip_norm, noise_multiplier=noise_multiplier, key=xs.get("key"),
            )  # fmt: skip
            return (params, opt_state), L

        (params, opt_state), L = jax.lax.scan(one_step, (params, opt_state), xs)
        return params, opt_state, L

    if mesh is None:
        return jax.jit(run_epoch)
    replicated, _ = distributed.shardings(mesh)
    return jax.jit(run_epoch, out_shardings=(replicated, replicated, replicated))


_cached_epoch_fn = functools.lru_cache(maxsize=32)(_epoch_fn)


def _resume(path, net, params, opt_state, key, run, steps):
    """The checkpoint's ``(params, opt_state, epoch, losses)`` or ``None`` (S30); with several
    processes, process 0 reads the file and every process gets what it found, bit for bit."""
    found = distributed.on_process_0(
        lambda: fnn_io.read_checkpoint(path, net, params, opt_state, key=key, run=run),
        (TypeError, ValueError),
        ValueError(f"{path}: process 0 refused the checkpoint; see its message."),
    )
    if jax.process_count() == 1:
        return found
    epoch = -1 if found is None else found[2]
    epoch = int(multihost_utils.broadcast_one_to_all(np.int32(epoch)))
    if epoch == -1:
        return None
    template = (params, opt_state, np.zeros(epoch * steps, jnp.result_type(params[0]["W"])))
    tree = template if found is None else (found[0], found[1], found[3])
    params, opt_state, L = distributed.broadcast_exact(tree, template)
    return params, opt_state, epoch, L


def _write_checkpoint(path, *args, **kwargs) -> None:
    """Process 0 writes (S30); every process learns whether it could, so that none waits
    for it in the next epoch's collectives when it could not."""
    distributed.on_process_0(
        lambda: fnn_io.write_checkpoint(path, *args, **kwargs),
        (OSError, TypeError, ValueError),
        OSError(f"{path}: process 0 could not write the checkpoint; see its message."),
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
        distributed.check_mesh(mesh)
    return losses.get(loss)


def _check_clipping(clip_norm, noise_multiplier, method):
    """``(clip_norm, noise_multiplier)`` as floats or ``None`` (hashable: they key the compiled
    epoch; traced values stay as they are); each a finite number > 0, the noise only with
    clipping, clipping only with ``method="reverse"`` (its per-example norms come from the
    reverse pass, S24)."""
    if noise_multiplier is not None:
        check_number(noise_multiplier, "noise_multiplier", positive=True)
        if clip_norm is None:
            raise ValueError(
                f"noise_multiplier = {noise_multiplier!r} needs clip_norm: the noise's standard "
                "deviation is noise_multiplier × clip_norm / batch size."
            )
        noise_multiplier = _as_float(noise_multiplier)
    if clip_norm is not None:
        check_number(clip_norm, "clip_norm", positive=True)
        if method != "reverse":
            raise ValueError(
                f"clip_norm needs method='reverse' (the per-example norms come from the reverse "
                f"pass); got method={method!r}."
            )
        clip_norm = _as_float(clip_norm)
    return clip_norm, noise_multiplier


def _as_float(value):
    return value if isinstance(value, jax.core.Tracer) else float(value)


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
    # The same refusal from fit and from make_train_step's step (traced values pass).
    check_finite(x, "x")
    check_finite(y, "y")
    dtype = jnp.result_type(params[0]["W"])
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype) if loss_fn.target == "vector" else jnp.asarray(y)
    return x, y


def _check_fit_data(net, params, loss_fn, x, y, mesh):
    """:func:`_check_data`, then :func:`fnn.distributed.assemble`: with several
    processes, every one learns whether every other one passed, and their rows become one
    global data set. Returns ``(x, y, N)``, N global."""
    error = None
    try:
        x, y = _check_data(net, params, loss_fn, x, y)
    except (TypeError, ValueError) as err:
        error = err
    (x, y), N = distributed.assemble((x, y), error, mesh)
    return x, y, N


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
