"""What the curvature modules share: the checks at their door and the fold over the batch in
chunks that fit ``max_bytes`` (S27–S29).

Private machinery of :mod:`fnn.curvature`, :mod:`fnn.hessian_backprop` and
:mod:`fnn.gauss_newton`: the public functions there call :func:`check_problem` once, then
engines that check nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnn import _checks, derivatives, network

__all__ = [
    "CURVATURE_MAX_BYTES",
    "as_params",
    "check_direction",
    "check_max_bytes",
    "check_problem",
    "in_chunks",
    "like",
    "param_bytes",
    "plan_chunks",
]

CURVATURE_MAX_BYTES = 2**28  # 256 MiB
"""The curvature engines' default memory limit, 256 MiB, above which a call is refused.

It counts dense per-example matrices, or a dense Hessian.
"""


def as_params(tree) -> list:
    """Every leaf of a checked parameter list as an array (plain lists work, as for ``x``)."""
    return [{k: jnp.asarray(t) for k, t in layer.items()} for layer in tree]


def check_problem(net, params, x, y, loss):
    """The checks every curvature function shares (:func:`fnn.derivatives.check_loss_problem`,
    those of :func:`fnn.value_and_grad`); returns ``(Loss, params as arrays, X (B, D), Y)``,
    one example as a batch of 1."""
    loss_fn, x, y = derivatives.check_loss_problem(net, params, x, y, loss)
    X, Y = (x, y) if x.ndim == 2 else (x[None], y[None])
    return loss_fn, as_params(params), X, Y


def check_direction(net, params, v, name: str = "v") -> list:
    """``v`` like ``params`` (``ValueError``/``TypeError`` naming it otherwise, ``None``
    included), as arrays in the dtype of each parameter (as the R-operator computes)."""
    if v is None:
        raise TypeError(
            f"{name} must be a direction like params (a list of {net.num_layers} per-layer "
            f"dicts of arrays); got None."
        )
    _checks.check_params(net, v, name)
    return [
        {k: jnp.asarray(t, jnp.result_type(p[k])) for k, t in layer.items()}
        for layer, p in zip(v, params)
    ]


def param_bytes(net, dtype) -> int:
    """Bytes of one array of every parameter of ``net`` (a gradient, a diagonal)."""
    return network.summary(net).num_params * np.dtype(dtype).itemsize


def check_max_bytes(max_bytes) -> int:
    """``max_bytes`` (``None``: :data:`CURVATURE_MAX_BYTES`) as a positive int."""
    return _checks.check_positive_int(
        CURVATURE_MAX_BYTES if max_bytes is None else max_bytes, "max_bytes"
    )


def like(tree, params):
    """``tree`` in the dtypes of ``params``, leaf by leaf (as ``jax.grad`` returns them)."""
    return jax.tree.map(lambda t, p: jnp.asarray(t, jnp.result_type(p)), tree, params)


def plan_chunks(
    B: int,
    per_example: int,
    result: int,
    max_bytes: int,
    *,
    what: str,
    instead: str,
    stacked: bool = False,
) -> int:
    """The number of examples per chunk so that ``chunk · per_example`` bytes of work and the
    ``result`` fit ``max_bytes``; refuses (:func:`fnn._checks.check_limit`) before anything
    is allocated when one example does not fit. A summed result is held twice once the batch
    is split (the running sum and a chunk's part); a ``stacked`` one (per-example results,
    ``result`` counts all of them) once."""
    if B * per_example + result <= max_bytes:
        return B
    held = result if stacked or B == 1 else 2 * result
    _checks.check_limit(per_example + held, max_bytes, name="max_bytes", what=what, instead=instead)
    return int((max_bytes - held) // per_example)


def in_chunks(run, X, Y, chunk: int, weights, *, keys=None, stacked: bool = False):
    """``Σ`` over chunks of ``chunk`` examples of ``run(X_c, Y_c, w_c[, key_c])``, weights
    ``w`` per example (0 for the padding of the last chunk); one call when the batch fits.
    ``stacked=True``: the per-example results of the chunks one after the other instead.

    A sum runs in a ``jax.lax.scan`` that carries it, so a result is held twice (the sum and
    the chunk's part), never once per chunk. ``keys`` (optional, one PRNG key per example)
    are split along with the examples."""
    B = X.shape[0]
    extra = () if keys is None else (keys,)
    if chunk >= B:
        return run(X, Y, weights, *extra)
    n = -(-B // chunk)
    rows = jnp.arange(n * chunk)
    idx = (rows % B).reshape(n, chunk)  # the last chunk padded with weight 0
    w = jnp.where(rows < B, weights[rows % B], 0).reshape(n, chunk)

    def part(iw):
        return run(X[iw[0]], Y[iw[0]], iw[1], *(k[iw[0]] for k in extra))

    if stacked:
        parts = jax.lax.map(part, (idx, w))
        return jax.tree.map(lambda t: t.reshape(n * chunk, *t.shape[2:])[:B], parts)

    def step(total, iw):
        return jax.tree.map(jnp.add, total, part(iw)), None

    return jax.lax.scan(step, part((idx[0], w[0])), (idx[1:], w[1:]))[0]
