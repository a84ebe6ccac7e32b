r"""Backpropagation: the loss gradient as a product of Jacobians, from the loss back (S14, S17).

For the network ``a⁽ⁱ⁾ = W⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ + b⁽ⁱ⁾``, ``z⁽ⁱ⁾ = f⁽ⁱ⁾(a⁽ⁱ⁾)``, ``z⁽⁰⁾ = x``,
``ŷ = z⁽ᴺ⁾`` and a loss ``L(ŷ, y)``, the chain rule gives (S17, here N = 3)

.. math::  ∂L/∂x = J_L(ŷ) · J_{f_{out}}(a^{(3)}) · W^{(3)} · J_{f^{(2)}}(a^{(2)}) · W^{(2)}
           · J_{f^{(1)}}(a^{(1)}) · W^{(1)} ,

evaluated from the left so that every partial product is reused. The running row vector
``δ⁽ⁱ⁾ = ∂L/∂a⁽ⁱ⁾`` yields every parameter gradient on the way::

    δ⁽ᴺ⁾     = J_L(ŷ) · J_fout(a⁽ᴺ⁾)
    ∂L/∂b⁽ⁱ⁾ = δ⁽ⁱ⁾ · J_a(b) = δ⁽ⁱ⁾
    ∂L/∂W⁽ⁱ⁾ = δ⁽ⁱ⁾ · J_a(W) = δ⁽ⁱ⁾ ⊗ z⁽ⁱ⁻¹⁾
    δ⁽ⁱ⁻¹⁾   = δ⁽ⁱ⁾ · W⁽ⁱ⁾ · J_f⁽ⁱ⁻¹⁾(a⁽ⁱ⁻¹⁾),        ∂L/∂x = δ⁽¹⁾ · W⁽¹⁾

Two engines compute exactly this (tested equal to ``jax.grad`` and to central differences):

* :func:`explicit` — the lecture literally: per example, the dense matrices of
  :mod:`fnn.jacobians` (``J_f`` is ``(M, M)`` even when it is diagonal); a batch by
  ``jax.vmap``, then the mean. Memory O(M²) per example per layer, see
  :func:`explicit_bytes`; a call above :data:`EXPLICIT_MAX_BYTES` is refused.
* :func:`reverse` — the same loop with the structure used: ``δ · J_f = δ ⊙ f′(a)``
  (:func:`fnn.activations.vjp`), never a diagonal matrix or a third-order tensor, and the
  batch axis kept inside the matrix products (``Δ`` of shape ``(B, M)``,
  ``∂L/∂W = Δᵀ Z``). As fast as ``jax.value_and_grad`` (``benchmarks/run_all.py``). Its
  loops are :func:`fnn.scan.run_layers`, which can scan runs of identical layers; as
  it returns one gradient per layer, it does so only if
  :data:`fnn.scan.SCAN_PER_LAYER_RESULTS` (off: slower to compile on XLA:CPU).

:func:`value_and_grad` checks the input once, in Python, and dispatches to an engine;
``method="forward"`` is forward accumulation, in :mod:`fnn.forward_mode` (S18).

The batch loss is the mean of the per-example losses, so every gradient (``x``'s too) is
that of the mean. Every pair of output activation and loss is handled generally, as
``δ⁽ᴺ⁾ = J_L · J_fout``, with two rules checked before tracing (``ValueError`` otherwise):

* a loss with ``on_logits=True`` (``softmax_cross_entropy``) is applied to the network
  output, which must therefore be the logits: the output activation must be ``"identity"``;
  then ``J_fout = I`` and ``δ⁽ᴺ⁾`` is the loss's fused row ``J_L = s − onehot(y)``;
* a loss with ``on_probabilities=True`` (``cross_entropy``, ``binary_cross_entropy``)
  needs an output in [0, 1]: one of :data:`fnn.losses.PROBABILITY_OUTPUTS`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import activations, forward_mode, jacobians, losses, network, scan
from fnn.network import MLP, Cache, activation_params

__all__ = [
    "EXPLICIT_MAX_BYTES",
    "METHODS",
    "NeuronGrads",
    "explicit",
    "explicit_bytes",
    "explicit_single",
    "forward_batch",
    "layer_backward",
    "neuron_backward",
    "neuron_forward",
    "reverse",
    "value_and_grad",
]

# The explicit engine holds, per example and layer, the dense J_f (M × M) and ∂L/∂W (M × D);
# above this many bytes for one call it refuses instead of exhausting memory.
EXPLICIT_MAX_BYTES = 2**28  # 256 MiB


# ---------------------------------------------------------------------------------------
# S14: one neuron, its forward cache (x, a, z) and the lecture's four derivatives.
# ---------------------------------------------------------------------------------------


class NeuronGrads(NamedTuple):
    """The derivatives of L for one neuron (S14), named after the variable."""

    a: jax.Array  # ∂L/∂a, scalar
    b: jax.Array  # ∂L/∂b, scalar
    w: jax.Array  # ∂L/∂wᵢ, (D,)
    x: jax.Array  # ∂L/∂xᵢ, (D,)


def neuron_forward(w, b, x, f: str = "sigmoid", **p) -> tuple[jax.Array, Cache]:
    """One neuron ``a = Σᵢ wᵢ xᵢ + b``, ``z = f(a)`` (S1), keeping the cache ``(x, a, z)``
    that the backward pass needs (S14). Returns ``(z, Cache(x, a, z))``."""
    a = jnp.dot(w, x) + b
    z = activations.get(f).fn(a, **p)
    return z, Cache(x, a, z)


def neuron_backward(w, cache: Cache, dL_dz, f: str = "sigmoid", **p) -> NeuronGrads:
    """Backpropagation through one neuron from its cache (S14)::

        ∂L/∂a = ∂L/∂z · f′(a),   ∂L/∂b = ∂L/∂a · 1,   ∂L/∂wᵢ = ∂L/∂a · xᵢ,   ∂L/∂xᵢ = ∂L/∂a · wᵢ

    Args:
      w: the weights ``(D,)``.
      cache: ``Cache(x, a, z)`` from :func:`neuron_forward`.
      dL_dz: ``∂L/∂z``, the derivative of the loss at the neuron's output.
      f: the activation's name; ``p`` its learnable parameters.

    Returns:
      :class:`NeuronGrads` ``(a, b, w, x)``.

    >>> z, cache = neuron_forward(jnp.array([1.0, 2.0]), 0.0, jnp.array([3.0, 4.0]), "identity")
    >>> neuron_backward(jnp.array([1.0, 2.0]), cache, 1.0, "identity").w
    Array([3., 4.], dtype=float32)
    """
    dL_da = dL_dz * activations.get(f).derivative(cache.a, **p)
    return NeuronGrads(a=dL_da, b=dL_da, w=dL_da * cache.x, x=dL_da * w)


# ---------------------------------------------------------------------------------------
# S17, explicit: the lecture's product of dense Jacobian matrices, one example at a time.
# ---------------------------------------------------------------------------------------


def explicit_single(net: MLP, params, x, y, loss: losses.Loss):
    """Loss and gradients of ONE example by the lecture's dense Jacobians (S17).

    ``g = J_L(ŷ)``; then for i = N … 1: ``δ = g · J_f⁽ⁱ⁾(a⁽ⁱ⁾)`` (a dense ``(M, M)`` matrix),
    ``∂L/∂b⁽ⁱ⁾ = δ · I``, ``∂L/∂W⁽ⁱ⁾ = δ ⊗ z⁽ⁱ⁻¹⁾`` (the lecture's ``δ · (I ⊗ z⁽ⁱ⁻¹⁾)``
    with the identity dropped), ``∂L/∂p⁽ⁱ⁾ = g · J_z(p)``, ``g ← δ · W⁽ⁱ⁾``; ``∂L/∂x = g``.
    Inputs as validated by :func:`value_and_grad`; ``x`` of shape ``(D,)``.
    """
    y_hat, cache = network.forward(net, params, x)
    g = loss.jacobian(y_hat, y)  # ∂L/∂z⁽ᴺ⁾ = J_L(ŷ), the loss row of S16
    grads = [None] * net.num_layers
    for i in reversed(range(net.num_layers)):
        f, W, b = net.activations[i], params[i]["W"], params[i]["b"]
        p = activation_params(params[i])
        z_prev, a, _ = cache[i]
        grads_p = {name: g @ jacobians.activation_param(f, name, a, **p) for name in p}
        delta = g @ jacobians.activation(f, a, **p)  # δ⁽ⁱ⁾ = ∂L/∂a⁽ⁱ⁾ = ∂L/∂z⁽ⁱ⁾ · J_f(a⁽ⁱ⁾)
        grads[i] = {"W": jnp.outer(delta, z_prev), "b": delta @ jacobians.affine_b(b), **grads_p}
        g = delta @ jacobians.affine_x(W)  # ∂L/∂z⁽ⁱ⁻¹⁾ = δ⁽ⁱ⁾ · W⁽ⁱ⁾
    return loss.fn(y_hat, y), {"params": grads, "x": g}


def explicit_bytes(net: MLP, batch: int, dtype) -> int:
    """Memory the explicit engine needs for ``batch`` examples: ``B · Σᵢ (Mᵢ² + Mᵢ Dᵢ)``
    numbers — every example's dense ``J_f⁽ⁱ⁾`` (``Mᵢ × Mᵢ``) and ``∂L/∂W⁽ⁱ⁾`` (``Mᵢ × Dᵢ``)
    before the batch mean.

    >>> explicit_bytes(MLP((784, 512, 10), ("relu", "identity")), 256, "float32")
    684822528
    """
    per_example = sum(M * M + M * D for D, M in zip(net.sizes[:-1], net.sizes[1:]))
    return batch * per_example * np.dtype(dtype).itemsize


def explicit(net: MLP, params, x, y, loss: losses.Loss, *, max_bytes: int | None = None):
    """The explicit engine (S17): :func:`explicit_single` per example, ``jax.vmap`` over a
    batch ``(B, D)``, then the mean over the batch. Allowed to be slow.

    Unlike the other engines it loops over the layers unrolled, even through runs of
    identical layers (:func:`fnn.scan.segments`): it is the lecture's formula written
    out layer by layer, and its O(M²) memory per example per layer caps it at small
    networks anyway, where compile time does not matter.

    Raises:
      ValueError: the call would need more than ``max_bytes`` (default
        :data:`EXPLICIT_MAX_BYTES`, read at call time) by :func:`explicit_bytes`; use
        ``method="reverse"``, which never builds the dense matrices.
    """
    max_bytes = EXPLICIT_MAX_BYTES if max_bytes is None else max_bytes
    batch = 1 if x.ndim == 1 else x.shape[0]
    needed = explicit_bytes(net, batch, jnp.result_type(x, *jax.tree.leaves(params)))
    if needed > max_bytes:
        raise ValueError(
            f"method='explicit' would need about {needed / 2**20:.1f} MiB for sizes "
            f"{net.sizes} and batch {batch} (dense Jacobians, O(M²) per example per layer); "
            f"the limit is max_bytes={max_bytes / 2**20:.1f} MiB. Use method='reverse'."
        )
    if x.ndim == 1:
        return explicit_single(net, params, x, y, loss)
    values, grads = jax.vmap(lambda x, y: explicit_single(net, params, x, y, loss))(x, y)
    mean_params = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads["params"])
    return jnp.mean(values), {"params": mean_params, "x": grads["x"] / batch}


# ---------------------------------------------------------------------------------------
# S17, reverse: the same loop, structured and batch-native.
# ---------------------------------------------------------------------------------------


def _batch_layer_step(Z: jax.Array, layer_params: dict, f: str, _=None):
    """One layer, batch-first, as a :func:`fnn.scan.run_layers` step:
    ``A = Z Wᵀ + b``, ``Z' = f(A)``; returns ``(Z', Cache(Z, A, Z'))``."""
    A = Z @ layer_params["W"].T + layer_params["b"]
    Z_next = activations.get(f).fn(A, **activation_params(layer_params))
    return Z_next, Cache(Z, A, Z_next)


def forward_batch(net: MLP, params, X: jax.Array) -> tuple[jax.Array, tuple[Cache, ...]]:
    """The batch-first twin of :func:`fnn.network.forward` (S4): rows are examples,
    ``A = Z Wᵀ + b``, ``Z' = f(A)``, for ``X`` of shape ``(B, D)``. Returns
    ``(Ŷ, (Cache(X, A¹, Z¹), …))`` with every array of shape ``(B, ·)``; tested equal to
    ``network.forward``. Inputs as validated by :func:`value_and_grad`."""
    segs = scan.segments(net, per_layer_results=True)
    Y, caches = scan.run_layers(segs, scan.group(segs, params), _batch_layer_step, X)
    return Y, tuple(scan.ungroup(segs, caches))


def layer_backward(layer_params: dict, f: str, cache: Cache, G: jax.Array):
    """One layer of the reverse engine, for a batch: from ``G = ∂L/∂Z⁽ⁱ⁾`` ``(B, M)``::

        Δ = G · J_f(A) = G ⊙ f′(A)        (activations.vjp: no diagonal matrix built)
        ∂L/∂W = Δᵀ Z⁽ⁱ⁻¹⁾,   ∂L/∂b = Σ_rows Δ,   ∂L/∂p = Σ G ⊙ ∂f/∂p(A)
        ∂L/∂Z⁽ⁱ⁻¹⁾ = Δ W

    The rows of ``G`` already carry the batch mean's ``1/B``, so the sums over rows are the
    gradients of the mean. Where the activation has ``derivative_from_output`` (tanh:
    ``f′ = 1 − Z²``, sigmoid: ``Z (1 − Z)``), ``f′`` comes from the cached output ``Z``, as in
    ``jax.grad``: no ``exp``/``cosh`` recomputed. Returns ``(layer_grads, ∂L/∂Z⁽ⁱ⁻¹⁾)``.
    """
    act, p = activations.get(f), activation_params(layer_params)
    if act.derivative_from_output is not None:
        delta = G * act.derivative_from_output(cache.z, **p)
    else:
        delta = activations.vjp(act, cache.a, G, **p)
    grads = {"W": _materialised(delta.T) @ cache.x, "b": jnp.sum(delta, axis=0)}
    for name, df_dp in act.param_derivatives.items():
        grads[name] = jnp.sum(G * df_dp(cache.a, **p))
    return grads, delta @ layer_params["W"]


def _materialised(a: jax.Array) -> jax.Array:
    """``a`` as an array of its own. Left alone, XLA folds the transpose in ``Δᵀ Z`` into the
    product (a dot contracting over the batch axis), which XLA:CPU runs through its generic
    dot at ~0.8× the rate of ``Z Wᵀ``; with ``Δᵀ`` written out first it is a plain product
    (``benchmarks/run_all.py``, rows "product Δᵀ Z": the gradient is 3–4 % faster)."""
    return jax.lax.optimization_barrier(a)


def _backward_step(G: jax.Array, layer_params: dict, f: str, cache: Cache):
    grads, G = layer_backward(layer_params, f, cache, G)
    return G, grads


def reverse(net: MLP, params, x, y, loss: losses.Loss):
    """The reverse engine (S17): the batch-first forward pass, then ``G = J_L(Ŷ) / B`` and
    :func:`layer_backward` from the last layer to the first over the cache. ``x`` is
    ``(D,)`` (run as a batch of one) or ``(B, D)``. Inputs as validated by
    :func:`value_and_grad`.

    Both loops go through :func:`fnn.scan.run_layers`. With
    :data:`fnn.scan.SCAN_PER_LAYER_RESULTS` on, a run of identical layers is one
    ``lax.scan`` forward and one backward over the stacked cache, and its gradients are
    unstacked into the per-layer list at the end (tested equal to the unrolled loop)."""
    if x.ndim == 1:
        value, grads = reverse(net, params, x[None], y[None], loss)
        return value, {"params": grads["params"], "x": grads["x"][0]}
    segs = scan.segments(net, per_layer_results=True)
    grouped = scan.group(segs, params)
    y_hat, caches = scan.run_layers(segs, grouped, _batch_layer_step, x)
    value = jnp.mean(jax.vmap(loss.fn)(y_hat, y))
    G = jax.vmap(loss.jacobian)(y_hat, y) / x.shape[0]  # ∂(mean L)/∂Ŷ: the 1/B once
    G, grads = scan.run_layers(segs, grouped, _backward_step, G, caches, reverse=True)
    return value, {"params": scan.ungroup(segs, grads), "x": G}


# ---------------------------------------------------------------------------------------
# The public entry point.
# ---------------------------------------------------------------------------------------


METHODS = {"reverse": reverse, "explicit": explicit, "forward": forward_mode.value_and_grad}


def value_and_grad(net: MLP, params, x, y, loss: str = "l2", method: str = "reverse"):
    """The batch loss and its gradient w.r.t. every parameter and the input (S17).

    .. math::  L(θ, x) = \\frac{1}{B} \\sum_{b=1}^{B} L(nn_θ(x_b), y_b)

    Args:
      net: the architecture.
      params: its parameters (as :func:`fnn.init` makes them).
      x: one example ``(D,)`` or a batch ``(B, D)``, floating point.
      y: the target(s): ``(M,)``/``(B, M)`` vectors, or integer labels ``()``/``(B,)`` for a
        loss on labels.
      loss: a name from :func:`fnn.losses.names`. A loss on logits
        (``softmax_cross_entropy``) needs the output activation ``"identity"``.
      method: ``"reverse"`` (structured, fast), ``"explicit"`` (dense Jacobians, slow, memory
        limited) or ``"forward"`` (forward accumulation, S18).

    Returns:
      ``(loss, {"params": grads like params, "x": grad like x})``.

    Raises:
      ValueError: params not matching ``net``, ``x`` or ``y`` of the wrong shape, an unknown
        loss or method, a loss on logits after a non-identity output, or an explicit call
        over its memory limit.
      TypeError: ``x`` is not floating point.

    >>> net = MLP((3, 4, 2), ("tanh", "identity"))
    >>> params = network.init(jax.random.key(0), net)
    >>> loss, grads = value_and_grad(net, params, jnp.ones(3), jnp.zeros(2))
    >>> grads["params"][0]["W"].shape, grads["x"].shape
    ((4, 3), (3,))
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an fnn.MLP; got {type(net).__name__}.")
    network.check_params(net, params)
    network.check_input(net, x)
    loss_fn = losses.get(loss)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {tuple(METHODS)}.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array (it gets a gradient); got {x.dtype}.")
    losses.check_target(loss_fn, (*x.shape[:-1], net.out_features), y)
    losses.check_output_activation(loss_fn, net.activations[-1])
    value, grads = METHODS[method](net, params, x, jnp.asarray(y), loss_fn)
    # Gradients carry their variable's dtype, as jax.grad's do.
    grads_params = jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads["params"], params)
    return value, {"params": grads_params, "x": grads["x"].astype(x.dtype)}
