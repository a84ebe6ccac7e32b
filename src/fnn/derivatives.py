r"""The public derivative entry points: :func:`value_and_grad` and :func:`jacobian` (S17, S18).

Each checks its input once, in Python (:mod:`fnn._checks`), and dispatches to an engine
from one table; the engines check nothing:

* ``method="reverse"`` — :func:`fnn.backprop.reverse` and
  :func:`fnn.backprop.jacobian_reverse` (S17);
* ``method="explicit"`` — :func:`fnn.backprop.explicit` and
  :func:`fnn.backprop.jacobian_explicit`, the lecture's dense chain (S17);
* ``method="forward"`` — :func:`fnn.forward_mode.gradient` and
  :func:`fnn.forward_mode.jacobian_forward` (S18);
* ``method="auto"`` (:func:`jacobian`'s default) — the cheaper of forward and reverse by
  the cost model.

Two of these can explode, and each has a keyword-only limit: the explicit engine's dense
matrices (``max_bytes``) and forward mode's one tangent per parameter (``max_tangents``).
Both refusals go through :func:`fnn._checks.check_limit`, which honours the caller's value
and names the cheap alternative. :func:`check_loss_problem`, :func:`refuse_explicit` and
:func:`refuse_forward` are the doors the other entry points (extensions, curvature,
gradcheck) share, so that the same mistake gets the same answer everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnn import _checks, activations, backprop, cost_model, forward_mode, losses, network
from fnn.network import MLP, Params

__all__ = [
    "JACOBIAN_METHODS",
    "METHODS",
    "batch_size",
    "check_loss_problem",
    "jacobian",
    "refuse_explicit",
    "refuse_forward",
    "value_and_grad",
]

METHODS = ("reverse", "explicit", "forward")
"""The gradient engines :func:`value_and_grad` accepts as ``method``."""
JACOBIAN_METHODS = ("auto", "forward", "reverse", "explicit")
"""The methods :func:`jacobian` accepts (``"auto"``: the one with fewer multiply-adds)."""


def check_loss_problem(net: MLP, params, x, y, loss):
    """The door of every function of ``(net, params, x, y, loss)``: checks them once and
    returns the :class:`fnn.losses.Loss` and ``x``, ``y`` as arrays.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`; ``params`` or ``x`` not real floats.
      ValueError: ``params`` not matching ``net``, ``x`` or ``y`` of the wrong shape, an
        unknown loss, or a loss that does not suit the output activation.
    """
    _checks.check_net(net)
    _checks.check_params(net, params)
    _checks.check_input(net, x)
    loss_fn = losses.get(loss)
    x = jnp.asarray(x)
    losses.check_target(loss_fn, (*x.shape[:-1], net.out_features), y)
    losses.check_output_activation(loss_fn, activations.name_of(net.activations[-1]))
    return loss_fn, x, jnp.asarray(y)


def batch_size(x) -> int:
    """The number of examples in ``x``: one example ``(D,)`` counts as a batch of 1."""
    return 1 if jnp.ndim(x) == 1 else int(jnp.shape(x)[0])


def refuse_explicit(net: MLP, batch: int, dtype, max_bytes: int | None) -> None:
    """Refuse the explicit engine above ``max_bytes`` (default
    :data:`fnn.backprop.EXPLICIT_MAX_BYTES`) of dense matrices (:func:`fnn._checks.check_limit`)."""
    _checks.check_limit(
        backprop.explicit_bytes(net, batch, dtype),
        backprop.EXPLICIT_MAX_BYTES if max_bytes is None else max_bytes,
        name="max_bytes",
        what=f"method='explicit' for sizes {net.sizes} and batch {batch} (dense Jacobians)",
        instead="Use method='reverse', which never builds the dense matrices.",
    )


def refuse_forward(net: MLP, batch: int, max_tangents: int | None, *, instead: str) -> None:
    """Refuse a forward-mode gradient above ``max_tangents`` (default
    :data:`fnn.forward_mode.FORWARD_MAX_TANGENTS`) example-tangent passes ``P · B``
    (:func:`fnn._checks.check_limit`); ``instead`` names the caller's cheap alternative."""
    P = network.summary(net).num_params
    _checks.check_limit(
        P * batch,
        forward_mode.FORWARD_MAX_TANGENTS if max_tangents is None else max_tangents,
        name="max_tangents",
        what=f"One tangent per parameter through every example (P · B = {P} · {batch})",
        instead=instead,
        unit="tangents",
    )


def value_and_grad(
    net: MLP,
    params: Params,
    x,
    y,
    *,
    loss="l2",
    method: str = "reverse",
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
    loss_fn, x, y = check_loss_problem(net, params, x, y, loss)
    _checks.check_choice(method, METHODS, "method")
    options = {"max_bytes": max_bytes, "max_tangents": max_tangents, "chunk_size": chunk_size}
    own = {"explicit": ("max_bytes",), "forward": ("max_tangents", "chunk_size")}.get(method, ())
    for name, value in options.items():
        if value is not None and name not in own:
            raise ValueError(f"{name} applies to method={_owner(name)!r} only; got {method=!r}.")
        if value is not None:
            _checks.check_positive_int(value, name)
    batch = batch_size(x)
    if method == "explicit":
        refuse_explicit(net, batch, jnp.result_type(x, *jax.tree.leaves(params)), max_bytes)
        value, grads = backprop.explicit(net, params, x, y, loss_fn)
    elif method == "forward":
        refuse_forward(
            net, batch, max_tangents, instead="Use method='reverse' (one backward pass)."
        )
        value, grads = forward_mode.gradient(net, params, x, y, loss_fn, chunk_size=chunk_size)
    else:
        value, grads = backprop.reverse(net, params, x, y, loss_fn)
    # Gradients carry their variable's dtype, as jax.grad's do (float32 x, float64 params).
    grads_params = jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads["params"], params)
    return value, {"params": grads_params, "x": grads["x"].astype(x.dtype)}


def _owner(option: str) -> str:
    return "explicit" if option == "max_bytes" else "forward"


_JACOBIANS = {
    "forward": forward_mode.jacobian_forward,
    "reverse": backprop.jacobian_reverse,
    "explicit": backprop.jacobian_explicit,
}


def jacobian(net: MLP, params: Params, x, *, method: str = "auto") -> jax.Array:
    r"""The full Jacobian ``J_nn(x)`` ``(M_out, D_in)`` of one example, or ``(B, M_out, D_in)``
    for a batch (S18).

    .. math::  J_{nn}(x) = J_{f^{out}}(a^{(N)})\, W^{(N)} \cdots J_{f^{(1)}}(a^{(1)})\, W^{(1)}

    ``method="forward"`` evaluates the chain right to left with ``D_in`` tangents (a tangent
    matrix ``I_D``); ``"reverse"`` left to right with ``M_out`` row vectors (``I_M``);
    ``"auto"`` (default) picks the one with fewer multiply-adds
    (:func:`fnn.cost_model.choose_method`); ``"explicit"`` multiplies the dense matrices of
    the lecture, ``J_f`` included. Only ``"explicit"`` builds a diagonal ``J_f``.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`, or ``params``/``x`` not real floats.
      ValueError: ``params`` does not match ``net``, ``x`` is not ``(D,)`` or ``(B, D)``, or
        ``method`` is unknown.

    >>> import fnn
    >>> net = fnn.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> jacobian(net, params, jnp.ones(3)).shape, jacobian(net, params, jnp.ones((5, 3))).shape
    ((2, 3), (5, 2, 3))
    """
    _checks.check_net(net)
    _checks.check_params(net, params)
    _checks.check_input(net, x)
    _checks.check_choice(method, JACOBIAN_METHODS, "method")
    if method == "auto":
        method = cost_model.choose_method(net)
    engine, x = _JACOBIANS[method], jnp.asarray(x)
    return (
        engine(net, params, x) if x.ndim == 1 else jax.vmap(engine, (None, None, 0))(net, params, x)
    )
