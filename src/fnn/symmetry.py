r"""What a network's parameters do not determine: linear collapse and symmetries (S8, S9).

Two facts of the lecture, each a function you can run:

* **Linear collapse (S8).** With ``f = identity`` in every hidden layer the network is one
  affine map: ``W = Wᴺ ⋯ W²W¹``, ``b = Wᴺ(⋯(W²b¹ + b²)⋯) + bᴺ``, so
  ``nn_θ(x) = f_out(W x + b)`` — no depth buys anything without a non-linearity.
* **Parameter-space symmetries (S9).** Permuting the M hidden units of a layer (M!
  ways), or flipping the sign of a unit's incoming weights, bias and outgoing weights
  (2^M ways, for an odd activation ``f(−a) = −f(a)``; for sigmoid with the bias correction
  from ``σ(−a) = 1 − σ(a)``), gives different parameters and the same network function:
  M!·2^M equivalent parameter vectors per hidden layer.

The layer index ``i`` in this module is the position in ``params`` of the layer that
*produces* the hidden units (``0 ≤ i < N − 1``); the transformation also touches the
next layer ``i + 1``, which consumes them. Everything numerical is jit-compatible.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fnn import activations
from fnn._checks import check_net, check_params
from fnn.network import MLP, Params

__all__ = [
    "collapse",
    "flip",
    "network_symmetry_count",
    "permute",
    "random_symmetry",
    "symmetry_count",
]


def _flip_offset(name: str) -> float | None:
    """c with f(−a) = c − f(a) (``Activation.flip_offset``: 0 for odd f, 1 for sigmoid, whose
    flip needs a bias correction), or None: ReLU, softplus, ELU, … have no such identity."""
    return activations.get(name).flip_offset


def _check_net_and_params(net, params) -> None:
    check_net(net)
    check_params(net, params)


# ---------------------------------------------------------------------------------------
# S8: linear collapse.
# ---------------------------------------------------------------------------------------


def collapse(net: MLP, params: Params) -> tuple[jax.Array, jax.Array]:
    r"""The single affine map ``(W, b)`` a network with linear hidden layers equals (S8).

    .. math::  W = W^{(N)} \cdots W^{(2)} W^{(1)}, \qquad
               b = W^{(N)}(\cdots(W^{(2)} b^{(1)} + b^{(2)})\cdots) + b^{(N)},

    so that ``nn_θ(x) = f_out(W x + b)`` for every ``x``; with an identity output it is
    exactly ``W x + b``.

    Args:
      net: an :class:`~fnn.MLP` whose hidden activations are all ``"identity"``
        (the output activation may be anything).
      params: its parameters.

    Returns:
      ``(W, b)`` of shapes ``(M_out, D)`` and ``(M_out,)``.

    Raises:
      ValueError: ``net`` is not an :class:`~fnn.MLP`, a hidden layer has a non-linear
        activation, or ``params`` does not match ``net``.

    >>> import fnn
    >>> net = fnn.MLP((3, 5, 4, 2), ("identity", "identity", "identity"))
    >>> W, b = collapse(net, fnn.init(jax.random.key(0), net))
    >>> W.shape, b.shape
    ((2, 3), (2,))
    """
    _check_net_and_params(net, params)
    nonlinear = [(i, f) for i, f in enumerate(net.activations[:-1]) if f != "identity"]
    if nonlinear:
        i, f = nonlinear[0]
        raise ValueError(
            f"collapse needs every hidden activation to be 'identity'; layer {i + 1} "
            f"(params[{i}]) of {net.activations} is {f!r}, which is not linear."
        )
    W, b = params[0]["W"], params[0]["b"]
    for layer_params in params[1:]:
        W, b = layer_params["W"] @ W, layer_params["W"] @ b + layer_params["b"]
    return W, b


# ---------------------------------------------------------------------------------------
# S9: permutations and sign flips of hidden units.
# ---------------------------------------------------------------------------------------


def _check_hidden_layer(net: MLP, params: Params, layer) -> int:
    _check_net_and_params(net, params)
    hidden = net.num_layers - 1
    if (
        isinstance(layer, bool)
        or not isinstance(layer, (int, np.integer))
        or not (0 <= layer < hidden)
    ):
        raise ValueError(
            f"layer must be the index of a hidden layer in params, an int in [0, {hidden}) "
            f"for sizes {net.sizes}; got {layer!r}."
        )
    return int(layer)


def permute(net: MLP, params: Params, layer: int, perm) -> Params:
    r"""Reorder the hidden units of one layer; the network function is unchanged (S9).

    Unit ``j`` of the new layer is unit ``π(j)`` of the old one: its row of ``Wⁱ``, its
    bias, and its column of ``Wⁱ⁺¹`` move together,

    .. math::  W^{(i)} ← P W^{(i)}, \quad b^{(i)} ← P b^{(i)}, \quad W^{(i+1)} ← W^{(i+1)} P^⊤,

    and ``f(P a) = P f(a)`` for every activation in fnn (elementwise ones and softmax), so
    ``W^{(i+1)} P^⊤ f(P a) = W^{(i+1)} f(a)``. M units have M! orderings.

    Args:
      net: the architecture.
      params: its parameters.
      layer: index in ``params`` of the layer whose output units are permuted (a hidden
        layer, ``0 ≤ layer < N − 1``).
      perm: a permutation of ``range(M)`` (sequence or integer array of shape ``(M,)``).

    Returns:
      New parameters (the input is not modified).

    Raises:
      ValueError: ``net`` is not an :class:`~fnn.MLP`, ``layer`` is not a hidden layer, or
        ``perm`` is not a permutation of ``range(M)`` (its values are checked where they are
        concrete).
    """
    i = _check_hidden_layer(net, params, layer)
    M = net.sizes[i + 1]
    if tuple(np.shape(perm)) != (M,):
        raise ValueError(
            f"perm must be a permutation of range({M}) of shape ({M},) for layer {i}; "
            f"got shape {tuple(np.shape(perm))}."
        )
    if not isinstance(perm, jax.core.Tracer):
        values = np.asarray(perm)
        if not np.issubdtype(values.dtype, np.integer) or sorted(values.tolist()) != list(range(M)):
            raise ValueError(f"perm must be a permutation of range({M}); got {values.tolist()}.")
    perm = jnp.asarray(perm)
    new = [dict(layer_params) for layer_params in params]
    new[i]["W"] = params[i]["W"][perm]
    new[i]["b"] = params[i]["b"][perm]
    new[i + 1]["W"] = params[i + 1]["W"][:, perm]
    return new


def flip(net: MLP, params: Params, layer: int, mask) -> Params:
    r"""Flip the signs of chosen hidden units; the network function is unchanged (S9).

    For a unit ``j`` with ``mask[j]`` true, its incoming weights, its bias and its outgoing
    weights change sign. With ``f(−a) = c − f(a)`` (``c = 0`` for odd ``f`` such as tanh;
    ``c = 1`` for sigmoid, ``σ(−a) = 1 − σ(a)``) the next layer needs the bias correction

    .. math::  w^{(i+1)}_{kj}\, f(a_j) = (−w^{(i+1)}_{kj})\, f(−a_j) + c\, w^{(i+1)}_{kj}
               \quad⇒\quad b^{(i+1)} ← b^{(i+1)} + c\, W^{(i+1)} \mathrm{mask}.

    M units have 2^M sign patterns.

    Args:
      net: the architecture; the activation of ``layer`` must be one of
        ``Activation.flip_offset`` (identity, tanh, hard_tanh, sin, sigmoid).
      params: its parameters.
      layer: index in ``params`` of the layer whose output units are flipped (a hidden
        layer, ``0 ≤ layer < N − 1``).
      mask: booleans of shape ``(M,)``, true for the units to flip.

    Returns:
      New parameters (the input is not modified).

    Raises:
      ValueError: ``net`` is not an :class:`~fnn.MLP`, ``layer`` is not a hidden layer, its
        activation has no sign-flip symmetry (ReLU, softplus, …), or ``mask`` has the wrong
        shape.
    """
    i = _check_hidden_layer(net, params, layer)
    f = net.activations[i]
    offset = _flip_offset(f)
    if offset is None:
        flippable = tuple(n for n in activations.names() if _flip_offset(n) is not None)
        raise ValueError(
            f"flip needs an activation with f(−a) = c − f(a), one of {flippable}; "
            f"layer {i} (params[{i}]) has {f!r}, which has no sign-flip symmetry."
        )
    M = net.sizes[i + 1]
    if tuple(np.shape(mask)) != (M,):
        raise ValueError(
            f"mask must have shape ({M},) for the {M} units of layer {i}; "
            f"got {tuple(np.shape(mask))}."
        )
    mask = jnp.asarray(mask, bool)
    W_next = params[i + 1]["W"]
    s = jnp.where(mask, -1, 1).astype(W_next.dtype)  # the sign of each unit
    new = [dict(layer_params) for layer_params in params]
    new[i]["W"] = s[:, None] * params[i]["W"]
    new[i]["b"] = s * params[i]["b"]
    new[i + 1]["W"] = W_next * s[None, :]
    new[i + 1]["b"] = params[i + 1]["b"] + offset * (W_next @ mask.astype(W_next.dtype))
    return new


def random_symmetry(key: jax.Array, net: MLP, params: Params) -> Params:
    """Apply a random permutation and, where the activation allows, random sign flips to
    every hidden layer (S9): a random point of θ's symmetry orbit, same function.

    Raises:
      ValueError: ``net`` is not an :class:`~fnn.MLP`, or ``params`` does not match it.
    """
    _check_net_and_params(net, params)
    if net.num_layers < 2:
        return params
    for i, key_i in enumerate(jax.random.split(key, net.num_layers - 1)):
        perm_key, flip_key = jax.random.split(key_i)
        M = net.sizes[i + 1]
        params = permute(net, params, i, jax.random.permutation(perm_key, M))
        if _flip_offset(net.activations[i]) is not None:
            params = flip(net, params, i, jax.random.bernoulli(flip_key, 0.5, (M,)))
    return params


def symmetry_count(M: int, *, flips: bool = True) -> int:
    """The number of parameter vectors per hidden layer of M units with the same function:
    ``M! · 2^M`` (S9), or ``M!`` when the activation has no sign-flip symmetry.

    >>> symmetry_count(3)
    48
    """
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 0:
        raise ValueError(f"M must be a non-negative integer number of units; got {M!r}.")
    return math.factorial(M) * (2**M if flips else 1)


def network_symmetry_count(net: MLP) -> int:
    """The product of :func:`symmetry_count` over the hidden layers of ``net`` (S9): how many
    equivalent copies every minimum of the loss has (Python int, exact).

    >>> network_symmetry_count(MLP((1, 3, 1), ("tanh", "identity")))
    48
    """
    check_net(net)
    return math.prod(
        symmetry_count(M, flips=_flip_offset(f) is not None)
        for M, f in zip(net.sizes[1:-1], net.activations[:-1])
    )
