r"""The exact Hessian's diagonal and blocks by Hessian backpropagation (S28, Bishop 5.4.1).

Per example, from the loss down (:func:`fnn.layer_curvature.hessian_backward`)::

    H_z⁽ᴺ⁾ = H_L,   H_a⁽ⁱ⁾ = J_f⁽ⁱ⁾ᵀ H_z⁽ⁱ⁾ J_f⁽ⁱ⁾ + Σₖ gₖ ∇²fₖ(a⁽ⁱ⁾),
    H_z⁽ⁱ⁻¹⁾ = W⁽ⁱ⁾ᵀ H_a⁽ⁱ⁾ W⁽ⁱ⁾

(the residual ``Σ gₖ ∇²fₖ`` is ``diag(f″ ⊙ ∂L/∂z)`` for an elementwise f). Since
``a = W z + b`` is linear in the layer's own ``W, b``, its block of ``∇²θ L`` is
``H_a ⊗ z zᵀ`` (plus PReLU's α), and the diagonal of the whole Hessian is the diagonals of
these blocks: ``(H_a)_jj z_k²`` for ``W_jk``, summed over the examples (or kept apart:
:func:`per_example_hessian_diagonal`, BackPACK's ``BatchDiagHessian``).

Hessian backpropagation holds dense ``(M, M)`` matrices per example and layer: it runs over
the batch in chunks that fit ``max_bytes`` (:func:`hessian_backprop_bytes`) and refuses,
before allocating, when one example does not, naming :func:`fnn.hvp` (matrix-free) and, for
the Gauss–Newton part, :mod:`fnn.gauss_newton` (C backward passes of a factor of ``H_L``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnn import _curvature, layer_curvature, network
from fnn.network import MLP, Params

__all__ = [
    "block_bytes",
    "hessian_backprop_bytes",
    "hessian_blocks",
    "hessian_diagonal",
    "per_example_hessian_diagonal",
]


def hessian_backprop_bytes(net: MLP, batch: int, dtype) -> int:
    """Memory of Hessian backpropagation for ``batch`` examples: ``B · (Σᵢ Mᵢ² + Σ_{i≥2} Dᵢ²)``
    numbers — every example's ``H_a⁽ⁱ⁾`` ``(Mᵢ, Mᵢ)`` and ``H_z⁽ⁱ⁻¹⁾`` ``(Dᵢ, Dᵢ)`` (none for
    the input).

    >>> net = MLP((784, 512, 512, 10), ("tanh", "tanh", "identity"))
    >>> hessian_backprop_bytes(net, 1, "float32")  # 4 · (512² + 512² + 10² + 512² + 512²)
    4194704
    """
    per_example = sum(M * M for M in net.sizes[1:]) + sum(D * D for D in net.sizes[1:-1])
    return batch * per_example * np.dtype(dtype).itemsize


def _backprop(net, params, loss, collect, X, Y, w):
    """Fold :func:`fnn.layer_curvature.hessian_backward` from the loss down for the examples ``X``
    weighted by ``w``; ``collect(p, cache, lh)`` per layer."""
    Y_hat, caches = network.run_with_cache(net, params, X)
    G = w[:, None] * jax.vmap(loss.jacobian)(Y_hat, Y)
    H = w[:, None, None] * jax.vmap(loss.hessian)(Y_hat, Y)
    out = [None] * net.num_layers
    for i in reversed(range(net.num_layers)):  # unrolled: the first layer needs no H_z of x
        lh, G, H = layer_curvature.hessian_backward(
            params[i], net.activations[i], caches[i], G, H, input_hessian=i > 0
        )
        out[i] = collect(params[i], caches[i], lh)
    return out


def _diagonal(p, cache, lh):
    return layer_curvature.param_hessian_diagonal(cache, lh)


def _per_example_diagonal(p, cache, lh):
    H_jj = jnp.diagonal(lh.a, axis1=-2, axis2=-1)  # (B, M)
    s = jnp.max(jnp.abs(cache.z_prev), axis=-1, keepdims=True)
    s = jnp.where(s > 0, s, 1)  # (H s) s (z/s)²: no 0 · ∞ where z² alone overflows
    W = ((H_jj * s) * s)[:, :, None] * ((cache.z_prev / s) ** 2)[:, None, :]
    return {"W": W, "b": H_jj, **lh.param}


def _diagonal_sizes(net, dtype, B):  # nothing per example but H_a, H_z; P numbers
    return 0, _curvature.param_bytes(net, dtype)


def _per_example_sizes(net, dtype, B):  # one diagonal per example, B of them kept
    P = _curvature.param_bytes(net, dtype)
    return P, B * P


def _block(p, cache, lh):
    return layer_curvature.param_hessian_block(p, cache, lh)


def _run(net, params, x, y, loss, collect, max_bytes, what, instead, sizes, *, each=False):
    """Check, plan the chunks (``sizes(net, dtype, B)``: bytes per example besides
    :func:`hessian_backprop_bytes`, and bytes of the result; a refusal names ``instead``),
    then fold."""
    loss_fn, params, X, Y = _curvature.check_problem(net, params, x, y, loss)
    max_bytes = _curvature.check_max_bytes(max_bytes)
    dtype = jnp.result_type(X, *jax.tree.leaves(params))
    B = X.shape[0]
    extra, result = sizes(net, dtype, B)
    per_example = hessian_backprop_bytes(net, 1, dtype) + extra
    chunk = _curvature.plan_chunks(
        B, per_example, result, max_bytes, what=what, instead=instead, stacked=each
    )
    run = functools.partial(_backprop, net, params, loss_fn, collect)
    w = jnp.full(B, 1 if each else 1 / B, dtype)
    return _curvature.in_chunks(run, X, Y, chunk, w, stacked=each), params


def hessian_diagonal(net: MLP, params: Params, x, y, *, loss="l2", max_bytes: int | None = None):
    r"""The exact diagonal of ``∇²θ L`` (S28), like ``params``, by Hessian backpropagation:

    .. math::  \frac{∂^2 L}{∂W_{jk}^2} = \frac1B \sum_b (H_a)_{b,jj}\, z_{b,k}^2, \qquad
               \frac{∂^2 L}{∂b_j^2} = \frac1B \sum_b (H_a)_{b,jj}

    with the full ``H_a`` of every example and layer carried down (the diagonal of
    ``Wᵀ H_a W`` needs all of ``H_a``). PReLU's α: ``∂f/∂αᵀ H_z ∂f/∂α``.

    Args:
      net, params, x, y, loss: as in :func:`fnn.value_and_grad`.
      max_bytes: the memory limit (default ``fnn.curvature.CURVATURE_MAX_BYTES``, 256 MiB): the
        batch runs in chunks of :func:`hessian_backprop_bytes`; a call whose one example (and
        the result) exceeds it is refused before anything is allocated.

    Raises:
      As :func:`fnn.value_and_grad`; ``ValueError`` over the memory limit (naming
      :func:`fnn.hvp` and :func:`fnn.ggn_diagonal`) or a ``max_bytes`` that is not a
      positive integer.
    """
    d, params = _run(
        net, params, x, y, loss, _diagonal, max_bytes, "hessian_diagonal",
        "Use fnn.hvp (matrix-free), or fnn.ggn_diagonal (the Gauss–Newton part, C backward "
        "passes).",
        _diagonal_sizes,
    )  # fmt: skip
    return _curvature.like(d, params)


def per_example_hessian_diagonal(
    net: MLP, params: Params, x, y, *, loss="l2", max_bytes: int | None = None
):
    r"""The diagonal of every example's own Hessian ``∇²θ L(nn_θ(x_b), y_b)`` (S28; BackPACK's
    ``BatchDiagHessian``), like ``params`` with a leading axis B: ``(H_a)_{b,jj} z_{b,k}²``
    per example, never a per-example block. Their mean over b is :func:`hessian_diagonal`.
    Arguments and errors as :func:`hessian_diagonal` (the B diagonals count against
    ``max_bytes``)."""
    d, params = _run(
        net, params, x, y, loss, _per_example_diagonal, max_bytes, "per_example_hessian_diagonal",
        "Use fnn.hessian_diagonal (summed over the batch) or fnn.per_example_ggn_diagonal.",
        _per_example_sizes, each=True,
    )  # fmt: skip
    return jax.tree.map(lambda t, p: t.astype(jnp.result_type(p)), d, params)


def block_bytes(net: MLP, dtype) -> tuple[int, int]:
    """Bytes per example of the local Jacobians ``U`` (``(Mᵢ + n_α, Pᵢ)`` per layer), and of
    the blocks ``Σᵢ Pᵢ²`` themselves."""
    sizes = [
        (shapes["b"][0] + len(shapes) - 2, sum(int(np.prod(s)) for s in shapes.values()))
        for shapes in net.layer_shapes()
    ]
    item = np.dtype(dtype).itemsize
    return sum(u * P for u, P in sizes) * item, sum(P * P for _, P in sizes) * item


def hessian_blocks(net: MLP, params: Params, x, y, *, loss="l2", max_bytes: int | None = None):
    """The exact diagonal blocks of ``∇²θ L``, one ``(P_i, P_i)`` matrix per layer in
    ``ravel_pytree(params[i])`` order (``W`` row-major, then ``alpha``, then ``b``) (S28):
    ``Σ_b Uᵀ H_u U`` (:func:`fnn.layer_curvature.param_hessian_block`). The blocks count against
    ``max_bytes`` too; errors as :func:`hessian_diagonal`."""
    blocks, _ = _run(
        net, params, x, y, loss, _block, max_bytes, "hessian_blocks",
        "Use fnn.hessian_diagonal, or fnn.hvp (matrix-free).",
        lambda net, dtype, B: block_bytes(net, dtype),
    )  # fmt: skip
    return blocks
