r"""The public derivative entry points: :func:`value_and_grad` and :func:`jacobian` (S17, S18).

Each checks its input once, in Python (:mod:`fnn._checks`), and dispatches to an engine
from one table; the engines check nothing:

* ``method="reverse"`` — :func:`fnn.backprop.reverse`; ``mode="reverse"`` —
  :func:`fnn.backprop.jacobian_reverse` (S17);
* ``method="explicit"`` — :func:`fnn.backprop.explicit`; ``mode="explicit"`` —
  :func:`fnn.backprop.jacobian_explicit`, the lecture's dense chain (S17);
* ``method="forward"`` — :func:`fnn.forward_mode.gradient`; ``mode="forward"`` —
  :func:`fnn.forward_mode.jacobian_forward` (S18);
* ``mode="auto"`` (the default) — the cheaper of forward and reverse by the cost model.

Two of these can explode, and each has a limit as an argument: the explicit engine's
dense matrices (``max_bytes``) and forward mode's one tangent per parameter
(``max_tangents``); both refusals name the cheap alternative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnn import _checks, backprop, cost_model, forward_mode, losses, network
from fnn.network import MLP, Params

__all__ = ["JACOBIAN_MODES", "METHODS", "jacobian", "value_and_grad"]

METHODS = ("reverse", "explicit", "forward")
JACOBIAN_MODES = ("auto", "forward", "reverse", "explicit")


def _check_loss_problem(net: MLP, params, x, y, loss):
    """The checks every function of ``(net, params, x, y, loss)`` shares; returns the
    :class:`fnn.losses.Loss` and ``x``, ``y`` as arrays."""
    network.check_net(net)
    _checks.check_params(net, params)
    _checks.check_input(net, x)
    loss_fn = losses.get(loss)
    x = jnp.asarray(x)
    losses.check_target(loss_fn, (*x.shape[:-1], net.out_features), y)
    losses.check_output_activation(loss_fn, net.activations[-1])
    return loss_fn, x, jnp.asarray(y)


def value_and_grad(
    net: MLP,
    params: Params,
    x,
    y,
    loss="l2",
    method: str = "reverse",
    *,
    max_bytes: int | None = None,
    max_tangents: int | None = None,
    chunk_size: int | None = None,
):
    r"""The batch loss and its gradient w.r.t. every parameter and the input (S17, S18).

    .. math::  L(θ, x) = \frac{1}{B} \sum_{b=1}^{B} L(nn_θ(x_b), y_b)

    Args:
      net: the architecture.
      params: its parameters (as :func:`fnn.init` makes them).
      x: one example ``(D,)`` or a batch ``(B, D)``, real floating point.
      y: the target(s): ``(M,)``/``(B, M)`` vectors, or integer labels ``()``/``(B,)`` for a
        loss on labels.
      loss: a name from :func:`fnn.losses.names` (or a :class:`fnn.losses.Loss`). A loss on
        logits (``softmax_cross_entropy``) needs the output activation ``"identity"``.
      method: ``"reverse"`` (structured, fast), ``"explicit"`` (dense Jacobians, slow, memory
        limited) or ``"forward"`` (forward accumulation, one tangent per parameter).
      max_bytes: ``"explicit"`` only: refuse above this many bytes of dense matrices
        (default :data:`fnn.backprop.EXPLICIT_MAX_BYTES`, 256 MiB).
      max_tangents: ``"forward"`` only: refuse above this many example-tangent passes
        ``P · B`` (default :data:`fnn.forward_mode.FORWARD_MAX_TANGENTS`, 2²²).
      chunk_size: ``"forward"`` only: tangents pushed at once.

    Returns:
      ``(loss, {"params": grads like params, "x": grad like x})``.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`; ``params`` or ``x`` are not real
        floating point.
      ValueError: params not matching ``net``, ``x`` or ``y`` of the wrong shape, an empty
        batch, a label out of range, an unknown loss or method, a loss that does not suit
        the output activation, an option of another method, or work over its limit.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> loss, grads = value_and_grad(net, params, jnp.ones(3), jnp.zeros(2))
    >>> grads["params"][0]["W"].shape, grads["x"].shape
    ((4, 3), (3,))
    """
    loss_fn, x, y = _check_loss_problem(net, params, x, y, loss)
    _checks.check_choice(method, METHODS, "method")
    options = {"max_bytes": max_bytes, "max_tangents": max_tangents, "chunk_size": chunk_size}
    own = {"explicit": ("max_bytes",), "forward": ("max_tangents", "chunk_size")}.get(method, ())
    for name, value in options.items():
        if value is not None and name not in own:
            raise ValueError(f"{name} applies to method={_owner(name)!r} only; got {method=!r}.")
        if value is not None:
            _checks.check_positive_int(value, name)
    batch = 1 if x.ndim == 1 else x.shape[0]
    if method == "explicit":
        _refuse_explicit(net, batch, jnp.result_type(x, *jax.tree.leaves(params)), max_bytes)
        value, grads = backprop.explicit(net, params, x, y, loss_fn)
    elif method == "forward":
        _refuse_forward(net, batch, max_tangents)
        value, grads = forward_mode.gradient(net, params, x, y, loss_fn, chunk_size=chunk_size)
    else:
        value, grads = backprop.reverse(net, params, x, y, loss_fn)
    # Gradients carry their variable's dtype, as jax.grad's do (float32 x, float64 params).
    grads_params = jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads["params"], params)
    return value, {"params": grads_params, "x": grads["x"].astype(x.dtype)}


def _owner(option: str) -> str:
    return "explicit" if option == "max_bytes" else "forward"


def _refuse_explicit(net: MLP, batch: int, dtype, max_bytes: int | None) -> None:
    max_bytes = backprop.EXPLICIT_MAX_BYTES if max_bytes is None else max_bytes
    needed = backprop.explicit_bytes(net, batch, dtype)
    if needed > max_bytes:
        raise ValueError(
            f"method='explicit' would need about {needed / 2**20:.1f} MiB for sizes "
            f"{net.sizes} and batch {batch} (dense Jacobians, O(M²) per example per layer); "
            f"the limit is max_bytes={max_bytes / 2**20:.1f} MiB. Use method='reverse'."
        )


def _refuse_forward(net: MLP, batch: int, max_tangents: int | None) -> None:
    max_tangents = forward_mode.FORWARD_MAX_TANGENTS if max_tangents is None else max_tangents
    P = network.summary(net).num_params
    if P * batch > max_tangents:
        raise ValueError(
            f"method='forward' pushes one tangent per parameter through every example: "
            f"P · B = {P} · {batch} = {P * batch} passes for sizes {net.sizes}, over the limit "
            f"max_tangents={max_tangents}. Use method='reverse' (one backward pass), or raise "
            f"max_tangents."
        )


_JACOBIANS = {
    "forward": forward_mode.jacobian_forward,
    "reverse": backprop.jacobian_reverse,
    "explicit": backprop.jacobian_explicit,
}


def jacobian(net: MLP, params: Params, x, mode: str = "auto") -> jax.Array:
    r"""The full Jacobian ``J_nn(x)`` of shape ``(M_out, D_in)`` for one example (S18).

    .. math::  J_{nn}(x) = J_{f^{out}}(a^{(N)})\, W^{(N)} \cdots J_{f^{(1)}}(a^{(1)})\, W^{(1)}

    ``mode="forward"`` evaluates the chain right to left with ``D_in`` tangents (a tangent
    matrix ``I_D``); ``"reverse"`` left to right with ``M_out`` row vectors (``I_M``);
    ``"auto"`` (default) picks the one with fewer multiply-adds
    (:func:`fnn.cost_model.choose_mode`); ``"explicit"`` multiplies the dense matrices of
    the lecture, ``J_f`` included. Only ``"explicit"`` builds a diagonal ``J_f``.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`, or ``params``/``x`` not real floats.
      ValueError: ``params`` does not match ``net``, ``x`` is not one example ``(D,)``, or
        ``mode`` is unknown.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> jacobian(net, params, jnp.ones(3)).shape
    (2, 3)
    """
    network.check_net(net)
    _checks.check_params(net, params)
    _checks.check_input(net, x, single=True)
    _checks.check_choice(mode, JACOBIAN_MODES, "mode")
    if mode == "auto":
        mode = cost_model.choose_mode(net)
    return _JACOBIANS[mode](net, params, jnp.asarray(x))
