r"""Gradient checks: a derivative against float64 central differences (S11, S19, S27, S29).

* :func:`check_gradient` — any scalar JAX function of any pytree and any gradient of it,
  entry by entry. The oracle, central differences, runs in float64 by default (the point θ
  upcast, under ``jax.enable_x64`` where x64 is off), so a float32 gradient is judged
  against a reference some 10⁴ times more accurate than itself.
* :func:`check_directional` — the cheap check, ``2k`` evaluations instead of ``2P``:
  ``(f(θ + hv) − f(θ − hv)) / 2h`` against ``⟨∇f, v⟩`` for k random unit directions v.
* :func:`check_network`, :func:`kink_crossings`, :func:`network_central_difference`,
  :func:`network_loss` — a network's gradient with its batch loss
  (:mod:`fnn.network_checks`); where ``θ ± h`` crosses a kink of an activation or a loss,
  the entry is reported as "kink crossed" instead of as a false failure.
* :func:`check_hvp` — a network's Hessian-vector product against central differences of
  its gradient (S27).

Every check is judged by one rule and reported as one :class:`GradCheck`
(:mod:`fnn.oracle`): an entry ``a`` against the oracle's ``b`` passes when
``|a − b| ≤ t (|a| + |b|) + r + u`` (``t`` the dtype's relative threshold, ``r`` its
rounding, ``u`` the oracle's resolution). An entry is UNRESOLVED only when the oracle cannot
tell it from 0 and its blind spot ``u`` exceeds ``FLOOR = 1e-5`` times the gradient's
largest entry — only then could an error the oracle cannot see matter next to the
gradient's own scale. A NaN or inf on either side fails, naming the first such entry; a NaN
or inf in a check's inputs is a ``ValueError``. Before it fails an entry or leaves it
unresolved, the oracle takes a second look at wider steps and judges against Richardson's
extrapolation where two neighbouring quotients agree (:mod:`fnn.extrapolation`): its own
truncation is never the gradient's error, and a gradient too small for the first step is
resolved at a wider one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnn import _checks, backprop
from fnn._checks import check_key, check_positive_int, check_tolerances
from fnn.extrapolation import look_again, per_step
from fnn.network import MLP, forward_pass
from fnn.network_checks import (
    NetworkDifference,
    check_network,
    check_problem,
    compare_network,
    kink_crossings,
    kink_sides,
    network_central_difference,
    network_loss,
)
from fnn.numerical import (
    central_difference,
    check_eps,
    check_finite_tree,
    check_same_structure,
    check_scalar,
    check_tree,
    oracle_dtype,
    precision,
    steps,
    upcast,
)
from fnn.numerical import resolution as oracle_resolution
from fnn.oracle import (
    FLOOR,
    ORACLE,
    RESOLVED,
    ROUNDING,
    THRESHOLDS,
    Entries,
    GradCheck,
    LeafError,
    compare,
    default_threshold,
    entries,
    largest,
    report,
)

__all__ = [
    "DIRECTIONS",
    "FLOOR",
    "ORACLE",
    "RESOLVED",
    "ROUNDING",
    "THRESHOLDS",
    "GradCheck",
    "LeafError",
    "NetworkDifference",
    "check_directional",
    "check_gradient",
    "check_hvp",
    "check_network",
    "compare",
    "compare_network",
    "kink_crossings",
    "network_central_difference",
    "network_loss",
]

DIRECTIONS = 16
"""The default number of directions of :func:`check_directional`, from a measurement (see
there)."""


def check_gradient(
    f: Callable,
    tree,
    grad,
    *,
    eps: float | None = None,
    relative: bool = True,
    threshold: float | None = None,
    atol: float | None = None,
    kinks=None,
    oracle: str | None = ORACLE,
) -> GradCheck:
    """Check a hand-written gradient ``grad`` of ``f`` at ``tree`` against central
    differences, entry by entry (S11, S19).

    Args:
      f: a scalar JAX function of one pytree (it is traced, in the oracle's dtype).
      tree: the point θ.
      grad: the gradient to check, a pytree like ``tree``.
      eps, relative: the step, as in :func:`fnn.numerical.central_difference` (default
        ``ε_mach^{1/3}`` of the oracle's dtype).
      threshold: the relative threshold ``t`` (default ``THRESHOLDS`` of ``grad``'s dtype).
      atol: ``r``, the rounding granted to ``grad`` (default ``ROUNDING · ε_mach · max|b|``).
      kinks: optional bool pytree like ``tree``, True where a kink is crossed
        (:func:`kink_crossings`): those entries are reported, not judged.
      oracle: the dtype of the central differences: ``"float64"`` (default: ``tree`` is
        upcast, exactly, and ``f`` traced in float64 even where ``jax_enable_x64`` is off),
        or ``None`` for ``tree``'s own dtype. An ``f`` that computes in a narrower dtype
        whatever its input gets the oracle of ``tree``'s dtype; the report says which.

    Returns:
      A :class:`GradCheck`; ``print`` it for a readable report.

    Raises:
      ValueError: ``grad`` or ``kinks`` does not match ``tree``, a NaN or inf in ``tree``,
        ``eps`` is not positive and finite, a bad ``threshold``, ``atol`` or ``oracle``.
      TypeError: a leaf of ``tree`` or ``grad`` that is not floating.

    >>> f = lambda t: jnp.sum(jnp.sin(t["w"]))
    >>> t = {"w": jnp.array([0.5, 1.0])}
    >>> check_gradient(f, t, {"w": jnp.cos(t["w"])}).passed
    True
    >>> check_gradient(f, t, {"w": jnp.cos(t["w"]) * jnp.array([1.0, 1.01])}).passed
    False
    """
    check_same_structure(grad, tree)
    check_tree(grad, "grad")
    if kinks is not None:
        check_same_structure(kinks, tree, "kinks")
    dtype = check_tree(tree)
    check_finite_tree(tree, "tree")
    target = oracle_dtype(oracle, dtype)
    numerical, value = oracle_differences(f, tree, eps, relative, target, dtype)
    num_evaluations = 2 * sum(np.size(leaf) for leaf in jax.tree.leaves(tree))
    judge = functools.partial(compare, grad, kinks=kinks, value=value, threshold=threshold,
                              atol=atol)  # fmt: skip
    result = judge(numerical, num_evaluations=num_evaluations)
    if result.verdict != "PASS" and not result.nonfinite:
        result = look_again(
            numerical,
            lambda step: (oracle_differences(f, tree, step, relative, target, dtype)[0], None),
            check_eps(eps, target),
            per_step(result.resolution, tree) if relative else result.resolution,
            lambda better, resolutions, looks: judge(
                numerical, second=(better, resolutions), num_evaluations=looks * num_evaluations
            ),
        )
    return result


def oracle_differences(f, tree, eps, relative, target: str, dtype: str):
    """Central differences of ``f`` in ``target`` (NumPy leaves) and ``f(θ)``; in ``dtype``
    instead where ``f`` does not compute in ``target``."""
    with precision(target):
        wide = upcast(tree, target)
        value = np.asarray(f(wide))
        if value.dtype == np.dtype(target) or target == dtype:
            numerical = central_difference(f, wide, eps, relative=relative)
            return jax.tree.map(np.asarray, numerical), value
    numerical = central_difference(f, tree, eps, relative=relative)  # f stays narrower
    return jax.tree.map(np.asarray, numerical), np.asarray(f(tree))


def check_directional(
    f: Callable,
    tree,
    grad,
    *,
    key: jax.Array,
    k: int = DIRECTIONS,
    eps: float | None = None,
    threshold: float | None = None,
    atol: float | None = None,
    oracle: str | None = ORACLE,
) -> GradCheck:
    r"""Check ``grad`` along ``k`` random unit directions ``v`` (S11): ``2k`` evaluations
    of ``f`` instead of ``2P``.

    .. math::  \frac{f(θ + h v) − f(θ − h v)}{2h} \quad\text{vs}\quad ⟨∇f, v⟩,
               \qquad h = ε \max(1, \max_i |θ_i|)

    judged like one entry of :func:`check_gradient` (the same ``t``, ``r``, ``u`` and
    float64 oracle). What it can see: an error ``e`` of the gradient only through
    ``⟨e, v⟩``. The smallest error it detects: a relative error ρ of the whole gradient
    (``a = (1 + ρ) b``) fails once ``ρ > min_detectable = min_k (2t|b_k| + r + u) /
    ((1 − t)|b_k|)``, reported, about ``2t`` (2e-3 for a float32 gradient, 2e-6 for
    float64). An error in ONE of P entries reaches ``⟨e, v⟩`` diluted by ``v_j ~ 1/√P``
    and can be missed; measured on 200 random 1 → 2 → 1 tanh networks in float32 (7
    parameters), one entry 10 % wrong (``scripts/gradcheck_power.py --directional``):

    =====  ===========  =====================================
    k      missed       missed, entry ≥ 0.1 × the largest (148)
    =====  ===========  =====================================
    1      18.5 %       6.1 %
    2      10.5 %       0 %
    4      5.5 %        0 %
    8      2.5 %        0 %
    16     0.5 %        0 %
    =====  ===========  =====================================

    (against float32 central differences, ``oracle=None`` on a float32 gradient: 47, 35,
    24, 18 and 15 % missed). ``k = 16`` by default (``DIRECTIONS``), the smallest of these to
    miss at most 1 %. It is a smoke test: only :func:`check_gradient` localises an error and
    bounds it entry by entry.

    Args:
      f, tree, grad: as in :func:`check_gradient`.
      key: a PRNG key for the directions (keyword-only).
      k: the number of directions (default ``DIRECTIONS``).
      eps: the base step (default ``ε_mach^{1/3}`` of the oracle's dtype).
      threshold, atol, oracle: as in :func:`check_gradient`; ``r`` uses ``‖b‖₂``.

    Returns:
      A :class:`GradCheck` of kind ``"directional"``: one entry per direction (path
      ``⟨∇f, v⟩``), with ``min_detectable``.

    Raises:
      ValueError: ``grad`` does not match ``tree``, a NaN or inf in ``tree``, ``k < 1``,
        a bad ``eps``, ``threshold``, ``atol`` or ``oracle``, or an ``f`` that does not
        return a scalar.
      TypeError: ``key`` is not a PRNG key.
    """
    check_key(key)
    check_same_structure(grad, tree)
    k = check_positive_int(k, "k")
    check_tolerances(threshold=threshold, atol=atol)
    grad_dtype = check_tree(grad, "grad")
    dtype = check_tree(tree)
    check_finite_tree(tree, "tree")
    target = oracle_dtype(oracle, dtype)
    with precision(target):
        wide, wide_grad = upcast(tree, target), upcast(grad, target)
        if np.asarray(f(wide)).dtype != np.dtype(target):
            target, wide, wide_grad = dtype, tree, grad  # f computes narrower: its own dtype
        out = _directional(f, k, wide, wide_grad, key, check_eps(eps, target))
        numerical, hand, value, norm = (np.asarray(a, np.float64) for a in out)
    threshold = default_threshold(grad_dtype, threshold)
    u = oracle_resolution(target, value if np.isfinite(value) else 0.0)
    if atol is None:
        atol = ROUNDING * float(jnp.finfo(grad_dtype).eps) * float(norm)
    size = np.abs(numerical)
    rho = np.divide(2 * threshold * size + atol + u, (1 - threshold) * size,
                    out=np.full_like(size, np.inf), where=size > 0)  # fmt: skip
    e = Entries(["⟨∇f, v⟩"], [hand], [numerical], [np.zeros(k, bool)], grad_dtype, target)
    return report(e, threshold=threshold, atol=atol, u=u, num_evaluations=2 * k,
                  kind="directional", min_detectable=float(rho.min()))  # fmt: skip


@functools.partial(jax.jit, static_argnames=("f", "k"))
def _directional(f, k, tree, grad, key, eps):
    """The k quotients along random unit directions v, the k products ⟨grad, v⟩, f(θ),
    ‖grad‖₂."""
    theta, unravel = ravel_pytree(tree)
    v = jax.random.normal(key, (k, theta.size), theta.dtype)
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    value = f(tree)
    check_scalar(jnp.shape(value))
    h = steps(jnp.max(jnp.abs(theta)), eps)
    plus = jax.vmap(lambda d: f(unravel(theta + h * d)))(v)
    minus = jax.vmap(lambda d: f(unravel(theta - h * d)))(v)
    g = ravel_pytree(grad)[0].astype(theta.dtype)
    return (plus - minus) / (2 * h), v @ g, value, jnp.linalg.norm(g)


# ---------------------------------------------------------------------------------------
# Hessian-vector products (S27, S29; Bishop 5.4.4): against central differences of ∇L.
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("net", "loss_fn"))
def _gradient_quotient(net, loss_fn, params, x, y, v, eps):
    """``(∇L(θ + h v) − ∇L(θ − h v)) / 2h`` by fnn's backprop, ``h = ε max(1, |θ|∞) / |v|∞``;
    the kink crossings; ``|∇L(θ)|∞``, ``h``."""
    theta, unravel = ravel_pytree(params)
    direction = ravel_pytree(v)[0].astype(theta.dtype)
    h = eps * jnp.maximum(1, jnp.max(jnp.abs(theta))) / jnp.max(jnp.abs(direction))

    def gradient_and_sides(t):
        p = unravel(t)
        grads = backprop.reverse(net, p, x, y, loss_fn)[1]["params"]
        y_hat, cache = forward_pass(net, p, x)
        return ravel_pytree(grads)[0], kink_sides(net, loss_fn, y_hat, cache, y)

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
    *,
    loss="l2",
    eps: float | None = None,
    threshold: float | None = None,
    oracle=ORACLE,
) -> GradCheck:
    r"""Check a Hessian-vector product ``Hv`` against central differences of the gradient
    (S27, S29; Bishop 5.4.4), entry by entry as :func:`fnn.gradcheck.check_gradient`:

    .. math::  ∇²L\, v ≈ \frac{∇L(θ + h v) − ∇L(θ − h v)}{2h}, \qquad
               h = ε \max(1, \max_i |θ_i|) / \max_i |v_i|

    ``∇L`` is fnn's backpropagation of the batch loss (proven against ``jax.grad``), in
    float64 by default (``oracle``); two gradient evaluations, O(h²) truncation error. The
    tolerance is that of ``params``' dtype (an ``Hv`` handed over wider is no more accurate
    than the parameters) and scales with ``v`` (the oracle's resolution is
    ``10 ε^{2/3} (|∇L|∞ |v|∞ / max(1, |θ|∞) + max |Hv|)``): a
    correct ``Hv`` passes for a ``v`` of any size. Where ``θ ± h v`` moves a pre-activation
    across a kink (``Activation.kinks``) or a loss residual across a kink of the loss,
    ``∇L`` jumps and the quotient is no derivative: the report counts them and fails.

    Args:
      net, params, x, y, loss: the network and its batch loss, as in ``fnn.value_and_grad``.
      v: the direction, like ``params``.
      Hv: the product to check (``fnn.hvp``'s), like ``params``.
      eps: the base step (default ``ε_mach^{1/3}`` of the oracle's dtype).
      threshold: the relative threshold (default :data:`fnn.gradcheck.THRESHOLDS` of
        ``params``' dtype).
      oracle: the dtype of the quotient (default float64; ``None``: ``params``' own).

    Returns:
      A :class:`fnn.gradcheck.GradCheck` of kind ``"HVP"``; ``print`` it for the report. An
      entry of ``Hv`` that is NaN or inf fails, named.

    Raises:
      TypeError: ``net`` is not an ``fnn.MLP``, or an array is not real floating point.
      ValueError: ``params``/``v``/``Hv`` not matching ``net``, bad ``x``/``y``/``eps``, an
        unknown loss, a loss that does not suit the output activation, ``v = 0``, or a NaN
        or inf in ``params``, ``x``, ``y`` or ``v``.

    >>> import fnn
    >>> net = MLP((1, 1), ("identity",))  # L = (w x + b − y)²: ∇²L v = [2x², 2x; 2x, 2] v
    >>> params = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> v = [{"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}]
    >>> x, y = jnp.array([3.0]), jnp.zeros(1)
    >>> check_hvp(net, params, x, y, v, fnn.hvp(net, params, x, y, v)).passed
    True
    """
    loss_fn, x, y = check_problem(net, params, x, y, loss)
    _checks.check_params(net, v, "v")
    check_finite_tree(v, "v")
    check_same_structure(Hv, params, "Hv")
    dtype, hv_dtype = check_tree(params, "params"), check_tree(Hv, "Hv")
    if not np.any([np.any(np.asarray(t) != 0) for t in jax.tree.leaves(v)]):
        raise ValueError("v must be a nonzero direction; got all zeros.")
    target = oracle_dtype(oracle, dtype)
    with precision(target):
        p, x, y, w = upcast((params, x, y, v), target)
        out = _gradient_quotient(net, loss_fn, p, x, y, w, check_eps(eps, target))
        numerical, crossed, g_max, h = jax.tree.map(np.asarray, out)
    narrower = min((dtype, hv_dtype), key=lambda d: np.dtype(d).itemsize)
    e = entries(Hv, numerical, dtype=narrower)
    v_max = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(v))
    theta_max = max(float(np.max(np.abs(t))) for t in jax.tree.leaves(params))
    u = hvp_resolution(target, float(g_max) * v_max / max(1.0, theta_max), e)
    return report(e, threshold=threshold, atol=None, u=u, num_evaluations=6, kind="HVP",
                  step=float(h), kinks_crossed=int(crossed))  # fmt: skip


def hvp_resolution(dtype: str, gradient_scale: float, e) -> float:
    """The quotient's round-off ``10 ε^{2/3} |∇L|∞ |v|∞ / max(1, |θ|∞)`` (``ε_mach |∇L| /
    h`` at ``h = ε^{1/3} max(1, |θ|∞) / |v|∞``) and truncation (``10 ε^{2/3}`` of its
    largest entry): linear in ``v``, so a check of ``c v`` is that of ``v`` scaled."""
    eps = float(jnp.finfo(dtype).eps)
    return 10 * eps ** (2 / 3) * (gradient_scale + largest(e))
