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
No function here calls ``jax.jvp`` or ``jax.grad``: the tests prove each one against them.
Both directions loop with :func:`fnn.scan.run_layers`: a long run of identical layers is
one ``lax.scan`` (:func:`fnn.scan.segments`), so compile time stays flat in depth.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fnn import activations, cost_model, losses, network, scan
from fnn.network import MLP, Params, activation_params

__all__ = ["MODES", "jacobian", "jvp", "value_and_grad"]

MODES = ("forward", "reverse", "auto")


def _jvp_f(act: activations.Activation, a: jax.Array, A_dot: jax.Array, **p) -> jax.Array:
    """``J_f(a) · Ȧ`` for a tangent matrix ``Ȧ`` of shape ``(M, K)`` (one tangent per column),
    without building ``J_f``: ``f′(a) ⊙ Ȧ`` column by column, or the softmax form.
    :func:`fnn.activations.jvp` works on the last axis: ``a[:, None]`` broadcasts ``f′(a)``
    over the columns; softmax, which mixes units, needs the units last (the transposes)."""
    if act.elementwise:
        return activations.jvp(act, a[:, None], A_dot, **p)
    return activations.jvp(act, a, A_dot.T, **p).T


def _push_step(carry, layer_params: dict, name: str, layer_dot):
    """One layer of forward accumulation, a :func:`fnn.scan.run_layers` step:
    ``(z, Ż) ↦ (z', Ż')`` with ``Ż`` of shape ``(n, K)`` (``None`` for zero), and the
    layer's parameter tangent ``layer_dot`` (leaves with a trailing ``K``, or ``None``)."""
    z, z_dot = carry
    W, b, p = layer_params["W"], layer_params["b"], activation_params(layer_params)
    act = activations.get(name)
    a = W @ z + b
    a_dot = None if z_dot is None else W @ z_dot  # J_a(z) · ż = W ż
    if layer_dot is not None:
        # J_a(W) · Ẇ = Ẇ z  (∂aᵢ/∂w_kl = δᵢₖ z_l),  J_a(b) · ḃ = ḃ
        a_dot_theta = jnp.einsum("mdk,d->mk", layer_dot["W"], z) + layer_dot["b"]
        a_dot = a_dot_theta if a_dot is None else a_dot + a_dot_theta
    z = act.fn(a, **p)
    if a_dot is not None:
        z_dot = _jvp_f(act, a, a_dot, **p)
        if layer_dot is not None:
            for q, df_dq in act.param_derivatives.items():
                z_dot = z_dot + df_dq(a, **p)[:, None] * layer_dot[q]  # ∂f/∂α · α̇
    return (z, z_dot), None


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
    segs, grouped_dot = scan.segments(net), None
    if params_dot is not None:
        grouped_dot = scan.group(segs, params_dot)
        if x_dot is None and segs[0].scan:
            # A scan's carry keeps its structure: the tangent must exist before the run.
            x_dot = jnp.zeros((x.shape[0], params_dot[0]["b"].shape[-1]), x.dtype)
    (y, y_dot), _ = scan.run_layers(
        segs, scan.group(segs, params), _push_step, (x, x_dot), grouped_dot
    )
    return y, y_dot


def _check_single_x(net: MLP, x) -> jax.Array:
    shape = tuple(jnp.shape(x))
    if shape != (net.in_features,):
        raise ValueError(
            f"x must be ONE example of shape (D,) = ({net.in_features},); got {shape}."
        )
    return jnp.asarray(x)


def jvp(net: MLP, params: Params, x, x_dot=None, params_dot=None):
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
      ValueError: ``params``/``params_dot`` do not match ``net``, ``x`` has the wrong shape,
        or ``x_dot`` is not shaped like ``x``.

    >>> net = network.MLP((3, 2), ("identity",))
    >>> params = [{"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}]
    >>> jvp(net, params, jnp.ones(3), x_dot=jnp.array([1.0, 0.0, 0.0]))[1]
    Array([1., 1.], dtype=float32)
    """
    network.check_params(net, params)
    network.check_input(net, x)
    x = jnp.asarray(x)
    if x_dot is not None and tuple(jnp.shape(x_dot)) != x.shape:
        raise ValueError(f"x_dot must have the shape of x, {x.shape}; got {jnp.shape(x_dot)}.")
    if params_dot is not None:
        network.check_params(net, params_dot)
        params_dot = jax.tree.map(lambda t: jnp.asarray(t)[..., None], params_dot)

    def single(x, x_dot):
        x_dot = None if x_dot is None else x_dot[:, None]
        y, y_dot = _push(net, params, x, x_dot, params_dot)
        return y, jnp.zeros_like(y) if y_dot is None else y_dot[:, 0]

    if x.ndim == 1:
        return single(x, x_dot)
    return jax.vmap(single)(x, x_dot)


def _jacobian_forward(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """All ``D`` input directions at once: ``T = I_D``, then ``T ← J_f · (W @ T)`` (S18)."""
    return _push(net, params, x, jnp.eye(x.shape[0], dtype=x.dtype), None)[1]


def _pull_step(G: jax.Array, layer_params: dict, name: str, cache: network.Cache):
    """``G ← (G · J_f(a)) @ W``: one layer of reverse accumulation of row vectors (S17)."""
    act = activations.get(name)
    G = activations.vjp(act, cache.a, G, **activation_params(layer_params))
    return G @ layer_params["W"], None


def _jacobian_reverse(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """All ``M`` output rows at once: ``G = I_M``, then ``G ← (G · J_f(a)) @ W``, from the
    last layer to the first, through the cached forward pass (S17)."""
    segs = scan.segments(net)  # the cache stays stacked: nothing is returned per layer
    grouped = scan.group(segs, params)
    y, caches = scan.run_layers(segs, grouped, network.layer_step, x)
    G = jnp.eye(y.shape[0], dtype=y.dtype)
    return scan.run_layers(segs, grouped, _pull_step, G, caches, reverse=True)[0]


def jacobian(net: MLP, params: Params, x, mode: str = "forward") -> jax.Array:
    r"""The full Jacobian ``J_nn(x)`` of shape ``(M_out, D_in)`` for one example (S18).

    .. math::  J_{nn}(x) = J_{f^{out}}(a^{(N)})\, W^{(N)} \cdots J_{f^{(1)}}(a^{(1)})\, W^{(1)}

    ``mode="forward"`` evaluates the chain right to left with ``D_in`` tangents (a tangent
    matrix ``I_D``); ``"reverse"`` left to right with ``M_out`` row vectors (``I_M``);
    ``"auto"`` picks the one with fewer multiply-adds (:func:`fnn.cost_model.choose_mode`).
    Neither builds a diagonal ``J_f``.

    Raises:
      ValueError: ``params`` does not match ``net``, ``x`` is not one example ``(D,)``, or
        ``mode`` is unknown.

    >>> net = network.MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = network.init(jax.random.key(0), net)
    >>> jacobian(net, params, jnp.ones(3), mode="reverse").shape
    (2, 3)
    """
    network.check_params(net, params)
    x = _check_single_x(net, x)
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
    if mode == "auto":
        mode = cost_model.choose_mode(net)
    return (_jacobian_forward if mode == "forward" else _jacobian_reverse)(net, params, x)


def _default_chunk(num_params: int, batch: int) -> int:
    # A chunk's tangent holds num_params × chunk numbers per example: keep it near 2²² values.
    return max(1, 2**22 // (num_params * batch))


def value_and_grad(net: MLP, params: Params, x, y, loss, *, chunk_size: int | None = None):
    r"""Loss and gradient by forward accumulation: one tangent per parameter (S18).

    .. math::  \frac{∂L}{∂θ_k} = \frac1B \sum_n J_L(\hat y_n) \cdot \dot y_n(e_k), \qquad
               \frac{∂L}{∂x_n} = \frac1B\, J_L(\hat y_n) \cdot J_{nn}(x_n)

    Every parameter θ_k (each entry of every ``W``, ``b`` and PReLU ``alpha``) gets its own
    tangent ``e_k``; the tangents are pushed through the whole batch in chunks of
    ``chunk_size`` (a tangent matrix per chunk, ``lax.map`` over the chunks) and contracted
    with the loss row ``J_L``. The input gradient pushes one tangent per input component
    (the forward Jacobian of each example). **The cost grows with the parameter count**:
    about ``P`` tangent passes for ``P`` parameters, where backprop needs one backward pass
    (:func:`fnn.cost_model.gradient_macs`) — this is why training uses reverse mode.

    Args:
      net, params: the network.
      x: one example ``(D,)`` or a batch ``(B, D)``.
      y: the target(s) for ``loss`` (vectors shaped like the output, or integer labels).
      loss: a :class:`fnn.losses.Loss` or its name; an ``on_logits`` loss takes the network
        output as its logits.
      chunk_size: tangents per chunk (default: as many as keep a chunk near 2²² numbers).

    Returns:
      ``(L, {"params": ∂L/∂θ shaped like params, "x": ∂L/∂x shaped like x})``, ``L`` the mean
      of the per-example losses.

    Raises:
      ValueError: mismatched ``params``, ``x``, ``y``, an unknown loss, an output
        activation that does not suit the loss (:func:`fnn.losses.check_output_activation`),
        or a bad ``chunk_size``.
    """
    loss = losses.get(loss) if isinstance(loss, str) else loss
    network.check_params(net, params)
    network.check_input(net, x)
    x = jnp.asarray(x)
    losses.check_target(loss, (*x.shape[:-1], net.out_features), y)
    losses.check_output_activation(loss, net.activations[-1])
    X, Y = (x, jnp.asarray(y)) if x.ndim == 2 else (x[None], jnp.asarray(y)[None])
    theta, unravel = ravel_pytree(params)
    P, B = theta.size, X.shape[0]
    K = _default_chunk(P, B) if chunk_size is None else chunk_size
    K = min(network.check_positive_int(K, "chunk_size"), P)

    y_hat = network.apply(net, params, X)
    value = jnp.mean(jax.vmap(loss.fn)(y_hat, Y))
    J_L = jax.vmap(loss.jacobian)(y_hat, Y)  # (B, M): one row ∂L/∂ŷ per example

    def chunk(start):
        E = jax.nn.one_hot(start + jnp.arange(K), P, dtype=theta.dtype)  # (K, P): e_k rows
        params_dot = jax.vmap(unravel, out_axes=-1)(E)  # leaves shaped like params + (K,)
        Y_dot = jax.vmap(lambda xn: _push(net, params, xn, None, params_dot)[1])(X)  # (B, M, K)
        return jnp.einsum("bm,bmk->k", J_L, Y_dot) / B

    n_chunks = math.ceil(P / K)
    grad_theta = jax.lax.map(chunk, jnp.arange(n_chunks) * K).reshape(-1)[:P]
    J_x = jax.vmap(lambda xn: _jacobian_forward(net, params, xn))(X)  # (B, M, D)
    grad_x = jnp.einsum("bm,bmd->bd", J_L, J_x) / B
    return value, {"params": unravel(grad_theta), "x": grad_x if x.ndim == 2 else grad_x[0]}
