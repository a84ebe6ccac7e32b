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
  :mod:`fnn.local_jacobians` (``J_f`` is ``(M, M)`` even when it is diagonal); a batch by
  ``jax.vmap``, then the mean. Memory O(M²) per example per layer, see
  :func:`explicit_bytes`; :func:`fnn.value_and_grad` refuses a call above its
  ``max_bytes`` (default :data:`EXPLICIT_MAX_BYTES`).
* :func:`reverse` — the same loop with the structure used: ``δ · J_f = δ ⊙ f′(a)``
  (:func:`fnn.layer.delta`), never a diagonal matrix or a third-order tensor, and the
  batch axis kept inside the matrix products (``Δ`` of shape ``(B, M)``,
  ``∂L/∂W = Δᵀ Z``). As fast as ``jax.value_and_grad`` (``benchmarks/run_all.py``).

Both are folds of one layer's rules (:mod:`fnn.layer`: ``vjp_explicit``, ``vjp_batch``)
over the layers, from the last to the first. :func:`jacobian_reverse` pulls the ``M_out``
rows of the identity back the same way: the full Jacobian by reverse mode (S18). The
engines check nothing: :func:`fnn.value_and_grad` and :func:`fnn.jacobian`
(:mod:`fnn.derivatives`) did, once.

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

from fnn import _scan, activations, layer, local_jacobians, losses, network
from fnn.layer import Cache
from fnn.network import MLP

__all__ = [
    "EXPLICIT_MAX_BYTES",
    "NeuronGrads",
    "explicit",
    "explicit_bytes",
    "jacobian_explicit",
    "jacobian_reverse",
    "neuron_backward",
    "neuron_forward",
    "reverse",
]

EXPLICIT_MAX_BYTES = 2**28  # 256 MiB
"""The explicit engine's default memory limit, 256 MiB, above which a call is refused.

The explicit engine holds, per example and layer, the dense ``J_f`` ``(M × M)`` and
``∂L/∂W`` ``(M × D)``; above this many bytes for one call it refuses instead of exhausting
memory.
"""


# ---------------------------------------------------------------------------------------
# S14: one neuron, its forward cache (x, a, z) and the lecture's four derivatives.
# ---------------------------------------------------------------------------------------


class NeuronGrads(NamedTuple):
    """The derivatives of L for one neuron (S14), named after the variable."""

    a: jax.Array
    """``∂L/∂a``, a scalar."""
    b: jax.Array
    """``∂L/∂b``, a scalar."""
    w: jax.Array
    """``∂L/∂wᵢ``, shape ``(D,)``."""
    x: jax.Array
    """``∂L/∂xᵢ``, shape ``(D,)``."""


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
    return NeuronGrads(a=dL_da, b=dL_da, w=dL_da * cache.z_prev, x=dL_da * w)


# ---------------------------------------------------------------------------------------
# S17, explicit: the lecture's product of dense Jacobian matrices, one example at a time.
# ---------------------------------------------------------------------------------------


def _explicit_single(net: MLP, params, x, y, loss: losses.Loss):
    """Loss and gradients of ONE example by the lecture's dense Jacobians (S17).

    ``g = J_L(ŷ)``; then for i = N … 1, :func:`fnn.layer.vjp_explicit`:
    ``δ = g · J_f⁽ⁱ⁾(a⁽ⁱ⁾)`` (a dense ``(M, M)`` matrix), ``∂L/∂b⁽ⁱ⁾ = δ · I``,
    ``∂L/∂W⁽ⁱ⁾ = δ ⊗ z⁽ⁱ⁻¹⁾``, ``∂L/∂p⁽ⁱ⁾ = g · J_z(p)``, ``g ← δ · W⁽ⁱ⁾``; ``∂L/∂x = g``.
    Every layer unrolled, even in runs of identical layers: it is the lecture's formula
    written out layer by layer, and its O(M²) memory caps it at small networks anyway.
    """
    y_hat, caches = network.run_with_cache(net, params, x)
    g = loss.jacobian(y_hat, y)  # ∂L/∂z⁽ᴺ⁾ = J_L(ŷ), the loss row of S16
    grads = [None] * net.num_layers
    for i in reversed(range(net.num_layers)):
        grads[i], g = layer.vjp_explicit(params[i], net.activations[i], caches[i], g)
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


def explicit(net: MLP, params, x, y, loss: losses.Loss):
    """The explicit engine (S17): the dense chain per example, ``jax.vmap`` over a batch
    ``(B, D)``, then the mean over the batch. Allowed to be slow; memory
    :func:`explicit_bytes`, which :func:`fnn.value_and_grad` checks against its
    ``max_bytes`` before calling. Unchecked."""
    batch = 1 if x.ndim == 1 else x.shape[0]
    if x.ndim == 1:
        return _explicit_single(net, params, x, y, loss)
    values, grads = jax.vmap(lambda x, y: _explicit_single(net, params, x, y, loss))(x, y)
    mean_params = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads["params"])
    return jnp.mean(values), {"params": mean_params, "x": grads["x"] / batch}


# ---------------------------------------------------------------------------------------
# S17, reverse: the same loop, structured and batch-native.
# ---------------------------------------------------------------------------------------


def reverse(net: MLP, params, x, y, loss: losses.Loss):
    """The reverse engine (S17): the batch-first forward pass, then ``G = J_L(Ŷ) / B`` and
    :func:`fnn.layer.vjp_batch` from the last layer to the first over the cache. ``x`` is
    ``(D,)`` (run as a batch of one) or ``(B, D)``. Unchecked.

    With ``net.scan_per_layer_results``, a run of identical layers is one ``lax.scan``
    forward and one backward over the stacked cache, its gradients unstacked into the
    per-layer list at the end (tested equal to the unrolled loop)."""
    if x.ndim == 1:
        value, grads = reverse(net, params, x[None], y[None], loss)
        return value, {"params": grads["params"], "x": grads["x"][0]}
    fold = _scan.layers(net, params, per_layer_results=True)
    y_hat, caches = fold.forward(layer.forward_batch, x)
    value = jnp.mean(jax.vmap(loss.fn)(y_hat, y))
    G = jax.vmap(loss.jacobian)(y_hat, y) / x.shape[0]  # ∂(mean L)/∂Ŷ: the 1/B once
    G, grads = fold.backward(layer.vjp_batch, G, caches)
    return value, {"params": fold.per_layer(grads), "x": G}


# ---------------------------------------------------------------------------------------
# S18, reverse mode: the full Jacobian, one row of the identity per output.
# ---------------------------------------------------------------------------------------


def jacobian_reverse(net: MLP, params, x: jax.Array) -> jax.Array:
    """``J_nn(x)`` ``(M_out, D_in)`` of one example by reverse mode (S18): ``G = I_M``, then
    ``G ← (G · J_f(a)) W`` from the last layer to the first through the cached forward
    pass. ``M_out`` rows at once; no diagonal ``J_f`` built. Unchecked."""
    fold = _scan.layers(net, params)  # the cache stays stacked: nothing is returned per layer
    y, caches = fold.forward(layer.forward_batch, x)
    G = jnp.eye(y.shape[0], dtype=y.dtype)
    return fold.backward(layer.pull_back, G, caches)[0]


def jacobian_explicit(net: MLP, params, x: jax.Array) -> jax.Array:
    """``J_nn(x)`` as S17 writes it: ``J_fout · Wᴺ · … · J_f¹ · W¹``, every ``J_f`` a dense
    ``(M, M)`` matrix even when it is diagonal, multiplied left to right (the order
    :func:`fnn.cost_model.jacobian_macs` counts for ``"explicit"``). Unchecked."""
    _, caches = network.run_with_cache(net, params, x)
    J = None
    for p, f, cache in reversed(list(zip(params, net.activations, caches))):
        J_f = local_jacobians.activation(f, cache.a, **layer.activation_params(p))
        J = J_f if J is None else local_jacobians.chain(J, J_f)
        J = local_jacobians.chain(J, local_jacobians.affine_x(p["W"]))
    return J
