r"""Gradient checks: a hand-written gradient against central differences (S11, S19).

* :func:`check_gradient` — any scalar function of any pytree and any gradient of it:
  element-wise relative error

  .. math::  e_i = \frac{|a_i − b_i|}{\max(|a_i| + |b_i|,\ \mathrm{tiny})},

  per leaf, the worst entry located (leaf path and index), pass/fail by a threshold that
  depends on the dtype (``THRESHOLDS``); a :class:`GradCheck` report that prints itself.
* :func:`check_directional` — the cheap check, ``2k`` evaluations instead of ``2P``:
  ``(L(θ + hv) − L(θ − hv)) / 2h`` against ``⟨∇L, v⟩`` for k random unit directions v.
* :func:`kink_crossings`, :func:`check_network` — a network's ``grads = {"params", "x"}``
  checked with its batch loss; where ``θ ± h`` moves a pre-activation across a kink of
  ReLU, leaky/parametric ReLU or hard tanh, or an L1 residual across 0, the entry is
  reported as "kink crossed" instead of as a false failure.

Split from :mod:`fnn.numerical` (the formula, its error and its cost) to keep both short.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnn import losses
from fnn._checks import check_input, check_key, check_positive_int
from fnn.network import MLP, forward
from fnn.numerical import (
    at_plus_minus,
    central_difference,
    check_eps,
    check_same_structure,
    check_scalar,
    check_tree,
    relative_error,
    resolution,
    steps,
)

__all__ = [
    "KINKS",
    "LOSS_KINKS",
    "THRESHOLDS",
    "DirectionalCheck",
    "GradCheck",
    "HVPCheck",
    "LeafError",
    "NetworkDifference",
    "check_directional",
    "check_gradient",
    "check_hvp",
    "check_network",
    "compare",
    "kink_crossings",
    "network_central_difference",
    "network_loss",
]

# The worst relative error that passes, by dtype. Central differences at the default ε are
# good to ≈ ε_mach^{2/3}: 4e-11 in float64, 2e-5 in float32, relative to the loss.
THRESHOLDS = {"float64": 1e-6, "float32": 1e-2, "float16": 1e-1, "bfloat16": 1e-1}
# Where an activation is not differentiable: f′ jumps at these pre-activation values.
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "prelu": (0.0,), "hard_tanh": (-1.0, 1.0)}
# Losses with a kink where a residual ŷᵢ − yᵢ crosses 0 (|r| has no derivative at 0).
LOSS_KINKS = ("l1",)


class LeafError(NamedTuple):
    """The relative error of one leaf: its worst entry and its median; kinks excluded
    (S11, S19)."""

    path: str
    max_error: float
    median_error: float
    worst_index: tuple[int, ...]
    kinks: int


class GradCheck(NamedTuple):
    """The report of a gradient check (S11, S19): pass/fail, the worst entry, every leaf."""

    passed: bool
    max_error: float
    median_error: float
    threshold: float
    worst_path: str
    worst_index: tuple[int, ...]
    worst_hand: float
    worst_numerical: float
    leaves: tuple[LeafError, ...]
    num_kinks: int
    num_evaluations: int
    dtype: str

    def __str__(self) -> str:
        lines = [
            f"gradient check {'PASS' if self.passed else 'FAIL'} ({self.dtype}): worst "
            f"relative error {self.max_error:.2e} (threshold {self.threshold:.0e}), median "
            f"{self.median_error:.2e}, {self.num_evaluations} loss evaluations",
            f"  worst entry {self.worst_path}{list(self.worst_index)}: hand "
            f"{self.worst_hand:.10g}, numerical {self.worst_numerical:.10g}",
        ]
        if self.num_kinks:
            lines.append(f"  kink crossed at {self.num_kinks} entries: left out of the verdict")
        for leaf in self.leaves:
            kinks = f"  kink crossed ×{leaf.kinks}" if leaf.kinks else ""
            lines.append(
                f"  {leaf.path:<22} max {leaf.max_error:.2e}  median {leaf.median_error:.2e}"
                + kinks
            )
        return "\n".join(lines)


def _threshold(dtype: str, threshold: float | None) -> float:
    """``threshold``, or the default of ``dtype`` (``THRESHOLDS``, 1e-2 for any other)."""
    return THRESHOLDS.get(dtype, 1e-2) if threshold is None else threshold


def compare(
    grad,
    numerical,
    *,
    kinks=None,
    value: float = 0.0,
    threshold: float | None = None,
    tiny: float | None = None,
    num_evaluations: int = 0,
) -> GradCheck:
    """Compare ``grad`` with a ``numerical`` gradient leaf by leaf, leaving out the entries
    marked in ``kinks`` — the verdict of :func:`check_gradient`, for a numerical gradient
    computed once and compared with several hand-written ones (S19).

    Args:
      grad, numerical: pytrees of one structure.
      kinks: optional bool pytree like them, True where a kink is crossed.
      value: the function's value at θ; it sets the default ``tiny`` (see
        :func:`check_gradient`).
      threshold, tiny: as in :func:`check_gradient`.
      num_evaluations: how many evaluations ``numerical`` cost, for the report.

    Raises:
      ValueError: the pytrees do not match.
    """
    check_same_structure(grad, numerical)
    if kinks is not None:
        check_same_structure(kinks, numerical, "kinks")
    dtype = str(jnp.result_type(*jax.tree.leaves(numerical)))
    threshold = _threshold(dtype, threshold)
    tiny = resolution(dtype, value) / threshold if tiny is None else tiny
    if kinks is None:
        kinks = jax.tree.map(lambda g: np.zeros(np.shape(g), bool), grad)
    leaves, kept, worst = [], [], (-1.0, "", (), math.nan, math.nan)
    flat = jax.tree_util.tree_flatten_with_path(grad)[0]
    for (path, a), b, k in zip(flat, jax.tree.leaves(numerical), jax.tree.leaves(kinks)):
        a, b, k = np.asarray(a), np.asarray(b), np.asarray(k, bool)
        err = np.where(k, 0.0, relative_error(a, b, tiny))
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape))
        median = float(np.median(err[~k])) if np.any(~k) else 0.0
        leaf = LeafError(jax.tree_util.keystr(path), float(err.max()), median, idx, int(k.sum()))
        leaves.append(leaf)
        kept.append(err[~k])
        if leaf.max_error > worst[0]:
            worst = (leaf.max_error, leaf.path, idx, float(a[idx]), float(b[idx]))
    errors = np.concatenate(kept)
    max_error = float(errors.max(initial=0.0))
    median = float(np.median(errors)) if errors.size else 0.0
    num_kinks = sum(leaf.kinks for leaf in leaves)
    return GradCheck(
        max_error <= threshold, max_error, median, threshold, *worst[1:], tuple(leaves),
        num_kinks, num_evaluations, dtype,
    )  # fmt: skip


def check_gradient(
    f: Callable,
    tree,
    grad,
    *,
    eps: float | None = None,
    relative: bool = True,
    threshold: float | None = None,
    tiny: float | None = None,
    kinks=None,
) -> GradCheck:
    """Check a hand-written gradient ``grad`` of ``f`` at ``tree`` against central
    differences, entry by entry (S11, S19).

    Args:
      f: a scalar function of one pytree.
      tree: the point θ.
      grad: the gradient to check, a pytree like ``tree``.
      eps, relative: the step, as in :func:`fnn.numerical.central_difference`.
      threshold: the worst error that passes (default ``THRESHOLDS`` of the dtype).
      tiny: the floor of the denominator. Default ``resolution(dtype, f(θ)) / threshold``:
        an entry below what central differences can resolve is judged by its absolute error
        on that scale instead of failing on round-off noise.
      kinks: optional bool pytree like ``tree``, True where a kink is crossed
        (:func:`kink_crossings`): those entries are reported, not judged.

    Returns:
      A :class:`GradCheck`; ``print`` it for a readable report.

    Raises:
      ValueError: ``grad`` or ``kinks`` does not match ``tree``, or ``eps`` is not positive
        and finite.

    >>> f = lambda t: jnp.sum(jnp.sin(t["w"]))
    >>> t = {"w": jnp.array([0.5, 1.0])}
    >>> check_gradient(f, t, {"w": jnp.cos(t["w"])}).passed
    True
    """
    check_same_structure(grad, tree)
    if kinks is not None:
        check_same_structure(kinks, tree, "kinks")
    numerical = central_difference(f, tree, eps, relative=relative)
    num_evaluations = 2 * _num_entries(tree)
    return compare(
        grad,
        numerical,
        kinks=kinks,
        value=f(tree),
        threshold=threshold,
        tiny=tiny,
        num_evaluations=num_evaluations,
    )


class DirectionalCheck(NamedTuple):
    """:func:`check_directional`: ``⟨∇L, v⟩`` against ``(L(θ+hv) − L(θ−hv)) / 2h`` per v
    (S11)."""

    passed: bool
    errors: tuple[float, ...]
    hand: tuple[float, ...]
    numerical: tuple[float, ...]
    threshold: float

    def __str__(self) -> str:
        return (
            f"directional check {'PASS' if self.passed else 'FAIL'}: {len(self.errors)} "
            f"directions, worst relative error {max(self.errors):.2e} "
            f"(threshold {self.threshold:.0e})"
        )


def check_directional(
    f: Callable,
    tree,
    grad,
    key: jax.Array,
    k: int = 8,
    *,
    eps: float | None = None,
    threshold: float | None = None,
) -> DirectionalCheck:
    r"""Check ``grad`` along ``k`` random unit directions ``v`` (S11): ``2k`` evaluations
    of ``f`` instead of ``2P``.

    .. math::  \frac{f(θ + h v) − f(θ − h v)}{2h} \quad\text{vs}\quad ⟨∇f, v⟩,
               \qquad h = ε \max(1, \max_i |θ_i|)

    Args:
      f, tree, grad: as in :func:`check_gradient`.
      key: a PRNG key for the directions.
      k: the number of directions.
      eps: the base step (default ``ε_mach^{1/3}``); threshold: as in :func:`check_gradient`.

    Raises:
      ValueError: ``grad`` does not match ``tree``, ``k < 1``, a bad ``eps``, or an ``f``
        that does not return a scalar.
      TypeError: ``key`` is not a PRNG key.
    """
    check_key(key)
    check_same_structure(grad, tree)
    k = check_positive_int(k, "k")
    dtype = check_tree(tree)
    eps = check_eps(eps, dtype)
    numerical, hand, value = (np.asarray(a) for a in _directional(f, k, tree, grad, key, eps))
    threshold = _threshold(dtype, threshold)
    errors = relative_error(hand, numerical, resolution(dtype, value) / threshold)
    return DirectionalCheck(
        bool(errors.max() <= threshold), tuple(errors.tolist()), tuple(hand.tolist()),
        tuple(numerical.tolist()), threshold,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("f", "k"))
def _directional(f, k, tree, grad, key, eps):
    """The k quotients along random unit directions v, the k products ⟨grad, v⟩, f(θ)."""
    theta, unravel = ravel_pytree(tree)
    v = jax.random.normal(key, (k, theta.size), theta.dtype)
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    value = f(tree)
    check_scalar(jnp.shape(value))
    h = steps(jnp.max(jnp.abs(theta)), eps)
    plus = jax.vmap(lambda d: f(unravel(theta + h * d)))(v)
    minus = jax.vmap(lambda d: f(unravel(theta - h * d)))(v)
    hand = v @ ravel_pytree(grad)[0].astype(theta.dtype)
    return (plus - minus) / (2 * h), hand, value


# ---------------------------------------------------------------------------------------
# Networks: the loss as a function of {"params", "x"}, and where θ ± h crosses a kink.
# ---------------------------------------------------------------------------------------


def network_loss(net: MLP, params, x, y, loss: str = "l2") -> jax.Array:
    """The loss ``L(nn_θ(x), y)`` of one example, or the batch loss
    ``(1/B) Σ_b L(nn_θ(x_b), y_b)`` — as ``fnn.value_and_grad`` defines it (S11, S19).

    Raises:
      ValueError: unknown ``loss``; ``params``/``x`` that do not fit ``net``; a ``y`` that is
        not a target for the outputs (:func:`fnn.losses.check_target`: its shape always,
        labels and probabilities where ``y`` is concrete).
    """
    y_hat, _ = forward(net, params, x)
    return _batch_loss(losses.get(loss), y_hat, y)


def _batch_loss(loss_fn: losses.Loss, y_hat: jax.Array, y) -> jax.Array:
    losses.check_target(loss_fn, y_hat.shape, y)
    fn = loss_fn.fn
    return fn(y_hat, y) if y_hat.ndim == 1 else jnp.mean(jax.vmap(fn)(y_hat, y))


def _kink_sides(net: MLP, loss: str, y_hat: jax.Array, cache, y) -> jax.Array:
    """One code per pre-activation and L1 residual: ``Σ_k sign(a − k)`` over its kinks k.
    Equal codes mean the same smooth piece (or the same kink point)."""
    sides = [jnp.zeros((0,), y_hat.dtype)]
    for layer_cache, f in zip(cache, net.activations):
        sides += [jnp.sign(layer_cache.a - k).ravel() for k in KINKS.get(f, ())]
    if loss in LOSS_KINKS:
        sides.append(jnp.sign(y_hat - y).ravel())
    return jnp.concatenate(sides)


def kink_crossings(net: MLP, params, x, y, loss: str = "l2", *, eps: float | None = None):
    """For each entry of ``{"params": params, "x": x}``: does ``θ ± h`` move any
    pre-activation across a kink of its activation (``KINKS``), or an L1 residual
    ``ŷ − y`` across 0? (S11) Where it does, the central difference straddles a jump of the
    derivative and agrees with neither one-sided derivative — a kink, not a bug.

    Returns:
      A bool pytree ``{"params": …, "x": …}``, True where a kink is crossed.

    Raises:
      ValueError: unknown ``loss``, bad ``eps``, ``params``/``x`` that do not fit ``net``, a
        ``y`` that is not a target for the outputs.
    """
    return network_central_difference(net, params, x, y, loss, eps=eps).kinks


class NetworkDifference(NamedTuple):
    """:func:`network_central_difference`: the numerical ``{"params", "x"}`` gradient of a
    network's loss, where a kink was crossed, the loss, and the evaluations counted (S11)."""

    numerical: dict
    kinks: dict
    value: float
    num_evaluations: int


def network_central_difference(
    net: MLP, params, x, y, loss: str = "l2", *, eps: float | None = None
) -> NetworkDifference:
    """Central differences of :func:`network_loss` w.r.t. ``{"params": params, "x": x}``,
    and :func:`kink_crossings` from the same batch of ``2P`` evaluations (S11).

    Raises:
      ValueError: unknown ``loss``, bad ``eps``, ``params``/``x`` that do not fit ``net``, a
        ``y`` that is not a target for the outputs.
    """
    loss_fn = losses.get(loss)
    check_input(net, x)
    # Here, where y is still concrete: its labels' range as well (inside jit, shape only).
    losses.check_target(loss_fn, (*np.shape(x)[:-1], net.out_features), y)
    tree = {"params": params, "x": x}
    eps = check_eps(eps, check_tree(tree))
    numerical, crossed, value = _network_differences(net, loss, params, x, y, eps)
    numerical = _unravel_like(tree, np.asarray(numerical), jnp.asarray)
    kinks = _unravel_like(tree, np.asarray(crossed), np.asarray)
    return NetworkDifference(numerical, kinks, float(value), 2 * _num_entries(tree))


def _num_entries(tree) -> int:
    """P, the number of entries of a pytree of arrays."""
    return sum(np.size(leaf) for leaf in jax.tree.leaves(tree))


def _unravel_like(tree, flat: np.ndarray, to_array: Callable):
    """``flat``, of ``tree``'s P entries in ``ravel_pytree`` order, as a pytree like ``tree``;
    split on the host, so that the compiled program need not slice every leaf out."""
    leaves, treedef = jax.tree.flatten(tree)
    ends = np.cumsum([np.size(leaf) for leaf in leaves])[:-1]
    parts = np.split(flat, ends)
    return jax.tree.unflatten(
        treedef, [to_array(p.reshape(np.shape(leaf))) for p, leaf in zip(parts, leaves)]
    )


@functools.partial(jax.jit, static_argnames=("net", "loss"))
def _network_differences(net, loss, params, x, y, eps):
    """The P quotients of the loss and the P kink crossings, flat, and the loss at θ."""
    tree = {"params": params, "x": x}
    theta, unravel = ravel_pytree(tree)
    loss_fn = losses.get(loss)

    def loss_and_sides(t):  # one forward pass for both
        y_hat, cache = forward(net, t["params"], t["x"])
        value = _batch_loss(loss_fn, y_hat, y)
        return jnp.concatenate([value[None], _kink_sides(net, loss, y_hat, cache, y)])

    values, taken = at_plus_minus(loss_and_sides, theta, steps(theta, eps), unravel)
    at_theta = loss_and_sides(tree)
    numerical = (values[:, 0, 0] - values[:, 1, 0]) / taken
    crossed = jnp.any(values[:, :, 1:] != at_theta[1:], axis=(1, 2))
    return numerical, crossed, at_theta[0]


def check_network(
    net: MLP,
    params,
    x,
    y,
    grads,
    loss: str = "l2",
    *,
    eps: float | None = None,
    threshold: float | None = None,
) -> GradCheck:
    """:func:`check_gradient` for a network's ``grads = {"params": …, "x": …}`` (the output
    format of ``fnn.value_and_grad``) with the loss of :func:`network_loss`; the entries whose
    ``θ ± h`` crosses a kink (:func:`kink_crossings`) are reported, not failed (S11, S19).

    Raises:
      ValueError: ``grads`` does not match ``{"params", "x"}``, unknown ``loss``, bad
        ``eps``, ``params``/``x`` that do not fit ``net``, a ``y`` that does not fit.

    >>> net = MLP((1, 1), ("identity",))  # L = (W x + b − y)², at W = 2, b = 0, x = 1, y = 0
    >>> params, x, y = [{"W": jnp.array([[2.0]]), "b": jnp.zeros(1)}], jnp.ones(1), jnp.zeros(1)
    >>> grads = {"params": [{"W": jnp.array([[4.0]]), "b": jnp.array([4.0])}],
    ...          "x": jnp.array([8.0])}
    >>> check_network(net, params, x, y, grads).passed
    True
    """
    check_same_structure(grads, {"params": params, "x": x}, "grads")
    fd = network_central_difference(net, params, x, y, loss, eps=eps)
    return compare(
        grads,
        fd.numerical,
        kinks=fd.kinks,
        value=fd.value,
        threshold=threshold,
        num_evaluations=fd.num_evaluations,
    )


# ---------------------------------------------------------------------------------------
# Hessian-vector products (S27, S29; Bishop 5.4.4): against central differences of ∇L.
# ---------------------------------------------------------------------------------------


class HVPCheck(NamedTuple):
    """The report of :func:`check_hvp` (S29): as :class:`GradCheck`, with the step ``h``
    along ``v`` and how many pre-activations (or L1 residuals) ``θ ± h v`` moves across a
    kink (then the quotient is no derivative and the check fails)."""

    passed: bool
    max_error: float
    median_error: float
    threshold: float
    worst_path: str
    worst_index: tuple[int, ...]
    worst_hand: float
    worst_numerical: float
    leaves: tuple[LeafError, ...]
    kinks_crossed: int
    step: float
    dtype: str

    def __str__(self) -> str:
        lines = [
            f"HVP check {'PASS' if self.passed else 'FAIL'} ({self.dtype}): worst relative "
            f"error {self.max_error:.2e} (threshold {self.threshold:.0e}), median "
            f"{self.median_error:.2e}, 2 gradient evaluations at θ ± h v, h = {self.step:.2e}",
            f"  worst entry {self.worst_path}{list(self.worst_index)}: hand "
            f"{self.worst_hand:.10g}, numerical {self.worst_numerical:.10g}",
        ]
        if self.kinks_crossed:
            lines.append(
                f"  θ ± h v crosses a kink at {self.kinks_crossed} pre-activations or residuals: "
                "∇L jumps there, the quotient is no derivative (FAIL; a smaller eps or another v)"
            )
        for leaf in self.leaves:
            lines.append(
                f"  {leaf.path:<22} max {leaf.max_error:.2e}  median {leaf.median_error:.2e}"
            )
        return "\n".join(lines)


@functools.partial(jax.jit, static_argnames=("net", "loss"))
def _gradient_quotient(net, loss, params, x, y, v, eps):
    """``(∇L(θ + h v) − ∇L(θ − h v)) / 2h`` by fnn's backprop, ``h = ε max(1, |θ|∞) / |v|∞``;
    the kink codes at θ and θ ± h v; ``|∇L(θ)|∞``, ``h``."""
    from fnn import backprop  # here, to keep this addition to the module self-contained

    loss_fn = losses.get(loss)
    theta, unravel = ravel_pytree(params)
    direction = ravel_pytree(v)[0].astype(theta.dtype)
    h = eps * jnp.maximum(1, jnp.max(jnp.abs(theta))) / jnp.max(jnp.abs(direction))

    def gradient_and_sides(t):
        p = unravel(t)
        grads = backprop.reverse(net, p, x, y, loss_fn)[1]["params"]
        y_hat, cache = forward(net, p, x)
        return ravel_pytree(grads)[0], _kink_sides(net, loss, y_hat, cache, y)

    g_plus, s_plus = gradient_and_sides(theta + h * direction)
    g_minus, s_minus = gradient_and_sides(theta - h * direction)
    g, sides = gradient_and_sides(theta)
    crossed = jnp.sum((s_plus != sides) | (s_minus != sides))
    quotient = (g_plus - g_minus) / (2 * h)
    return unravel(quotient), crossed, jnp.max(jnp.abs(g)), h


def check_hvp(
    net: MLP,
    params,
    x,
    y,
    v,
    Hv,
    loss: str = "l2",
    *,
    eps: float | None = None,
    threshold: float | None = None,
) -> HVPCheck:
    r"""Check a Hessian-vector product ``Hv`` against central differences of the gradient
    (S27, S29; Bishop 5.4.4), entry by entry as :func:`check_gradient`:

    .. math::  ∇²L\, v ≈ \frac{∇L(θ + h v) − ∇L(θ − h v)}{2h}, \qquad
               h = ε \max(1, \max_i |θ_i|) / \max_i |v_i|

    ``∇L`` is fnn's backpropagation of the batch loss (proven against ``jax.grad``); two
    gradient evaluations, O(h²) truncation error. Where ``θ ± h v`` moves a pre-activation
    across a kink (:data:`KINKS`) or an L1 residual across 0, ``∇L`` jumps and the quotient
    is no derivative: the report counts them and fails.

    Args:
      net, params, x, y, loss: the network and its batch loss, as in ``fnn.value_and_grad``.
      v: the direction, like ``params``.
      Hv: the product to check (``fnn.hvp``'s), like ``params``.
      eps: the base step (default ``ε_mach^{1/3}`` of the dtype).
      threshold: the worst relative error that passes (default :data:`THRESHOLDS`).

    Returns:
      An :class:`HVPCheck`; ``print`` it for the report.

    Raises:
      TypeError: ``net`` is not an ``fnn.MLP``, or an array is not real floating point.
      ValueError: ``params``/``v``/``Hv`` not matching ``net``, bad ``x``/``y``/``eps``, an
        unknown loss, a loss that does not suit the output activation, or ``v = 0``.

    >>> import fnn
    >>> net = MLP((1, 1), ("identity",))  # L = (w x + b − y)²: ∇²L v = [2x², 2x; 2x, 2] v
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> v = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> x, y = jnp.array([3.0]), jnp.zeros(1)
    >>> check_hvp(net, params, x, y, v, fnn.hvp(net, params, x, y, v)).passed
    True
    """
    from fnn import _checks, derivatives  # as in _gradient_quotient

    loss_fn, x, y = derivatives._check_loss_problem(net, params, x, y, loss)
    _checks.check_params(net, v, "v")
    check_same_structure(Hv, params, "Hv")
    dtype = check_tree(params, "params")
    eps = check_eps(eps, dtype)
    if not np.any([np.any(np.asarray(t) != 0) for t in jax.tree.leaves(v)]):
        raise ValueError("v must be a nonzero direction; got all zeros.")
    numerical, crossed, g_max, h = _gradient_quotient(net, loss_fn.name, params, x, y, v, eps)
    v_max = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(v))
    theta_max = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(params))
    # round-off of the quotient: ε_mach |∇L| / h ≈ ε_mach^{2/3} |∇L| |v|∞ / max(1, |θ|∞)
    report = compare(
        Hv, numerical, value=float(g_max) * v_max / max(1.0, theta_max), threshold=threshold
    )
    return HVPCheck(
        report.passed and int(crossed) == 0, report.max_error, report.median_error,
        report.threshold, report.worst_path, report.worst_index, report.worst_hand,
        report.worst_numerical, report.leaves, int(crossed), float(h), report.dtype,
    )  # fmt: skip
