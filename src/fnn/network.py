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

The module holds the network and nothing else: its architecture (``MLP``), its parameters
(``init``), its function (``apply``, ``forward_pass``) and its counts (``summary``).

``apply`` and ``forward_pass`` are one batch-first fold of :func:`fnn.layer.forward_batch`
over the layers (:func:`run`, :func:`run_with_cache`; :mod:`fnn._scan` runs long runs of
identical layers as one ``lax.scan``), and so is every engine's forward pass. Every public
function here checks its input once, in Python, before anything is traced
(:mod:`fnn._checks`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnn import _checks, _scan, activations
from fnn import layer as layer_rules
from fnn.layer import Cache, activation_params, augment, split_augmented

__all__ = [
    "MLP",
    "SCHEMES",
    "Cache",
    "Summary",
    "apply",
    "apply_augmented",
    "augment",
    "check_net",
    "forward_pass",
    "init",
    "layer",
    "neuron",
    "run",
    "run_with_cache",
    "split_augmented",
    "summary",
]

Params = list  # list[dict[str, jax.Array]], one dict per layer


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class MLP:
    """A multilayer perceptron's architecture (S4): widths and one activation per layer.

    ``sizes = (D, M¹, …, Mᴺ)`` are the widths from the input to the output;
    ``activations = (f¹, …, fᴺ)`` give the activation of each of the ``N = len(sizes) − 1``
    layers, the last one being the output activation ``f_out``: a name from
    :func:`fnn.activations.names` or an :class:`fnn.activations.Activation` record (a
    user-defined one too, see :func:`fnn.activations.elementwise`). A built-in is stored by
    its name, so ``MLP`` built from ``"tanh"`` or from its record are equal.

    Two static fields say how the engines compile long networks (the numbers are the same
    either way; see :mod:`fnn._scan`): a run of at least ``scan_min_layers`` identical
    ``M → M`` layers is one ``jax.lax.scan`` (``None``: never), and
    ``scan_per_layer_results`` scans such runs also where an engine returns one array per
    layer (the forward cache, the reverse gradient; off: slower to compile on XLA:CPU).

    Raises:
      ValueError: fewer than two sizes, a width that is not a positive integer, not exactly
        one activation per layer, an unknown activation name (with the nearest valid one),
        a user record under a built-in's name, or a ``scan_min_layers`` that is neither
        ``None`` nor an integer ≥ 2.

    >>> MLP((10, 10, 10, 10), ("sigmoid", "sigmoid", "identity")).num_layers
    3
    """

    sizes: tuple[int, ...]
    """The widths ``(D, M¹, …, Mᴺ)`` from the input to the output."""
    activations: tuple[str | activations.Activation, ...]
    """One activation per layer, ``(f¹, …, fᴺ)``: a built-in's name or a user's record."""
    scan_min_layers: int | None = 16
    """The shortest run of identical ``M → M`` layers compiled as one ``jax.lax.scan``.

    ``None``: never.
    """
    scan_per_layer_results: bool = False
    """Whether such runs are scanned also where an engine returns one array per layer."""

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
        acts = tuple(_canonical(f, i) for i, f in enumerate(acts))
        m = self.scan_min_layers
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2):
            raise ValueError(f"scan_min_layers must be None or an integer ≥ 2; got {m!r}.")
        if not isinstance(self.scan_per_layer_results, bool):
            raise ValueError(
                f"scan_per_layer_results must be a bool; got {self.scan_per_layer_results!r}."
            )
        object.__setattr__(self, "sizes", tuple(int(w) for w in sizes))
        object.__setattr__(self, "activations", acts)

    @property
    def num_layers(self) -> int:
        """Bishop's layer count N: the number of weight matrices (S5)."""
        return len(self.sizes) - 1

    @property
    def in_features(self) -> int:
        """The input width ``D = sizes[0]``."""
        return self.sizes[0]

    @property
    def out_features(self) -> int:
        """The output width ``Mᴺ = sizes[-1]``."""
        return self.sizes[-1]

    def layer_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every parameter, layer by layer, as ``init`` creates them."""
        shapes = []
        for D, M, name in zip(self.sizes[:-1], self.sizes[1:], self.activations):
            layer_shape = {"W": (M, D), "b": (M,)}
            layer_shape.update({p: () for p in activations.get(name).params})
            shapes.append(layer_shape)
        return shapes


check_net = _checks.check_net
"""``net`` itself if it is an :class:`MLP`, else a ``TypeError`` naming what was passed.

Every public function that takes ``net`` calls it first.
"""


def _canonical(f, i: int):
    """``activations[i]`` as the network stores it, errors naming the entry."""
    try:
        return activations.canonical(f)
    except TypeError as e:
        raise TypeError(f"activations[{i}]: {e}") from None
    except ValueError as e:
        raise ValueError(f"activations[{i}]: {e}") from None


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
"""The initialisation schemes by name: each maps the fan-in ``D`` and fan-out ``M`` to a
sampler of ``W``."""


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
      TypeError: ``key`` is not one PRNG key, ``net`` is not an :class:`MLP`, or ``dtype``
        is not a real floating dtype.
      ValueError: an unknown scheme (with the nearest valid one), or a ``scale`` that is not
        a finite positive number.
    """
    _checks.check_key(key)
    check_net(net)
    _checks.check_choice(scheme, SCHEMES, "init scheme")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"scale must be a finite positive number; got {scale!r}.")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number; got {scale!r}.")
    try:
        dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    except TypeError:
        raise TypeError(f"dtype must be a real floating dtype; got {dtype!r}.") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a real floating dtype; got {dtype}.")
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
# The forward pass (S1, S2, S4): a fold of fnn.layer over the layers.
# ---------------------------------------------------------------------------------------


def neuron(w: jax.Array, b: jax.Array, x: jax.Array, f: str = "sigmoid") -> jax.Array:
    """One neuron (S1): ``a = Σᵢ wᵢ xᵢ + b``, ``z = f(a)``; ``w, x`` of shape ``(D,)``."""
    a = jnp.dot(w, x) + b
    return activations.get(f).fn(a)


def layer(layer_params: dict, x: jax.Array, f: str) -> tuple[jax.Array, jax.Array]:
    """One layer of M neurons (S2): ``a = W x + b``, ``z = f(a)``; returns ``(a, z)``.

    ``x`` has shape ``(D,)``; extra entries of ``layer_params`` (PReLU's ``alpha``) are the
    activation's own parameters. The rule itself is :func:`fnn.layer.forward`.
    """
    z, cache = layer_rules.forward(layer_params, f, x)
    return cache.a, z


def run(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The fold behind :func:`apply`: ``y`` for ``x`` ``(D,)`` or ``(B, D)``, batch-first
    (rows are examples, :func:`fnn.layer.forward_batch`). Unchecked: for the engines."""
    return _scan.layers(net, params).forward(layer_rules.forward_batch, x)[0]


def run_with_cache(net: MLP, params: Params, x: jax.Array):
    """The fold behind :func:`forward_pass`: ``(y, (Cache(x, a¹, z¹), …))`` for ``x`` ``(D,)``
    or ``(B, D)``, every cached array with the rows of ``x``. The one forward pass of every
    engine that needs the cache. Unchecked."""
    fold = _scan.layers(net, params, per_layer_results=True)
    y, caches = fold.forward(layer_rules.forward_batch, x)
    return y, tuple(fold.per_layer(caches))


def _check(net, params, x):
    check_net(net)
    _checks.check_params(net, params)
    _checks.check_input(net, x, floating=False)
    return jnp.asarray(x)


def forward_pass(net: MLP, params: Params, x: jax.Array) -> tuple[jax.Array, tuple[Cache, ...]]:
    """The forward pass with its cache: ``(y, (Cache(x, a¹, z¹), …, Cache(zᴺ⁻¹, aᴺ, y)))``
    (S4, S14): what backpropagation reads on its way back.

    ``x`` is ``(D,)`` or ``(B, D)``; for a batch every cached array gains the leading axis B.

    Raises:
      TypeError: ``net`` is not an :class:`MLP`, or ``params``/``x`` are not real arrays.
      ValueError: ``params`` does not match ``net``, or ``x`` has the wrong width or rank.
    """
    return run_with_cache(net, params, _check(net, params, x))


def apply(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The network function ``y = nn_θ(x)`` (S4), for ``x`` of shape ``(D,)`` or ``(B, D)``.

    .. math::  nn_θ(x) = f^{out}(W^{(N)} f^{(N-1)}(\\dots f^{(1)}(W^{(1)} x + b^{(1)}) \\dots)
               + b^{(N)})

    Runs of identical layers are scanned (``net.scan_min_layers``); the result is the same.

    Raises:
      TypeError: ``net`` is not an :class:`MLP`, or ``params``/``x`` are not real arrays.
      ValueError: ``params`` does not match ``net``, or ``x`` has the wrong width or rank.

    >>> net = MLP((3, 4, 2), ("tanh", "identity"))
    >>> apply(net, init(jax.random.key(0), net), jnp.ones(3)).shape
    (2,)
    """
    return run(net, params, _check(net, params, x))


# ---------------------------------------------------------------------------------------
# The augmented notation (S3): a = [b, W] [1; x] = Ŵ x̂ (the rules in fnn.layer).
# ---------------------------------------------------------------------------------------


def apply_augmented(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """The network in augmented notation (S3): every layer computes ``a = Ŵ x̂`` with
    ``x̂ = [1; x]``. Equal to :func:`apply` (tested)."""
    x = _check(net, params, x)

    def single(x):
        z = x
        for layer_params, f in zip(params, net.activations):
            a = layer_rules.affine_augmented(layer_params, z)
            z = activations.get(f).fn(a, **activation_params(layer_params))
        return z

    return single(x) if x.ndim == 1 else jax.vmap(single)(x)


# ---------------------------------------------------------------------------------------
# Counting (S5).
# ---------------------------------------------------------------------------------------


class Summary(NamedTuple):
    """Bishop's counts for a network (S5)."""

    num_layers: int
    """The number of weight matrices (Bishop's convention)."""
    hidden_units: int
    """The number of units in all hidden layers."""
    num_params: int
    """The number of parameters: every ``W``, ``b`` and learnable activation parameter."""
    sizes: tuple[int, ...]
    """The network's widths, as :attr:`MLP.sizes`."""
    activations: tuple[str | activations.Activation, ...]
    """The network's activations, as :attr:`MLP.activations`."""
    scan_min_layers: int | None = 16
    """As :attr:`MLP.scan_min_layers`."""
    scan_per_layer_results: bool = False
    """As :attr:`MLP.scan_per_layer_results`."""

    def __str__(self) -> str:
        arch = " → ".join(str(s) for s in self.sizes)
        return (
            f"MLP {arch} ({', '.join(map(activations.name_of, self.activations))}): "
            f"{self.num_layers}-layer network "
            f"(Bishop), {self.hidden_units} hidden units, {self.num_params} parameters"
        )


def summary(net: MLP) -> Summary:
    """Layers (= weight matrices, Bishop), hidden units and parameters of ``net`` (S5).

    >>> summary(MLP((1, 3, 1), ("tanh", "identity"))).num_params
    10
    """
    num_params = sum(math.prod(s) for layer in net.layer_shapes() for s in layer.values())
    return Summary(net.num_layers, sum(net.sizes[1:-1]), num_params, net.sizes, net.activations)


# The forward pass's old name, still imported by fnn.gradcheck; removed once it imports
# forward_pass.
forward = forward_pass
