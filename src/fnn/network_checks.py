r"""The float64 oracle of a network's gradient (S11, S19).

* :func:`network_loss` — the batch loss ``(1/B) Σ_b L(nn_θ(x_b), y_b)`` as
  ``fnn.value_and_grad`` defines it, a function of ``params`` and ``x``.
* :func:`network_central_difference`, :func:`kink_crossings` — its float64 central
  differences w.r.t. ``{"params", "x"}`` and the entries whose ``θ ± h`` moves a
  pre-activation across a kink of its activation (``Activation.kinks``) or a residual
  across a kink of the loss (``Loss.kinks``).
* :func:`check_network` — the verdict, judged by :mod:`fnn.oracle`, after a second look
  where the first does not pass (:func:`second_look`: wider steps, one-sided where one
  side of a step crosses a kink). Hessian-vector products are checked in
  :func:`fnn.gradcheck.check_hvp`.

Every function here follows ``f(net, params, x, y[, …], *, loss=..., <options>)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnn import activations, backprop, derivatives, losses
from fnn.extrapolation import look_again, per_step
from fnn.network import MLP, forward_pass
from fnn.numerical import (
    at_plus_minus,
    check_eps,
    check_finite_tree,
    check_same_structure,
    check_tree,
    oracle_dtype,
    precision,
    steps,
    upcast,
)
from fnn.oracle import (
    ORACLE,
    GradCheck,
    compare,
)

__all__ = [
    "NetworkDifference",
    "check_network",
    "compare_network",
    "kink_crossings",
    "network_central_difference",
    "network_loss",
]


def check_problem(net: MLP, params, x, y, loss):
    """The door of every network check: the loss problem's checks (shapes, dtypes, a loss
    that suits the output activation, targets), then finite ``params``, ``x`` and ``y``.

    Returns:
      The :class:`fnn.losses.Loss`, ``x`` and ``y`` as arrays.
    """
    loss_fn, x, y = derivatives.check_loss_problem(net, params, x, y, losses.get(loss))
    check_finite_tree(params, "params")
    check_finite_tree(x, "x")
    check_finite_tree(y, "y")
    return loss_fn, x, y


def network_loss(net: MLP, params, x, y, *, loss="l2") -> jax.Array:
    """The loss ``L(nn_θ(x), y)`` of one example, or the batch loss
    ``(1/B) Σ_b L(nn_θ(x_b), y_b)`` — as ``fnn.value_and_grad`` defines it (S11, S19).

    Raises:
      ValueError: unknown ``loss``, or one that does not suit the output activation;
        ``params``/``x`` that do not fit ``net``; a ``y`` that is not a target for the
        outputs (:func:`fnn.losses.check_target`: its shape always, labels and
        probabilities where ``y`` is concrete).
    """
    loss_fn = losses.get(loss)
    losses.check_output_activation(loss_fn, net.activations[-1])
    y_hat, _ = forward_pass(net, params, x)
    return batch_loss(loss_fn, y_hat, y)


def batch_loss(loss_fn: losses.Loss, y_hat: jax.Array, y) -> jax.Array:
    """The mean of ``loss_fn`` over a batch ``y_hat`` (or its value for one example)."""
    losses.check_target(loss_fn, y_hat.shape, y)
    fn = loss_fn.fn
    return fn(y_hat, y) if y_hat.ndim == 1 else jnp.mean(jax.vmap(fn)(y_hat, y))


def kink_sides(net: MLP, loss_fn: losses.Loss, y_hat: jax.Array, cache, y) -> jax.Array:
    """One code per pre-activation and loss residual: ``Σ_k sign(a − k)`` over its kinks k.
    Equal codes mean the same smooth piece (or the same kink point)."""
    sides = [jnp.zeros((0,), y_hat.dtype)]
    for layer_cache, f in zip(cache, net.activations):
        sides += [jnp.sign(layer_cache.a - k).ravel() for k in activations.get(f).kinks]
    sides += [jnp.sign(y_hat - y - k).ravel() for k in loss_fn.kinks]
    return jnp.concatenate(sides)


def kink_crossings(net: MLP, params, x, y, *, loss="l2", eps=None, oracle=ORACLE):
    """For each entry of ``{"params": params, "x": x}``: does ``θ ± h`` move any
    pre-activation across a kink of its activation (``Activation.kinks``), or a loss
    residual ``ŷ − y`` across a kink of the loss (``Loss.kinks``)? (S11) Where it does, the
    central difference straddles a jump of the derivative and agrees with neither
    one-sided derivative — a kink, not a bug.

    Returns:
      A bool pytree ``{"params": …, "x": …}``, True where a kink is crossed.

    Raises:
      ValueError: as :func:`network_central_difference`.
    """
    return network_central_difference(net, params, x, y, loss=loss, eps=eps, oracle=oracle).kinks


class NetworkDifference(NamedTuple):
    """:func:`network_central_difference`: the numerical ``{"params", "x"}`` gradient of a
    network's loss (NumPy arrays of ``oracle_dtype``), where a kink was crossed, the loss,
    the evaluations counted, ``condition = max_b Σ_k |J_L(ŷ_b)_k ŷ_bk|``: how much a
    rounding of the outputs moves the loss (S11, S16), ``spread = |g_low − g_64|``
    (:func:`reverse_spread`; ``None`` for a float64 problem), and after a second look
    (:mod:`fnn.extrapolation`) its numbers and resolutions per entry (``second``)."""

    numerical: dict
    """The numerical gradient ``{"params", "x"}``, NumPy arrays of ``oracle_dtype``."""
    kinks: dict
    """A bool pytree like ``numerical``, True where ``θ ± h`` crosses a kink."""
    value: float
    """The loss at ``θ``."""
    num_evaluations: int
    """How many loss evaluations the central differences took."""
    oracle_dtype: str = ""
    """The dtype the central differences were computed in."""
    condition: float = 0.0
    """``max_b Σ_k |J_L(ŷ_b)_k ŷ_bk|``: how much a rounding of the outputs moves the loss."""
    spread: dict | None = None
    """Below float64, ``|g_low − g_64|`` of fnn's reverse mode per entry; else ``None``."""
    second: tuple | None = None
    """After a second look, the oracle's numbers and resolutions per entry; else ``None``."""


def network_central_difference(
    net: MLP, params, x, y, *, loss="l2", eps: float | None = None, oracle=ORACLE
) -> NetworkDifference:
    """Central differences of :func:`network_loss` w.r.t. ``{"params": params, "x": x}``,
    and :func:`kink_crossings` from the same batch of ``2P`` evaluations (S11) — in float64
    by default (``oracle``; ``params``, ``x`` and a vector ``y`` upcast exactly), so that a
    float32 gradient meets a float64 reference.

    Raises:
      ValueError: unknown ``loss``; an output activation the loss does not take
        (:func:`fnn.losses.check_output_activation`); bad ``eps`` or ``oracle``;
        ``params``/``x`` that do not fit ``net`` or hold a NaN or inf; a ``y`` that is not a
        target for the outputs.
      TypeError: ``net`` is not an ``fnn.MLP``; ``params`` or ``x`` not floating.
    """
    loss_fn, _, _ = check_problem(net, params, x, y, loss)
    return differences(net, params, x, y, loss_fn, eps, oracle)


def differences(net, params, x, y, loss_fn, eps, oracle) -> NetworkDifference:
    """:func:`network_central_difference` after its checks."""
    tree = {"params": params, "x": x}
    target = oracle_dtype(oracle, check_tree(tree))
    with precision(target):
        wide = upcast((params, x, y), target)
        out = _network_differences(net, loss_fn, *wide, check_eps(eps, target))
        numerical, crossed, value, condition, _ = (np.asarray(a) for a in out)
    numerical = _unravel_like(tree, numerical, np.asarray)
    kinks = _unravel_like(tree, crossed.any(axis=1), np.asarray)
    condition = float(condition) if np.isfinite(condition) else 0.0
    spread = reverse_spread(net, loss_fn, tree, y)  # y in the tested dtype
    return NetworkDifference(
        numerical, kinks, float(value), 2 * _num_entries(tree), target, condition, spread
    )


@functools.partial(jax.jit, static_argnames=("net", "loss_fn"))
def _reverse_gradient(net, loss_fn, params, x, y):
    return backprop.reverse(net, params, x, y, loss_fn)[1]


def reverse_spread(net: MLP, loss_fn: losses.Loss, tree, y) -> dict | None:
    """``|g_low − g_64|`` per entry of ``tree = {"params", "x"}``: fnn's own reverse-mode
    gradient in ``tree``'s dtype against the same in float64 (inputs upcast exactly) — the
    rounding a correct implementation makes at each entry, large only where the problem is
    ill-conditioned in that dtype (S11, S19); 0 where not finite (a NaN never widens a
    tolerance). ``None`` for a float64 ``tree``."""
    if np.dtype(check_tree(tree)).itemsize >= 8:
        return None
    low = _reverse_gradient(net, loss_fn, tree["params"], tree["x"], y)
    low = jax.tree.map(lambda g: np.asarray(g, np.float64), low)
    with precision("float64"):
        params, x, y64 = upcast((tree["params"], tree["x"], y), "float64")
        high = jax.tree.map(np.asarray, _reverse_gradient(net, loss_fn, params, x, y64))
    return jax.tree.map(lambda a, b: np.nan_to_num(np.abs(a - b), nan=0.0, posinf=0.0), low, high)


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


@functools.partial(jax.jit, static_argnames=("net", "loss_fn"))
def _network_differences(net, loss_fn, params, x, y, eps):
    """The P central quotients of the loss; whether θ + h and θ − h cross a kink, (P, 2);
    the loss at θ; the loss's condition; the one-sided quotients of each side, (P, 2)."""
    tree = {"params": params, "x": x}
    theta, unravel = ravel_pytree(tree)

    def loss_and_sides(t):  # one forward pass for both
        y_hat, cache = forward_pass(net, t["params"], t["x"])
        value = batch_loss(loss_fn, y_hat, y)
        return jnp.concatenate([value[None], kink_sides(net, loss_fn, y_hat, cache, y)])

    values, taken = at_plus_minus(loss_and_sides, theta, steps(theta, eps), unravel)
    at_theta = loss_and_sides(tree)
    numerical = (values[:, 0, 0] - values[:, 1, 0]) / taken
    one_sided = jnp.stack([values[:, 0, 0] - at_theta[0], at_theta[0] - values[:, 1, 0]], 1)
    crossed = jnp.any(values[:, :, 1:] != at_theta[1:], axis=2)
    y_hat = forward_pass(net, params, x)[0]
    condition = loss_condition(loss_fn, y_hat, y)
    return numerical, crossed, at_theta[0], condition, one_sided / (taken / 2)[:, None]


def loss_condition(loss_fn: losses.Loss, y_hat: jax.Array, y) -> jax.Array:
    """``max_b Σ_k |J_L(ŷ_b)_k ŷ_bk|``: rounding each output by a relative ε moves the loss
    by about ε times this — large where a probability near 1 enters as ``1 − ŷ`` (a
    saturated sigmoid), not where a tiny probability keeps its relative precision."""
    jacobian = loss_fn.jacobian if y_hat.ndim == 1 else jax.vmap(loss_fn.jacobian)
    return jnp.max(jnp.sum(jnp.abs(jacobian(y_hat, y) * y_hat), axis=-1))


def compare_network(grads, fd: NetworkDifference, *, threshold=None, atol=None) -> GradCheck:
    """A network's ``grads`` against its :func:`network_central_difference` ``fd``, by the
    rule of :func:`fnn.gradcheck.compare`, with the loss's conditioning in the oracle's
    resolution: ``u`` is taken at ``max(|L|, condition)`` (what rounding the outputs does to
    L), so that the central differences of a loss computed from a saturated probability are
    UNRESOLVED, not taken for the truth, and, below float64, ``r`` grown by
    ``SPREAD · fd.spread`` per entry (:data:`fnn.oracle.SPREAD`; S11, S16, S19).

    Raises:
      ValueError, TypeError: as :func:`fnn.gradcheck.compare`.
    """
    check_same_structure(grads, fd.numerical, "grads")
    spread = fd.spread if np.dtype(check_tree(grads, "grads")).itemsize < 8 else None
    value = max(abs(fd.value), fd.condition) if np.isfinite(fd.value) else fd.value
    return compare(grads, fd.numerical, kinks=fd.kinks, value=value, threshold=threshold,
                   atol=atol, num_evaluations=fd.num_evaluations, spread=spread,
                   second=fd.second)  # fmt: skip


def check_network(
    net: MLP,
    params,
    x,
    y,
    grads,
    *,
    loss="l2",
    eps: float | None = None,
    threshold: float | None = None,
    atol: float | None = None,
    oracle=ORACLE,
) -> GradCheck:
    """:func:`fnn.gradcheck.check_gradient` for a network's ``grads = {"params": …, "x": …}``
    (the output format of ``fnn.value_and_grad``) with the loss of :func:`network_loss`; the
    entries whose ``θ ± h`` crosses a kink (:func:`kink_crossings`) are reported, not failed
    (S11, S19). The oracle is float64 central differences by default (``oracle``).

    Raises:
      ValueError: ``grads`` does not match ``{"params", "x"}``, unknown ``loss``, an output
        activation the loss does not take (``cross_entropy`` after ``identity``), bad
        ``eps``, ``threshold``, ``atol`` or ``oracle``, ``params``/``x`` that do not fit
        ``net`` or hold a NaN or inf, a ``y`` that does not fit.
      TypeError: ``net`` is not an ``fnn.MLP``; ``params``, ``x`` or ``grads`` not floating.

    >>> net = MLP((1, 1), ("identity",))  # L = (W x + b − y)², at W = 2, b = 0, x = 1, y = 0
    >>> params, x, y = [{"W": jnp.array([[2.0]]), "b": jnp.zeros(1)}], jnp.ones(1), jnp.zeros(1)
    >>> grads = {"params": [{"W": jnp.array([[4.0]]), "b": jnp.array([4.0])}],
    ...          "x": jnp.array([8.0])}
    >>> check_network(net, params, x, y, grads).passed
    True
    """
    loss_fn, _, _ = check_problem(net, params, x, y, loss)
    check_same_structure(grads, {"params": params, "x": x}, "grads")
    check_tree(grads, "grads")
    fd = differences(net, params, x, y, loss_fn, eps, oracle)
    result = compare_network(grads, fd, threshold=threshold, atol=atol)
    if result.verdict != "PASS" and not result.nonfinite:
        result = second_look(net, params, x, y, grads, loss_fn, eps, oracle, fd, result.resolution,
                             threshold=threshold, atol=atol)  # fmt: skip
    return result


def second_look(net, params, x, y, grads, loss_fn, eps, oracle, fd, u, *, threshold, atol):
    """:func:`compare_network` after the oracle's second look at ``fd``
    (:func:`fnn.extrapolation.look_again`; ``u`` is the first look's resolution at the step
    ``ε``, :func:`fnn.extrapolation.per_step` the one at each entry's own): the quotients at
    wider steps (:func:`wider_quotient`), one-sided where one side of a step crosses a kink
    (S11)."""

    def judge(better, resolutions, looks):
        fd_now = fd._replace(second=(better, resolutions),
                             num_evaluations=looks * fd.num_evaluations)  # fmt: skip
        return compare_network(grads, fd_now, threshold=threshold, atol=atol)

    quotient_at = functools.partial(wider_quotient, net, params, x, y, loss_fn, oracle)
    per_entry = per_step(u, {"params": params, "x": x})
    return look_again(fd.numerical, quotient_at, check_eps(eps, fd.oracle_dtype), per_entry, judge)


def wider_quotient(net, params, x, y, loss_fn, oracle, step):
    """The quotients at ``step`` and their sides, pytrees like ``{"params", "x"}``: one look
    of the second (S11). Central (side 0) where neither ``θ + H`` nor ``θ − H`` crosses a
    kink; where one does, the one-sided quotient of the other (side +1 for ``θ + H``, −1
    for ``θ − H``); NaN where both do."""
    tree = {"params": params, "x": x}
    target = oracle_dtype(oracle, check_tree(tree))
    with precision(target):
        out = _network_differences(net, loss_fn, *upcast((params, x, y), target), step)
        central, crossed, _, _, one_sided = (np.asarray(a, np.float64) for a in out)
    plus, minus = crossed[:, 0] > 0, crossed[:, 1] > 0
    side = np.where(plus == minus, 0, np.where(plus, -1, 1))
    quotient = np.select(
        [plus & minus, side > 0, side < 0], [np.nan, one_sided[:, 0], one_sided[:, 1]], central
    )
    return _unravel_like(tree, quotient, np.asarray), _unravel_like(tree, side, np.asarray)
