r"""Feed-forward networks as pure functions (S1–S5).

The contract, stated once:

* ``net = MLP(sizes, activations)`` is static configuration: frozen, hashable, a static
  pytree node, so ``jax.jit(apply)(net, params, x)`` works without ``static_argnums``.
* ``params = init(key, net)`` is the only pytree of arrays: a list with one dict per layer,
  ``{"W": (M, D), "b": (M,)}`` (``W`` is outputs × inputs, as in the lecture); a layer whose
  activation has learnable parameters (PReLU's ``"alpha"``) holds them in the same dict.
* ``apply(net, params, x)`` computes, for i = 1 … N,

  .. math::  a^{(i)} = W^{(i)} z^{(i-1)} + b^{(i)}, \qquad z^{(i)} = f^{(i)}(a^{(i)}),

  with ``z⁽⁰⁾ = x`` and ``y = z⁽ᴺ⁾`` (``f⁽ᴺ⁾`` is the output activation ``f_out``), for one
  example ``x`` of shape ``(D,)`` or a batch of shape ``(B, D)``.

Every check on shapes and names happens here, in Python, before anything is traced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import activations, scan

__all__ = [
    "MLP",
    "SCHEMES",
    "Cache",
    "Summary",
    "activation_params",
    "apply",
    "apply_augmented",
    "augment",
    "check_input",
    "check_key",
    "check_params",
    "check_positive_int",
    "forward",
    "init",
    "layer",
    "layer_step",
    "neuron",
    "split_augmented",
    "summary",
]

Params = list  # list[dict[str, jax.Array]], one dict per layer


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class MLP:
    """A multilayer perceptron's architecture (S4): widths and one activation per layer.

    ``sizes = (D, M¹, …, Mᴺ)`` are the widths from the input to the output;
    ``activations = (f¹, …, fᴺ)`` name the activation of each of the ``N = len(sizes) − 1``
    layers, the last one being the output activation ``f_out``.

    Raises:
      ValueError: fewer than two sizes, a width that is not a positive integer, not exactly
        one activation per layer, or an unknown activation name.

    >>> MLP((10, 10, 10, 10), ("sigmoid", "sigmoid", "identity")).num_layers
    3
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]

    def __post_init__(self):
        sizes, acts = self.sizes, self.activations
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise ValueError(f"sizes must be a sequence of widths (D, M¹, …, Mᴺ); got {sizes!r}.")
        if isinstance(acts, str) or not isinstance(acts, Sequence):
            raise ValueError(
                f"activations must be a sequence of names, one per layer; got {acts!r}."
            )
        sizes, acts = tuple(sizes), tuple(acts)
        if len(sizes) < 2:
            raise ValueError(
                f"sizes must hold at least two widths (input and output); got {sizes}."
            )
        for i, width in enumerate(sizes):
            if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
                raise ValueError(
                    f"sizes[{i}] must be a positive integer width; got {width!r} in {sizes}."
                )
        if len(acts) != len(sizes) - 1:
            raise ValueError(
                f"activations must name one activation per layer: {len(sizes) - 1} for "
                f"sizes {sizes}; got {len(acts)}: {acts}."
            )
        for i, name in enumerate(acts):
            if not isinstance(name, str) or name not in activations.names():
                raise ValueError(
                    f"activations[{i}] must be one of {activations.names()}; got {name!r}."
                )
        object.__setattr__(self, "sizes", tuple(int(w) for w in sizes))
        object.__setattr__(self, "activations", acts)

    @property
    def num_layers(self) -> int:
        """Bishop's layer count N: the number of weight matrices (S5)."""
        return len(self.sizes) - 1

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    @property
    def out_features(self) -> int:
        return self.sizes[-1]

    def layer_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every parameter, layer by layer, as ``init`` creates them."""
        shapes = []
        for D, M, name in zip(self.sizes[:-1], self.sizes[1:], self.activations):
            layer_shape = {"W": (M, D), "b": (M,)}
            layer_shape.update({p: () for p in activations.get(name).params})
            shapes.append(layer_shape)
        return shapes


def check_net(net) -> MLP:
    """``net`` if it is an :class:`MLP`; else a ``TypeError`` naming what was passed (every
    public function that takes ``net`` calls this first)."""
    if not isinstance(net, MLP):
        hint = " (arguments in the order net, params, …?)" if isinstance(net, (list, tuple)) else ""
        raise TypeError(f"net must be an fnn.MLP; got {type(net).__name__}{hint}.")
    return net


# ---------------------------------------------------------------------------------------
# Initialisation (S4): W ~ N(0, σ²) or U(−l, l) with σ, l from the fan-in D and fan-out M.
# ---------------------------------------------------------------------------------------


def _normal(std):
    return lambda key, shape, dtype: std * jax.random.normal(key, shape, dtype)


def _uniform(limit):
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -limit, limit)


SCHEMES = {
    # Glorot & Bengio (2010): Var W = 2 / (D + M).
    "glorot_normal": lambda D, M: _normal(math.sqrt(2 / (D + M))),
    "glorot_uniform": lambda D, M: _uniform(math.sqrt(6 / (D + M))),
    # He et al. (2015), for ReLU: Var W = 2 / D.
    "he_normal": lambda D, M: _normal(math.sqrt(2 / D)),
    "he_uniform": lambda D, M: _uniform(math.sqrt(6 / D)),
    # LeCun (1998): Var W = 1 / D.
    "lecun_normal": lambda D, M: _normal(math.sqrt(1 / D)),
    # Plain N(0, 1), as torch.randn in the lecture's example; `scale` sets σ.
    "normal": lambda D, M: _normal(1.0),
}


def init(
    key: jax.Array, net: MLP, scheme: str = "glorot_normal", *, scale: float = 1.0, dtype=None
) -> Params:
    """Create the parameters θ = ((W¹, b¹), …, (Wᴺ, bᴺ)) of ``net`` from a PRNG key (S4).

    ``W⁽ⁱ⁾`` is drawn by ``scheme`` (its standard deviation / range multiplied by ``scale``),
    ``b⁽ⁱ⁾ = 0``, and an activation's learnable parameters start at their defaults
    (PReLU: ``alpha = 0.25``). The key is split once per layer: the same key always gives
    the same parameters.

    Args:
      key: a ``jax.random.key`` (or legacy ``PRNGKey``).
      net: the architecture.
      scheme: one of ``SCHEMES``: glorot_normal (default), glorot_uniform, he_normal,
        he_uniform, lecun_normal, normal.
      scale: a gain on the scheme's standard deviation (or range).
      dtype: floating dtype of the parameters (default: JAX's default float).

    Returns:
      A list of per-layer dicts ``{"W": (M, D), "b": (M,)}``.

    Raises:
      ValueError: unknown scheme, or ``net`` is not an :class:`MLP`.
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an fnn.MLP; got {type(net).__name__}.")
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown init scheme {scheme!r}; expected one of {tuple(SCHEMES)}.")
    dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    params = []
    for layer_key, D, M, name in zip(
        jax.random.split(key, net.num_layers), net.sizes[:-1], net.sizes[1:], net.activations
    ):
        draw = SCHEMES[scheme](D, M)
        layer_params = {"W": scale * draw(layer_key, (M, D), dtype), "b": jnp.zeros((M,), dtype)}
        for p, value in activations.get(name).params.items():
            layer_params[p] = jnp.asarray(value, dtype)
        params.append(layer_params)
    return params


# ---------------------------------------------------------------------------------------
# Validation, in Python, before tracing.
# ---------------------------------------------------------------------------------------


def check_params(net: MLP, params: Params) -> None:
    """Raise ``ValueError`` unless ``params`` has exactly the layers and shapes of ``net``."""
    if not isinstance(params, (list, tuple)):
        raise ValueError(
            f"params must be a list of {net.num_layers} per-layer dicts; "
            f"got {type(params).__name__}."
        )
    if len(params) != net.num_layers:
        raise ValueError(
            f"params must hold {net.num_layers} layers for sizes {net.sizes}; got {len(params)}."
        )
    for i, (layer_params, expected) in enumerate(zip(params, net.layer_shapes())):
        if not isinstance(layer_params, dict) or set(layer_params) != set(expected):
            got = sorted(layer_params) if isinstance(layer_params, dict) else type(layer_params)
            raise ValueError(
                f"params[{i}] (layer {i + 1}, activation {net.activations[i]!r}) must be a dict "
                f"with keys {sorted(expected)}; got {got}."
            )
        for name, shape in expected.items():
            got = tuple(np.shape(layer_params[name]))
            if got != shape:
                raise ValueError(
                    f"params[{i}][{name!r}] (layer {i + 1}) must have shape {shape} for sizes "
                    f"{net.sizes}; got {got}."
                )


def check_positive_int(value, name: str) -> int:
    """``value`` as an int; ``ValueError`` naming ``name`` unless it is a positive integer
    (batch sizes, epochs, chunk sizes, repetitions, graph sizes)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def check_key(key, name: str = "key") -> None:
    """``TypeError`` unless ``key`` is one PRNG key: ``jax.random.key(seed)`` (shape ``()``)
    or a legacy ``jax.random.PRNGKey(seed)`` (``uint32``, shape ``(2,)``)."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    legacy = dtype == np.uint32 and tuple(np.shape(key)) == (2,)
    if not (typed and np.shape(key) == ()) and not legacy:
        raise TypeError(
            f"{name} must be one PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); "
            f"got {type(key).__name__} of shape {tuple(np.shape(key))}."
        )


def check_input(net: MLP, x) -> None:
    """Raise ``ValueError`` unless ``x`` is one example ``(D,)`` or a batch ``(B, D)``."""
    shape = tuple(np.shape(x))
    if len(shape) not in (1, 2) or shape[-1] != net.in_features:
        raise ValueError(
            f"x must have shape (D,) or (B, D) with D = {net.in_features}; got {shape}."
        )


# ---------------------------------------------------------------------------------------
# The forward pass (S1, S2, S4).
# ---------------------------------------------------------------------------------------


def neuron(w: jax.Array, b: jax.Array, x: jax.Array, f: str = "sigmoid") -> jax.Array:
    """One neuron (S1): ``a = Σᵢ wᵢ xᵢ + b``, ``z = f(a)``; ``w, x`` of shape ``(D,)``."""
    a = jnp.dot(w, x) + b
    return activations.get(f).fn(a)


def layer(layer_params: dict, x: jax.Array, f: str) -> tuple[jax.Array, jax.Array]:
    """One layer of M neurons (S2): ``a = W x + b``, ``z = f(a)``; returns ``(a, z)``.

    ``x`` has shape ``(D,)``; extra entries of ``layer_params`` (PReLU's ``alpha``) are the
    activation's own parameters.
    """
    W, b = layer_params["W"], layer_params["b"]
    a = W @ x + b
    z = activations.get(f).fn(a, **activation_params(layer_params))
    return a, z


def activation_params(layer_params: dict) -> dict:
    """The activation's own learnable parameters of a layer: every key but ``W`` and ``b``
    (PReLU's ``alpha``), passed to ``fn``/``derivative`` as ``**p``.

    >>> activation_params({"W": 1.0, "b": 0.0, "alpha": 0.25})
    {'alpha': 0.25}
    """
    return {k: v for k, v in layer_params.items() if k not in ("W", "b")}


class Cache(NamedTuple):
    """What the forward pass keeps of one layer for the backward pass (S14): its input
    ``x`` (= z⁽ⁱ⁻¹⁾), its pre-activation ``a`` and its output ``z``."""

    x: jax.Array
    a: jax.Array
    z: jax.Array


def layer_step(z: jax.Array, layer_params: dict, f: str, _=None) -> tuple[jax.Array, Cache]:
    """One layer as a :func:`run_layers` step: ``z ↦ (z', Cache(z, a, z'))`` (S2, S14)."""
    a, z_next = layer(layer_params, z, f)
    return z_next, Cache(z, a, z_next)


def _output_step(z: jax.Array, layer_params: dict, f: str, _=None) -> tuple[jax.Array, None]:
    return layer(layer_params, z, f)[1], None


# ---------------------------------------------------------------------------------------
# The forward pass (S4).
# ---------------------------------------------------------------------------------------


def _forward_single(net: MLP, params: Params, x: jax.Array):
    segs = scan.segments(net, per_layer_results=True)
    y, caches = scan.run_layers(segs, scan.group(segs, params), layer_step, x)
    return y, tuple(scan.ungroup(segs, caches))


def forward(net: MLP, params: Params, x: jax.Array) -> tuple[jax.Array, tuple[Cache, ...]]:
    """The forward pass with its cache: ``(y, (Cache(x, a¹, z¹), …, Cache(zᴺ⁻¹, aᴺ, y)))``.

    ``x`` is ``(D,)`` or ``(B, D)``; for a batch every cached array gains the leading axis B.
    """
    check_params(net, params)
    check_input(net, x)
    x = jnp.asarray(x)
    if x.ndim == 1:
        return _forward_single(net, params, x)
    return jax.vmap(_forward_single, in_axes=(None, None, 0))(net, params, x)


def apply(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The network function ``y = nn_θ(x)`` (S4), for ``x`` of shape ``(D,)`` or ``(B, D)``.

    .. math::  nn_θ(x) = f^{out}(W^{(N)} f^{(N-1)}(\\dots f^{(1)}(W^{(1)} x + b^{(1)}) \\dots)
               + b^{(N)})

    Runs of identical layers are scanned (:func:`fnn.scan.segments`); the result is the same.

    Raises:
      ValueError: ``params`` does not match ``net``, or ``x`` has the wrong width or rank.

    >>> net = MLP((3, 4, 2), ("tanh", "identity"))
    >>> apply(net, init(jax.random.key(0), net), jnp.ones(3)).shape
    (2,)
    """
    check_params(net, params)
    check_input(net, x)
    segs = scan.segments(net)
    grouped = scan.group(segs, params)

    def single(x):
        return scan.run_layers(segs, grouped, _output_step, x)[0]

    x = jnp.asarray(x)
    return single(x) if x.ndim == 1 else jax.vmap(single)(x)


# ---------------------------------------------------------------------------------------
# The augmented notation (S3): a = [b, W] [1; x] = Ŵ x̂.
# ---------------------------------------------------------------------------------------


def augment(layer_params: dict) -> jax.Array:
    """``Ŵ = [b, W]`` of shape ``(M, D + 1)``: the bias becomes column 0 (S3)."""
    return jnp.concatenate([layer_params["b"][:, None], layer_params["W"]], axis=1)


def split_augmented(W_hat: jax.Array) -> dict:
    """The inverse of :func:`augment`: ``Ŵ = [b, W]`` → ``{"W": W, "b": b}`` (S3)."""
    return {"W": W_hat[:, 1:], "b": W_hat[:, 0]}


def apply_augmented(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The network in augmented notation (S3): every layer computes ``a = Ŵ x̂`` with
    ``x̂ = [1; x]``. Equal to :func:`apply` (tested)."""
    check_params(net, params)
    check_input(net, x)

    def single(x):
        z = x
        for layer_params, f in zip(params, net.activations):
            x_hat = jnp.concatenate([jnp.ones((1,), z.dtype), z])
            a = augment(layer_params) @ x_hat
            z = activations.get(f).fn(a, **activation_params(layer_params))
        return z

    x = jnp.asarray(x)
    return single(x) if x.ndim == 1 else jax.vmap(single)(x)


# ---------------------------------------------------------------------------------------
# Counting (S5).
# ---------------------------------------------------------------------------------------


class Summary(NamedTuple):
    """Bishop's counts for a network (S5)."""

    num_layers: int  # weight matrices (Bishop's convention)
    hidden_units: int  # units in all hidden layers
    num_params: int  # every W, b and learnable activation parameter
    sizes: tuple[int, ...]
    activations: tuple[str, ...]

    def __str__(self) -> str:
        arch = " → ".join(str(s) for s in self.sizes)
        return (
            f"MLP {arch} ({', '.join(self.activations)}): {self.num_layers}-layer network "
            f"(Bishop), {self.hidden_units} hidden units, {self.num_params} parameters"
        )


def summary(net: MLP) -> Summary:
    """Layers (= weight matrices, Bishop), hidden units and parameters of ``net`` (S5).

    >>> summary(MLP((1, 3, 1), ("tanh", "identity"))).num_params
    10
    """
    num_params = sum(math.prod(s) for layer in net.layer_shapes() for s in layer.values())
    return Summary(net.num_layers, sum(net.sizes[1:-1]), num_params, net.sizes, net.activations)
