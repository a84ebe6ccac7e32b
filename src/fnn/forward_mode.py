r"""Forward accumulation, and the full Jacobian of a network by both modes (S18).

Forward accumulation pushes a *tangent* from the input to the output through the same
building blocks as the forward pass (S16):

.. math::  \dot a^{(i)} = J_a(z)\,\dot z^{(i-1)} + J_a(W)\,\dot W^{(i)} + J_a(b)\,\dot b^{(i)}
           = W^{(i)} \dot z^{(i-1)} + \dot W^{(i)} z^{(i-1)} + \dot b^{(i)},
           \qquad \dot z^{(i)} = J_f(a^{(i)})\,\dot a^{(i)} + \tfrac{∂f}{∂α}\,\dot α^{(i)}

so that ``ẏ = J_nn · (ẋ, θ̇)``. A *tangent matrix* ``T`` (one direction per column) goes
through the same formulas at once: ``J_a · T = W @ T``. Reverse accumulation pulls row
vectors the other way, ``G ← (G · J_f(a)) @ W``, through the cached forward pass (S17).

The full Jacobian ``J_nn(x)`` of shape ``(M_out, D_in)`` therefore costs ``D_in`` tangents
forward or ``M_out`` row vectors backward: forward wins for wide outputs, reverse for wide
inputs (and for gradients, where ``M_out = 1``). :mod:`fnn.cost_model` counts it.
Every function here is a fold of one layer's JVP (:func:`fnn.layer.jvp`) over the layers;
no function calls ``jax.jvp`` or ``jax.grad``: the tests prove each one against them. The
reverse direction lives in :mod:`fnn.backprop`; :func:`fnn.jacobian` and
:func:`fnn.value_and_grad` (:mod:`fnn.derivatives`) check the input once and dispatch.
:func:`jvp` is the one public function here, and checks its own input.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fnn import _checks, _scan, layer, losses, network
from fnn.network import MLP, Params

__all__ = ["FORWARD_MAX_TANGENTS", "gradient", "jacobian_forward", "jvp"]

FORWARD_MAX_TANGENTS = 2**22
"""The most example-tangent passes ``P · B`` the forward-mode gradient makes by default.

It pushes one tangent per parameter through every example: above this many it refuses and
names reverse mode instead.
"""


def _jvp_pair(p, f, carry, p_dot=None):
    # The fold carries the primal with its tangent as one pair; layer.jvp keeps them apart,
    # as the lecture writes ȧ = W ż + Ẇ z + ḃ.
    return layer.jvp(p, f, *carry, p_dot)


def _push(net: MLP, params: Params, x: jax.Array, x_dot, params_dot):
    """Push tangents from the input to the output of ONE example (S18).

    Args:
      x: the example, shape ``(D,)``.
      x_dot: input tangents ``(D, K)``, or ``None`` for zero.
      params_dot: parameter tangents, a pytree like ``params`` whose leaves carry a trailing
        axis ``K``, or ``None`` for zero.

    Returns:
      ``(y, Ẏ)`` with ``Ẏ`` of shape ``(M_out, K)``; ``Ẏ`` is ``None`` when both tangents are.
    """
    fold, grouped_dot = _scan.layers(net, params), None
    if params_dot is not None:
        grouped_dot = _scan.group(fold.segs, params_dot)
        if x_dot is None and fold.segs[0].scan:
            # A scan's carry keeps its structure: the tangent must exist before the run.
            x_dot = jnp.zeros((x.shape[0], params_dot[0]["b"].shape[-1]), x.dtype)
    (y, y_dot), _ = fold.forward(_jvp_pair, (x, x_dot), grouped_dot, keep=False)
    return y, y_dot


def jvp(net: MLP, params: Params, x, *, x_dot=None, params_dot=None):
    r"""The network's JVP by forward accumulation: ``(y, ẏ)`` with ``ẏ = J_x ẋ + J_θ θ̇`` (S18).

    .. math::  \dot y = J_{nn}(x, θ) \cdot (\dot x, \dot θ)

    Args:
      net, params: the network.
      x: one example ``(D,)`` or a batch ``(B, D)``.
      x_dot: the input tangent, shaped like ``x``; ``None`` for zero.
      params_dot: the parameter tangent, a pytree shaped like ``params`` (shared by the whole
        batch); ``None`` for zero.

    Returns:
      ``(y, ẏ)``, both shaped like the network output.

    Raises:
      TypeError: ``net`` is not an :class:`fnn.MLP`, or an array is not real floating point.
      ValueError: ``params``/``params_dot`` do not match ``net``, ``x`` has the wrong shape,
        or ``x_dot`` is not shaped like ``x``.

    >>> net = network.MLP((3, 2), ("identity",))
    >>> params = [{"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}]
    >>> jvp(net, params, jnp.ones(3), x_dot=jnp.array([1.0, 0.0, 0.0]))[1]
    Array([1., 1.], dtype=float32)
    """
    _checks.check_net(net)
    _checks.check_params(net, params)
    _checks.check_input(net, x)
    x = jnp.asarray(x)
    if x_dot is not None:
        if tuple(jnp.shape(x_dot)) != x.shape:
            raise ValueError(f"x_dot must have the shape of x, {x.shape}; got {jnp.shape(x_dot)}.")
        _checks.check_input(net, x_dot, "x_dot")
    if params_dot is not None:
        _checks.check_params(net, params_dot, "params_dot")
        params_dot = jax.tree.map(lambda t: jnp.asarray(t)[..., None], params_dot)

    def single(x, x_dot):
        x_dot = None if x_dot is None else x_dot[:, None]
        y, y_dot = _push(net, params, x, x_dot, params_dot)
        return y, jnp.zeros_like(y) if y_dot is None else y_dot[:, 0]

    if x.ndim == 1:
        return single(x, x_dot)
    return jax.vmap(single)(x, x_dot)


def jacobian_forward(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """``J_nn(x)`` ``(M_out, D_in)`` of one example by forward mode (S18): all ``D``
    input directions at once, ``T = I_D``, then ``T ← J_f · (W T)`` layer by layer.
    Unchecked."""
    return _push(net, params, x, jnp.eye(x.shape[0], dtype=x.dtype), None)[1]


def _default_chunk(num_params: int, batch: int) -> int:
    # A chunk's tangent holds num_params × chunk numbers per example: keep it near 2²² values.
    return max(1, 2**22 // (num_params * batch))


def gradient(net: MLP, params: Params, x, y, loss: losses.Loss, *, chunk_size=None):
    r"""Loss and gradient by forward accumulation: one tangent per parameter (S18).

    .. math::  \frac{∂L}{∂θ_k} = \frac1B \sum_n J_L(\hat y_n) \cdot \dot y_n(e_k), \qquad
               \frac{∂L}{∂x_n} = \frac1B\, J_L(\hat y_n) \cdot J_{nn}(x_n)

    Every parameter θ_k (each entry of every ``W``, ``b`` and PReLU ``alpha``) gets its own
    tangent ``e_k``; the tangents are pushed through the whole batch in chunks of
    ``chunk_size`` (a tangent matrix per chunk, ``lax.map`` over the chunks; default: as
    many as keep a chunk near 2²² numbers) and contracted with the loss row ``J_L``. The
    input gradient pushes one tangent per input component (the forward Jacobian of each
    example). **The cost grows with the parameter count**: ``P · B`` example-tangent passes
    for ``P`` parameters, where backprop needs one backward pass
    (:func:`fnn.cost_model.gradient_macs`); :func:`fnn.value_and_grad` refuses above
    ``max_tangents`` (:data:`FORWARD_MAX_TANGENTS`). The engines' common signature;
    unchecked.

    Returns:
      ``(L, {"params": ∂L/∂θ shaped like params, "x": ∂L/∂x shaped like x})``, ``L`` the mean
      of the per-example losses.
    """
    X, Y = (x, y) if x.ndim == 2 else (x[None], y[None])
    theta, unravel = ravel_pytree(params)
    P, B = theta.size, X.shape[0]
    K = min(_default_chunk(P, B) if chunk_size is None else chunk_size, P)

    y_hat = network.run(net, params, X)
    value = jnp.mean(jax.vmap(loss.fn)(y_hat, Y))
    J_L = jax.vmap(loss.jacobian)(y_hat, Y)  # (B, M): one row ∂L/∂ŷ per example

    def chunk(start):
        E = jax.nn.one_hot(start + jnp.arange(K), P, dtype=theta.dtype)  # (K, P): e_k rows
        params_dot = jax.vmap(unravel, out_axes=-1)(E)  # leaves shaped like params + (K,)
        Y_dot = jax.vmap(lambda xn: _push(net, params, xn, None, params_dot)[1])(X)  # (B, M, K)
        return jnp.einsum("bm,bmk->k", J_L, Y_dot) / B

    n_chunks = math.ceil(P / K)
    grad_theta = jax.lax.map(chunk, jnp.arange(n_chunks) * K).reshape(-1)[:P]
    J_x = jax.vmap(lambda xn: jacobian_forward(net, params, xn))(X)  # (B, M, D)
    grad_x = jnp.einsum("bm,bmd->bd", J_L, J_x) / B
    return value, {"params": unravel(grad_theta), "x": grad_x if x.ndim == 2 else grad_x[0]}
