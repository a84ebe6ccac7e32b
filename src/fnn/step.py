r"""One step of training with the hand-written gradient and optax (S21, S24), and the
checks every training entry point shares.

:func:`train_step` ``(net, params, x, y, optimizer, opt_state, *, ...)`` is one step of
gradient descent, a pure function; :func:`make_train_step` ``(net, optimizer, *, ...)``
returns it compiled by ``jax.jit`` (data-parallel over a mesh, S22; over several processes,
S30) as ``step(params, x, y, opt_state)``. :func:`fnn.training.fit` runs :func:`update` (the
step after its checks) in a compiled loop. Both functions are re-exported by
:mod:`fnn.training`, their home in the documentation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from fnn import derivatives, distributed, extensions, losses
from fnn._checks import check_finite, check_input, check_number, check_params
from fnn.derivatives import value_and_grad
from fnn.network import MLP, Params, check_net

__all__ = ["METHODS", "make_train_step", "train_step", "update"]

METHODS = derivatives.METHODS
"""The gradient engines a training step accepts as ``method``: ``"reverse"``, ``"explicit"``,
``"forward"``."""


def train_step(
    net: MLP,
    params: Params,
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    opt_state: optax.OptState,
    *,
    loss: str | losses.Loss = "l2",
    method: str = "reverse",
    max_norm: float | None = None,
    noise_multiplier: float | None = None,
    key: jax.Array | None = None,
):
    r"""One step of gradient descent with the hand-written gradient (S21), clipped (S24).

    .. math::  L, ∇_θ L = \mathrm{value\_and\_grad}(θ; x, y), \qquad
               Δθ, s ← \mathrm{optimizer.update}(∇_θ L, s, θ), \qquad θ ← θ + Δθ.

    With ``max_norm = C`` the gradient is :func:`fnn.extensions.clipped_grad`'s
    ``(1/B) Σ_b ∇_θ L_b · min(1, C/‖∇_θ L_b‖)`` instead (``method`` must be ``"reverse"``),
    plus its Gaussian noise drawn from ``key`` when ``noise_multiplier`` is given; ``L`` is the
    unclipped batch loss either way.

    A pure function: it jit-compiles with ``net`` and ``optimizer`` static (see
    :func:`make_train_step`). Integer features ``x`` are cast to the parameters' dtype.

    Args:
      net, params: the network and its parameters.
      x, y: a batch ``(B, D)`` and its targets.
      optimizer: any optax ``GradientTransformation``; ``opt_state`` its state.
      loss: a loss name of :mod:`fnn.losses` or a :class:`fnn.losses.Loss` record.
      method: ``"reverse"``, ``"explicit"`` or ``"forward"``.
      max_norm, noise_multiplier, key: DP-SGD's clipping norm, noise and noise key.

    Returns:
      ``(params, opt_state, L)``: the updated parameters and optimizer state, and the
      batch loss ``L`` at the parameters *before* the update.

    Raises:
      TypeError, ValueError: a bad argument (named); ``max_norm`` or ``noise_multiplier``
        not a finite number > 0; ``max_norm`` with a ``method`` other than ``"reverse"``;
        ``noise_multiplier`` without ``max_norm``; ``key`` without ``noise_multiplier`` or
        the other way round.
    """
    loss_fn = check_config(net, optimizer, loss, method, None)
    max_norm, noise_multiplier = check_clipping(max_norm, noise_multiplier, method)
    if noise_multiplier is None and key is not None:
        raise ValueError("key is for the noise: pass max_norm and noise_multiplier too.")
    check_params(net, params)
    x, y = check_data(net, params, loss_fn, x, y)
    return update(net, params, x, y, optimizer, opt_state, loss, method, max_norm,
                   noise_multiplier, key)  # fmt: skip


def update(net, params, x, y, optimizer, opt_state, loss, method, max_norm, noise, key):
    """Unchecked: :func:`train_step` after its checks: what every compiled step and epoch runs."""
    if max_norm is None:
        L, grads = value_and_grad(net, params, x, y, loss=loss, method=method)
        grads = grads["params"]
    else:
        L, grads = extensions.clipped_grad(
            net, params, x, y, loss=loss, max_norm=max_norm, noise_multiplier=noise, key=key
        )
    # Optimizers that take extra arguments get the batch (fnn.optim's curvature needs it).
    batch = {"x": x, "y": y} if isinstance(optimizer, optax.GradientTransformationExtraArgs) else {}
    updates, opt_state = optimizer.update(grads, opt_state, params, **batch)
    return optax.apply_updates(params, updates), opt_state, L


def make_train_step(
    net: MLP,
    optimizer: optax.GradientTransformation,
    *,
    loss: str | losses.Loss = "l2",
    method: str = "reverse",
    mesh: Mesh | None = None,
    max_norm: float | None = None,
) -> Callable:
    """:func:`train_step` compiled by ``jax.jit`` for one network, optimizer, loss and method
    (S21; data-parallel over a mesh, S22; over several processes, S30).

    Args:
      net: the architecture.
      optimizer: any optax ``GradientTransformation``.
      loss: a loss name of :mod:`fnn.losses` or a :class:`fnn.losses.Loss` record.
      method: ``"reverse"``, ``"explicit"`` or ``"forward"`` (see :func:`fnn.value_and_grad`).
      mesh: optional ``Mesh`` with one axis ``"data"``: the batch is sharded along it, the
        parameters and optimizer state are replicated (S22). With several processes it
        defaults to ``data_mesh()`` over the devices of all of them (S30).
      max_norm: ``C > 0`` to clip every example's gradient to norm ``C`` (S24, see
        :func:`train_step`; ``method="reverse"`` only), or ``None``. Clipping only: the step
        adds no noise (for DP-SGD's noise use :func:`fit`, or :func:`train_step` with a key).

    Returns:
      ``step(params, x, y, opt_state) -> (params, opt_state, loss)`` for a batch ``x`` of
      shape ``(B, D)`` (integer features are cast to the parameters' dtype). It checks its
      inputs in Python, once, before calling the compiled step. With several processes
      each one passes its own ``B`` rows (the same ``B`` in every process): the global batch
      is their concatenation in process order, and ``loss`` and the gradient are its means.

    Raises:
      TypeError, ValueError: a bad argument (named in the message), here or when ``step``
        is called (wrong shapes; a global batch not divisible by the mesh's devices).

    >>> import fnn, jax, optax
    >>> net = fnn.MLP((2, 8, 1), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> optimizer = optax.adam(1e-2)
    >>> step = make_train_step(net, optimizer)
    >>> params, state, L = step(params, jnp.ones((4, 2)), jnp.ones((4, 1)), optimizer.init(params))
    """
    mesh = distributed.default_mesh(mesh)
    loss_fn = check_config(net, optimizer, loss, method, mesh)
    max_norm, _ = check_clipping(max_norm, None, method)
    compiled = _compiled_step(net, optimizer, loss, method, mesh, max_norm)

    def checked_step(params, x, y, opt_state):
        check_params(net, params)
        x, y = check_data(net, params, loss_fn, x, y)
        if jax.process_count() == 1:
            distributed.check_batch_size(x.shape[0], mesh, "x.shape[0]")
        else:  # every process passes x.shape[0] rows of the global batch
            rows = x.shape[0] * jax.process_count()
            distributed.check_batch_size(rows, mesh, "the global batch x.shape[0] × processes")
        if mesh is not None:
            replicated, batch = distributed.shardings(mesh)
            params, opt_state = jax.device_put((params, opt_state), replicated)
            x, y = distributed.global_data((x, y), batch)
        return compiled(params, x, y, opt_state)

    return checked_step


def _compiled_step(net, optimizer, loss, method, mesh, max_norm):
    def step(params, x, y, opt_state):
        return update(net, params, x, y, optimizer, opt_state, loss, method, max_norm,
                       None, None)  # fmt: skip

    if mesh is None:
        return jax.jit(step)
    replicated, batch = distributed.shardings(mesh)
    return jax.jit(
        step,
        in_shardings=(replicated, batch, batch, replicated),
        out_shardings=(replicated, replicated, replicated),
    )


def check_config(net, optimizer, loss, method, mesh) -> losses.Loss:
    """The loss record; ``TypeError``/``ValueError`` for a bad net, optimizer, method or mesh."""
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


def check_clipping(max_norm, noise_multiplier, method):
    """``(max_norm, noise_multiplier)`` as floats or ``None`` (hashable: they key the compiled
    epoch; traced values stay as they are); each a finite number > 0, the noise only with
    clipping, clipping only with ``method="reverse"`` (its per-example norms come from the
    reverse pass, S24)."""
    if noise_multiplier is not None:
        check_number(noise_multiplier, "noise_multiplier", positive=True)
        if max_norm is None:
            raise ValueError(
                f"noise_multiplier = {noise_multiplier!r} needs max_norm: the noise's standard "
                "deviation is noise_multiplier × max_norm / batch size."
            )
        noise_multiplier = _as_float(noise_multiplier)
    if max_norm is not None:
        check_number(max_norm, "max_norm", positive=True)
        if method != "reverse":
            raise ValueError(
                f"max_norm needs method='reverse' (the per-example norms come from the reverse "
                f"pass); got method={method!r}."
            )
        max_norm = _as_float(max_norm)
    return max_norm, noise_multiplier


def _as_float(value):
    return value if isinstance(value, jax.core.Tracer) else float(value)


def check_data(net, params, loss_fn, x, y):
    """Check ``x (N, D)`` (float or integer) and ``y`` against ``net`` and the loss; cast both
    to the params' dtype (labels stay integers)."""
    if np.ndim(x) != 2:
        raise ValueError(
            f"x must be a batch of shape (N, D) with D = {net.in_features}; "
            f"got {tuple(np.shape(x))}."
        )
    check_input(net, x, floating=False)
    losses.check_target(loss_fn, (np.shape(x)[0], net.out_features), y)
    # The same refusal from fit and from make_train_step's step (traced values pass).
    check_finite(x, "x")
    check_finite(y, "y")
    dtype = jnp.result_type(params[0]["W"])
    x = jnp.asarray(x, dtype)
    y = jnp.asarray(y, dtype) if loss_fn.target == "vector" else jnp.asarray(y)
    return x, y
