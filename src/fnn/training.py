r"""Training with the hand-written gradients and optax (S21), data-parallel when asked (S22).

The recap of the lecture, as code: gradient descent on the mean loss of a mini-batch,

.. math::  L(θ) = \frac{1}{B} \sum_{n=1}^{B} L(nn_θ(x_n), y_n), \qquad
           θ ← θ + \mathrm{update}(∇_θ L),

where ``∇_θ L`` comes from fnn's own backpropagation (:func:`fnn.value_and_grad`, method
``"reverse"``, ``"explicit"`` or ``"forward"``) and ``update`` is any optax
``GradientTransformation``: ``optax.sgd(η)`` gives ``−η ∇L``, ``optax.sgd(η, momentum=0.9)``
the heavy ball, ``optax.adam(η)`` the adaptive learning rates.

Every training function follows fnn's calling convention: the network, its parameters and the
data first, ``net, params, x, y``, then what this module adds (the optimizer, and for one
step its state), and every option keyword-only:

* :func:`train_step` ``(net, params, x, y, optimizer, opt_state, *, ...)`` is one step, a
  pure function (it lives in :mod:`fnn.step` with :func:`make_train_step`; both are
  re-exported here);
* :func:`make_train_step` ``(net, optimizer, *, ...)`` returns it compiled by ``jax.jit`` for
  a fixed network, optimizer, loss and method, as ``step(params, x, y, opt_state)``;
* :func:`fit` ``(net, params, x, y, optimizer, *, key, ...)`` runs epochs of shuffled
  mini-batches, driven by the PRNG key ``key``, and returns the trained parameters and the
  history of losses.

Clipping and noise (S24): with ``max_norm = C`` the gradient of every step is DP-SGD's
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
examples; the global data set is their concatenation in process order. Before training,
:func:`fit` makes sure that every process passed the same settings; after its first epoch,
that their replicated parameters are still equal (an optimizer's hyperparameters cannot be
compared otherwise). Only process 0 shows progress and writes checkpoints.

Checkpoints (S30, :mod:`fnn.checkpoint`): ``fit(..., checkpoint=path, every=k)`` writes the
training state to ``path`` every ``k`` epochs and after the last one; called again with the
same arguments, ``fit`` resumes from it and ends with exactly the parameters of an
uninterrupted run.
"""

from __future__ import annotations

import functools
import sys
from typing import NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from fnn import checkpoint as fnn_checkpoint
from fnn import distributed, losses, step
from fnn._checks import check_key, check_params, check_positive_int
from fnn.distributed import data_mesh, initialize_distributed
from fnn.network import MLP, Params
from fnn.step import METHODS, make_train_step, train_step

__all__ = [
    "METHODS",
    "History",
    "data_mesh",  # from fnn.distributed
    "fit",
    "initialize_distributed",  # from fnn.distributed
    "make_train_step",  # from fnn.step
    "train_step",  # from fnn.step
]


class History(NamedTuple):
    """The losses seen during :func:`fit` (S21): ``loss[k]`` is the mini-batch loss at step
    k (before that step's update), ``epoch_loss[e]`` the mean over the steps of epoch e."""

    loss: np.ndarray
    """The mini-batch loss at each step ``k``, before that step's update."""
    epoch_loss: np.ndarray
    """The mean of ``loss`` over the steps of each epoch ``e``."""


class _Run(NamedTuple):
    """What :func:`fit` runs, checked: the compiled epoch's configuration and the loop's."""

    net: MLP
    optimizer: optax.GradientTransformation
    loss: str | losses.Loss
    method: str
    mesh: Mesh | None
    steps: int
    batch_size: int
    max_norm: float | None
    noise_multiplier: float | None
    key: jax.Array
    epochs: int
    checkpoint: str | None
    every: int


# ---------------------------------------------------------------------------------------
# The training loop.
# ---------------------------------------------------------------------------------------


def fit(
    net: MLP,
    params: Params,
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    *,
    key: jax.Array,
    loss: str | losses.Loss = "l2",
    method: str = "reverse",
    epochs: int = 10,
    batch_size: int | None = 32,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    checkpoint=None,
    every: int = 1,
    max_norm: float | None = None,
    noise_multiplier: float | None = None,
) -> tuple[Params, History]:
    """Train ``params`` on ``(x, y)`` with shuffled mini-batches (S21), resumably (S30).

    Each epoch draws a fresh permutation of the N examples from ``fold_in(key, epoch)`` and
    takes ``N // batch_size`` steps of :func:`train_step`; the ``N mod batch_size``
    examples left over are skipped in that epoch only (a new permutation next epoch), so
    that every batch has the same shape and the step compiles once. One epoch is one
    compiled ``lax.scan`` over its steps: one dispatch and one look at the losses per epoch.
    ``x`` — floats or integers (pixel values, say) — and a vector ``y`` are cast to the
    parameters' dtype. The same key, data and arguments give the same result.

    DP-SGD's clipping and noise (S24): with ``max_norm = C`` every step's gradient is
    :func:`fnn.extensions.clipped_grad`'s clipped mean; with ``noise_multiplier = σ`` too it
    gets Gaussian noise of standard deviation ``σ C / B`` from step ``k``'s key
    ``split(fold_in(fold_in(key, epoch), 1), steps)[k]``, so the noise, like the shuffling,
    is a function of ``key`` alone: the same in every process of a multi-process run (they
    share the key and draw it inside the one compiled program) and the same after a resume.
    No privacy accountant: the ``(ε, δ)`` of a run is for one to compute from ``σ``, the
    sampling rate ``batch_size / N`` and the number of steps (and batches here are a shuffle,
    not Poisson sampling).

    Args:
      net, params: the network and its initial parameters.
      x: inputs ``(N, D)``, float or integer; with several processes, this process's examples.
      y: targets, ``(N, M)`` for a vector loss or integer labels ``(N,)``.
      optimizer: any optax ``GradientTransformation`` (``optax.sgd``, ``optax.adam``, …).
      key: PRNG key that drives the shuffling (and the noise); required.
      loss: a loss name of :mod:`fnn.losses` or a :class:`fnn.losses.Loss` record (a
        checkpoint stores it by its name).
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
      checkpoint: a file path (its directory must exist; checked before the first epoch):
        write the training state there (atomically; process 0 only) every ``every`` epochs
        and after the last, and resume from it when it exists. The run resumed must have
        the same network, key, data (a digest of ``x`` and ``y`` is stored), batch size,
        loss, method, ``max_norm``, ``noise_multiplier`` and optimizer state structure and
        dtypes (else ``ValueError``; a changed learning rate is not in the file and goes
        unnoticed); the ``params`` passed are then replaced by the checkpoint's.
        ``fnn.load(checkpoint)`` reads the network and parameters from it.
      every: write the checkpoint every this many epochs, a positive int.
      max_norm: ``C``, a finite number > 0: clip every example's gradient to norm ``C``
        (``method="reverse"`` only); ``None`` (default): no clipping.
      noise_multiplier: ``σ``, a finite number > 0: add DP-SGD's noise ``N(0, (σ C / B)² I)``
        to every clipped mean gradient (needs ``max_norm``); ``None`` (default): no noise.

    Returns:
      ``(params, history)``: the trained parameters and a :class:`History` (of the whole
      run, resumed or not).

    Raises:
      TypeError, ValueError: a bad argument, named in the message, before anything runs;
        with several processes, also settings that differ between processes (every process
        raises, naming the setting and the processes), and parameters that differ after
        the first epoch (optimizers with other hyperparameters).
      FloatingPointError: the loss became NaN or ±inf; the message names epoch and step.

    >>> import fnn, jax, jax.numpy as jnp, optax
    >>> net = fnn.MLP((1, 3, 1), ("tanh", "identity"))
    >>> x = jnp.linspace(-1, 1, 50)[:, None]
    >>> params = fnn.init(jax.random.key(0), net)
    >>> params, history = fit(net, params, x, x**2, optax.adam(0.05), key=jax.random.key(1),
    ...                       epochs=100, batch_size=10)
    >>> bool(history.epoch_loss[-1] < 0.1 * history.epoch_loss[0])
    True
    """
    mesh = distributed.default_mesh(mesh)
    loss_fn = step.check_config(net, optimizer, loss, method, mesh)
    check_key(key)
    check_params(net, params)
    max_norm, noise_multiplier = step.check_clipping(max_norm, noise_multiplier, method)
    epochs, every = check_positive_int(epochs, "epochs"), check_positive_int(every, "every")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    x, y, N, digest = _check_fit_data(net, params, loss_fn, x, y, mesh, checkpoint is not None)
    run = _Run(net, optimizer, loss, method, mesh, 0, batch_size, max_norm, noise_multiplier,
               key, epochs, checkpoint, every)  # fmt: skip
    _check_processes_agree(run, params, loss_fn.name)  # before any collective they may skip
    batch_size = _check_batch_size(N if batch_size is None else batch_size, N, mesh)
    checkpoint = fnn_checkpoint.check_checkpoint_path(checkpoint)
    if checkpoint is not None and jax.process_count() > 1:
        digest = distributed.combined_digest(digest)
    run = run._replace(steps=N // batch_size, batch_size=batch_size, checkpoint=checkpoint)
    settings = {
        "N": N, "batch_size": batch_size, "loss": loss_fn.name, "method": method,
        "max_norm": max_norm, "noise_multiplier": noise_multiplier, "data": digest,
    }  # fmt: skip
    params, opt_state, start, step_losses = _start(run, params, settings)
    params, step_losses = _train(run, params, opt_state, x, y, start, step_losses, progress,
                                 settings)  # fmt: skip
    losses_ = np.asarray(step_losses).reshape(len(step_losses), run.steps)
    return params, History(losses_.reshape(-1), losses_.mean(axis=1))


def _start(run: _Run, params, settings):
    """``(params, opt_state, start epoch, step losses so far)``: fresh, or resumed from the
    checkpoint (S30)."""
    opt_state = run.optimizer.init(params)
    if run.checkpoint is None:
        return params, opt_state, 0, []
    found = fnn_checkpoint.resume(run.checkpoint, run.net, params, opt_state, key=run.key,
                                  run=settings, steps=run.steps)  # fmt: skip
    if found is None:
        return params, opt_state, 0, []
    params, opt_state, start, L = found
    if start > run.epochs:
        raise ValueError(
            f"{run.checkpoint}: the checkpoint is at epoch {start}, past epochs = {run.epochs}."
        )
    return params, opt_state, start, list(np.asarray(L).reshape(start, run.steps))


def _train(run: _Run, params, opt_state, x, y, start, step_losses, progress, settings):
    """The epochs from ``start`` on: run, look at the losses, checkpoint, show progress."""
    run_epoch = _epoch_runner(run)
    params, opt_state, x, y = _place(run.mesh, params, opt_state, x, y)
    bar = _progress_bar(run.epochs, run.steps, progress, start)
    try:
        for epoch in range(start, run.epochs):
            params, opt_state, L = run_epoch(
                params, opt_state, jax.random.fold_in(run.key, epoch), x, y
            )
            if epoch == start:
                _check_replicas_agree(params)
            step_losses.append(_finite_losses(np.asarray(L), epoch, run))
            _maybe_checkpoint(run, epoch + 1, params, opt_state, step_losses, settings)
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{step_losses[-1].mean():.4g}")
    finally:
        if bar is not None:
            bar.close()
    return params, step_losses


def _maybe_checkpoint(run: _Run, done: int, params, opt_state, step_losses, settings) -> None:
    """Write the checkpoint after every ``every``-th epoch and after the last (S30)."""
    if run.checkpoint is None or (done % run.every and done != run.epochs):
        return
    fnn_checkpoint.save_state(
        run.checkpoint, run.net, params, opt_state, epoch=done, key=run.key,
        loss=np.concatenate(step_losses), run=settings,
    )  # fmt: skip


def _epoch_runner(run: _Run):
    config = (run.net, run.optimizer, run.loss, run.method, run.mesh, run.steps,
              run.batch_size, run.max_norm, run.noise_multiplier)  # fmt: skip
    try:  # a second fit with the same configuration reuses the compiled epoch
        return _cached_epoch_fn(*config)
    except TypeError:  # an optimizer that cannot be hashed
        return _epoch_fn(*config)


def _place(mesh, params, opt_state, x, y):
    """Parameters and optimizer state replicated over the mesh; in one process the data too
    (with several, it is already a global array sharded by batch)."""
    if mesh is None:
        return params, opt_state, x, y
    replicated, _ = distributed.shardings(mesh)
    params, opt_state = jax.device_put((params, opt_state), replicated)
    if jax.process_count() == 1:
        x, y = jax.device_put((x, y), replicated)
    return params, opt_state, x, y


def _finite_losses(L: np.ndarray, epoch: int, run: _Run) -> np.ndarray:
    if not np.all(np.isfinite(L)):
        bad = int(np.argmin(np.isfinite(L)))
        raise FloatingPointError(
            f"fit: the loss became {L[bad]} at epoch {epoch + 1} of {run.epochs}, step "
            f"{bad + 1} of {run.steps} (counting from 1); try a smaller learning rate."
        )
    return L


def _epoch_fn(net, optimizer, loss, method, mesh, steps, batch_size, max_norm, noise):
    """One epoch as one compiled function: shuffle, then ``lax.scan`` over the steps (with
    one noise key per step when ``noise`` (σ) is set, S24)."""
    batch_sharding = None if mesh is None else distributed.shardings(mesh)[1]

    def run_epoch(params, opt_state, key, x, y):
        order = jax.random.permutation(key, x.shape[0])[: steps * batch_size]
        xs = {"idx": order.reshape(steps, batch_size)}
        if noise is not None:  # a stream apart from the permutation's
            xs["key"] = jax.random.split(jax.random.fold_in(key, 1), steps)

        def one_step(carry, xs):
            params, opt_state = carry
            xb, yb = x[xs["idx"]], y[xs["idx"]]
            if batch_sharding is not None:
                xb, yb = jax.lax.with_sharding_constraint((xb, yb), batch_sharding)
            params, opt_state, L = step.update(net, params, xb, yb, optimizer, opt_state, loss,
                                           method, max_norm, noise, xs.get("key"))  # fmt: skip
            return (params, opt_state), L

        (params, opt_state), L = jax.lax.scan(one_step, (params, opt_state), xs)
        return params, opt_state, L

    if mesh is None:
        return jax.jit(run_epoch)
    replicated, _ = distributed.shardings(mesh)
    return jax.jit(run_epoch, out_shardings=(replicated, replicated, replicated))


_cached_epoch_fn = functools.lru_cache(maxsize=32)(_epoch_fn)


# ---------------------------------------------------------------------------------------
# Several processes agree (S30).
# ---------------------------------------------------------------------------------------


def _check_processes_agree(run: _Run, params, loss_name: str) -> None:
    """Every setting that can be compared is the same in every process, before training."""
    if jax.process_count() == 1:
        return
    opt_state = jax.eval_shape(run.optimizer.init, params)
    distributed.check_agreement(
        {
            "key": np.asarray(jax.random.key_data(run.key) if _typed(run.key) else run.key),
            "epochs": run.epochs,
            "batch_size": run.batch_size,
            "loss": loss_name,
            "method": run.method,
            "max_norm": run.max_norm,
            "noise_multiplier": run.noise_multiplier,
            "checkpoint (given or not)": run.checkpoint is not None,
            "every": run.every,
            "net": repr(run.net),
            "params": [np.asarray(leaf) for leaf in jax.tree.leaves(params)],
            "optimizer state (structure)": repr(opt_state),
        },
        "fit",
    )


def _check_replicas_agree(params) -> None:
    """The replicated parameters are equal in every process after the first epoch: what
    cannot be compared before (an optimizer's learning rate, say) shows here."""
    if jax.process_count() == 1:
        return
    local = [np.asarray(leaf.addressable_shards[0].data) for leaf in jax.tree.leaves(params)]
    distributed.check_agreement(
        {"the parameters after the first epoch": local},
        "fit",
        hint="the optimizers differ (another learning rate or other hyperparameters?); "
        "pass the same optimizer in every process",
    )


def _typed(key) -> bool:
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


# ---------------------------------------------------------------------------------------
# Checks, in Python, before tracing.
# ---------------------------------------------------------------------------------------


def _check_fit_data(net, params, loss_fn, x, y, mesh, digest: bool):
    """:func:`fnn.step.check_data`, then :func:`fnn.distributed.assemble`: with several processes,
    every one learns whether every other one passed, and their rows become one global data
    set. Returns ``(x, y, N, digest)``: N global, this process's data digest when asked
    for, else ``None``."""
    error = None
    try:
        x, y = step.check_data(net, params, loss_fn, x, y)
    except (TypeError, ValueError) as err:
        error = err
    local = fnn_checkpoint.data_digest(x, y) if digest and error is None else None
    (x, y), N = distributed.assemble((x, y), error, mesh)
    return x, y, N, local


def _check_batch_size(batch_size: int, N: int, mesh) -> int:
    if batch_size > N:
        raise ValueError(
            f"batch_size must be at most the number of examples N = {N}; got {batch_size}."
        )
    distributed.check_batch_size(batch_size, mesh, "batch_size")
    return batch_size


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
