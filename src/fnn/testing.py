r"""Assertions for any JAX project's tests: a function's derivatives against the float64
oracle (S11, S19, S29).

No fnn network needed: ``f`` is any JAX function of pytrees of floating arrays. Each
assertion computes the derivative JAX gives (``jax.grad``, ``jax.vjp``, ``jax.jvp`` — and so
``f``'s own ``jax.custom_vjp``/``jax.custom_jvp`` rules), computes the same quantity by
central differences in float64 (:mod:`fnn.gradcheck`'s oracle, whatever ``f``'s dtype), and
judges every entry by :mod:`fnn.oracle`'s one rule: ``|a − b| ≤ t (|a| + |b|) + r + u``.

* :func:`assert_grad` — ``jax.grad(f)`` of a scalar ``f``.
* :func:`assert_vjp` — ``u ↦ uᵀ J`` for random cotangents ``u`` against the gradient of
  ``⟨u, f⟩`` (a ``custom_vjp`` rule's ``bwd``).
* :func:`assert_jvp` — ``t ↦ J t`` for random tangents ``t`` against
  ``(f(x + h t) − f(x − h t)) / 2h`` (a ``custom_jvp`` rule).
* :func:`assert_hvp` — ``∇²f v`` against central differences of ``jax.grad(f)``.

A failure raises ``AssertionError`` naming the argument, the leaf, the index, both numbers
and the tolerance, in a few lines::

    def test_my_softplus():
        fnn.testing.assert_vjp(my_softplus, jnp.linspace(-3.0, 3.0, 7))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fnn.gradcheck import check_gradient
from fnn.numerical import check_eps, check_finite_tree, check_tree, oracle_dtype, precision, upcast
from fnn.numerical import resolution as oracle_resolution
from fnn.oracle import (
    ORACLE,
    GradCheck,
    entries,
    report,
)

__all__ = ["assert_grad", "assert_hvp", "assert_jvp", "assert_vjp"]


# ---------------------------------------------------------------------------------------
# Arguments: which are differentiated, and what they are called.
# ---------------------------------------------------------------------------------------


def _floating(arg) -> bool:
    leaves = jax.tree.leaves(arg)
    return bool(leaves) and all(
        jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in leaves
    )


def _argnums(args, argnums) -> tuple[int, ...]:
    """``argnums`` as a tuple, or every argument that holds only floating arrays."""
    if argnums is None:
        chosen = tuple(i for i, a in enumerate(args) if _floating(a))
        if not chosen:
            raise ValueError("f must take at least one floating-point argument; got none.")
        return chosen
    chosen = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in chosen:
        if not isinstance(i, int) or not 0 <= i < len(args):
            raise ValueError(f"argnums must index the {len(args)} arguments; got {argnums!r}.")
    return chosen


def _names(f: Callable, n: int) -> list[str]:
    """The names of ``f``'s first ``n`` positional parameters (``args[i]`` where unknown)."""
    try:
        params = [
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"args[{i}]" for i in range(n)]


def _partial(f: Callable, args, argnums: tuple[int, ...]) -> Callable:
    """``f`` as a function of the differentiated arguments (a tuple), the rest fixed."""

    def g(diff):
        full = list(args)
        for i, a in zip(argnums, diff):
            full[i] = a
        return f(*full)

    return g


def _check_inputs(args, argnums, names) -> tuple:
    diff = tuple(args[i] for i in argnums)
    for i, a in zip(argnums, diff):
        check_tree(a, names[i])
        check_finite_tree(a, names[i])
    return diff


# ---------------------------------------------------------------------------------------
# The message.
# ---------------------------------------------------------------------------------------


def _raise_unless_passed(r: GradCheck, what: str, labels: Sequence[str] | None) -> None:
    """``AssertionError`` in a few lines: which argument, leaf and index, both numbers, the
    tolerance (``labels[i]`` names the i-th top-level entry of the checked tuple; ``None``:
    the entries are ``f``'s outputs)."""
    if r.passed:
        return
    path, rest = _split(r.worst_path, labels)
    diff = abs(r.worst_hand - r.worst_numerical)
    tolerance = r.threshold * (abs(r.worst_hand) + abs(r.worst_numerical)) + r.atol + r.resolution
    lines = [
        f"{what} disagrees with {r.oracle_dtype} central differences",
        f"  at {path}, leaf {rest or '(the whole argument)'}, index {r.worst_index}:",
        f"  {r.kind} {r.worst_hand:.10g}, central differences {r.worst_numerical:.10g};",
        f"  |difference| {diff:.3g} vs tolerance {tolerance:.3g} = {r.threshold:.0e} (|a| + |b|)"
        f" + {r.atol:.2g} + {r.resolution:.2g}",
        f"  {r.num_failed} failed, {r.num_unresolved} unresolved of "
        f"{sum(leaf.size for leaf in r.leaves)} entries ({r.dtype})",
    ]
    if r.nonfinite:
        lines.insert(1, f"  not finite: {r.nonfinite}")
    if r.num_unresolved and not r.num_failed:
        lines.insert(1, "  unresolved: the oracle cannot tell these entries from 0 at this scale")
    raise AssertionError("\n".join(lines))


def _split(path: str, labels: Sequence[str] | None) -> tuple[str, str]:
    """``"[1]['W']"`` → (``"argument 'x'"``, ``"['W']"``) with ``labels[1] == "x"``."""
    if labels is None:
        return "the output", path
    if not path.startswith("["):
        return "argument ?", path
    head, _, rest = path[1:].partition("]")
    try:
        return f"argument {labels[int(head)]!r}", rest
    except (ValueError, IndexError):
        return f"output {path}", ""


# ---------------------------------------------------------------------------------------
# The assertions.
# ---------------------------------------------------------------------------------------


def assert_grad(
    f: Callable, *args, argnums=None, eps=None, threshold=None, atol=None, oracle=ORACLE
) -> GradCheck:
    """Assert that ``jax.grad(f)`` agrees with float64 central differences of ``f``, entry
    by entry (S11, S19).

    Args:
      f: a scalar function of ``args``.
      args: the point (pytrees of floating arrays; others are held fixed).
      argnums: which arguments to differentiate (default: every floating one).
      eps, threshold, atol, oracle: as in :func:`fnn.gradcheck.check_gradient`.

    Returns:
      The :class:`fnn.gradcheck.GradCheck` (it passed).

    Raises:
      AssertionError: an entry fails, is NaN or inf, or is unresolved; the message names
        the argument, the leaf, the index, both numbers and the tolerance.
      ValueError: a NaN or inf in a differentiated argument; a bad ``argnums``.

    >>> assert_grad(lambda w, x: jnp.sum(jnp.tanh(w * x)), jnp.ones(3), jnp.arange(3.0)).passed
    True
    """
    argnums = _argnums(args, argnums)
    names = _names(f, len(args))
    diff = _check_inputs(args, argnums, names)
    hand = jax.grad(lambda d: _partial(f, args, argnums)(d))(diff)
    r = check_gradient(_partial(f, args, argnums), diff, hand, eps=eps, threshold=threshold,
                       atol=atol, oracle=oracle)  # fmt: skip
    _raise_unless_passed(r, "jax.grad", [names[i] for i in argnums])
    return r


def _probe(tree, rng: np.random.Generator):
    """A random normal pytree like ``tree``, rounded to its dtypes (so that both sides of a
    check use the very same numbers)."""
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a)), a.dtype), tree)


def assert_vjp(f: Callable, *args, argnums=None, probes: int = 2, seed: int = 0, **options):
    """Assert that ``f``'s vector-Jacobian products (``jax.vjp``: its ``custom_vjp`` rule,
    if any) agree with the float64 oracle: for ``probes`` random cotangents ``u``, ``uᵀ J``
    against central differences of the scalar ``⟨u, f(args)⟩`` (S11, S19).

    Args:
      f: a function of ``args`` returning a pytree of floating arrays.
      args, argnums: as in :func:`assert_grad`.
      probes: how many random cotangents.
      seed: their NumPy seed.
      options: ``eps``, ``threshold``, ``atol``, ``oracle`` of :func:`assert_grad`.

    Returns:
      The last probe's :class:`fnn.gradcheck.GradCheck`.

    Raises:
      AssertionError: as :func:`assert_grad`, for the first probe that fails.

    >>> assert_vjp(jnp.sin, jnp.linspace(0.0, 1.0, 4)).passed
    True
    """
    argnums = _argnums(args, argnums)
    names = _names(f, len(args))
    diff = _check_inputs(args, argnums, names)
    g = _partial(f, args, argnums)
    out, vjp = jax.vjp(g, diff)
    rng = np.random.default_rng([seed, 2718])  # not the stream of a user's own seed
    for _ in range(probes):
        u = _probe(out, rng)
        hand = vjp(u)[0]
        wide = jax.tree.map(lambda c: np.asarray(c, np.float64), u)

        def inner(d, wide=wide):
            y = g(d)
            return sum(
                jnp.vdot(c.astype(o.dtype), o)
                for c, o in zip(jax.tree.leaves(wide), jax.tree.leaves(y))
            )

        r = check_gradient(inner, diff, hand, **options)
        _raise_unless_passed(r._replace(kind="VJP"), "the VJP uᵀJ", [names[i] for i in argnums])
    return r._replace(kind="VJP")


def assert_jvp(
    f: Callable, *args, argnums=None, probes: int = 2, seed: int = 0, eps=None,
    threshold=None, oracle=ORACLE,
) -> GradCheck:  # fmt: skip
    """Assert that ``f``'s Jacobian-vector products (``jax.jvp``: its ``custom_jvp`` rule,
    if any) agree with the float64 oracle: for ``probes`` random tangents ``t``, every
    output entry of ``J t`` against ``(f(x + h t) − f(x − h t)) / 2h`` with
    ``h = ε max(1, |x|∞) / |t|∞`` (S11).

    Args:
      f: a function of ``args`` returning a pytree of floating arrays.
      args, argnums, probes, seed: as in :func:`assert_vjp`.
      eps, threshold, oracle: as in :func:`fnn.gradcheck.check_gradient`.

    Returns:
      The last probe's :class:`fnn.gradcheck.GradCheck` (its entries are ``f``'s outputs).

    Raises:
      AssertionError: an output entry fails; the message names the output leaf and index.

    >>> assert_jvp(jnp.tanh, jnp.linspace(-1.0, 1.0, 5)).passed
    True
    """
    argnums = _argnums(args, argnums)
    names = _names(f, len(args))
    diff = _check_inputs(args, argnums, names)
    g = _partial(f, args, argnums)
    dtype = check_tree(diff, "args")
    target = oracle_dtype(oracle, dtype)
    rng = np.random.default_rng([seed, 2718])  # not the stream of a user's own seed
    for _ in range(probes):
        t = _probe(diff, rng)
        hand = jax.jvp(g, (diff,), (t,))[1]
        numerical, value = _jvp_quotient(g, diff, t, target, check_eps(eps, target))
        e = entries(hand, numerical, dtype=check_tree(hand, "output"))
        u = oracle_resolution(e.oracle_dtype, value)
        r = report(e, threshold=threshold, atol=None, u=u, num_evaluations=2, kind="JVP")
        _raise_unless_passed(r, "the JVP J t", None)
    return r


def _jvp_quotient(g, diff, t, target: str, eps: float):
    """``(g(x + h t) − g(x − h t)) / 2h`` in ``target`` (NumPy leaves), and the scale of
    its round-off ``max |g(x)| |t|∞ / max(1, |x|∞)``."""
    with precision(target):
        x, d = upcast(diff, target), upcast(t, target)
        x_max = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(x))
        d_max = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(d))
        h = eps * max(1.0, x_max) / d_max
        plus = g(jax.tree.map(lambda a, b: a + h * b, x, d))
        minus = g(jax.tree.map(lambda a, b: a - h * b, x, d))
        quotient = jax.tree.map(lambda p, m: np.asarray((p - m) / (2 * h)), plus, minus)
        value = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(g(x)))
    # the round-off κ ε |g| / 2h of the quotient, in units of ε^{2/3}: linear in t
    return quotient, value * d_max / max(1.0, x_max)


def assert_hvp(
    f: Callable, *args, v=None, argnum: int = 0, hvp: Callable | None = None, seed: int = 0,
    eps=None, threshold=None, oracle=ORACLE,
) -> GradCheck:  # fmt: skip
    """Assert that a Hessian-vector product of a scalar ``f`` w.r.t. ``args[argnum]`` agrees
    with central differences of its gradient, ``(∇f(θ + h v) − ∇f(θ − h v)) / 2h``, with
    ``∇f = jax.grad(f)`` evaluated in float64 (S27, S29) — :func:`assert_grad` proves the
    first-order rules, this the second-order ones.

    Args:
      f: a scalar function of ``args``.
      args: the point.
      v: the direction, like ``args[argnum]`` (default: a random normal one).
      argnum: the argument the Hessian is taken of.
      hvp: the product to check, ``hvp(*args, v)`` (default: ``jax.jvp`` of ``jax.grad(f)``,
        or ``jax.grad`` of ``⟨∇f, v⟩`` where ``f`` has a ``custom_vjp`` rule).
      seed, eps, threshold, oracle: as in :func:`assert_vjp`.

    Returns:
      The :class:`fnn.gradcheck.GradCheck` (kind ``"HVP"``).

    Raises:
      AssertionError: an entry of ``Hv`` fails; the message names the leaf and index.

    >>> assert_hvp(lambda w: jnp.sum(w ** 3), jnp.array([1.0, 2.0])).passed
    True
    """
    names = _names(f, len(args))
    (theta,) = _check_inputs(args, (argnum,), names)
    v = _probe(theta, np.random.default_rng([seed, 2718])) if v is None else v
    check_finite_tree(v, "v")
    g = _partial(f, args, (argnum,))
    hand = _default_hvp(g, theta, v) if hvp is None else hvp(*args, v)
    target = oracle_dtype(oracle, check_tree(theta, names[argnum]))
    grad = jax.grad(lambda t: g((t,)))
    numerical, scale = _jvp_quotient(grad, theta, v, target, check_eps(eps, target))
    narrower = min((check_tree(theta), check_tree(hand, "Hv")), key=lambda d: np.dtype(d).itemsize)
    e = entries((hand,), (numerical,), dtype=narrower)
    u = oracle_resolution(target, scale)
    r = report(e, threshold=threshold, atol=None, u=u, num_evaluations=2, kind="HVP")
    _raise_unless_passed(r, "the HVP ∇²f v", [names[argnum]])
    return r


def _default_hvp(g, theta, v):
    """Forward over reverse; reverse over reverse where ``f`` has no forward mode (a
    ``custom_vjp`` rule)."""
    grad = jax.grad(lambda t: g((t,)))
    try:
        return jax.jvp(grad, (theta,), (v,))[1]
    except TypeError:
        inner = lambda t: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grad(t)),  # noqa: E731
                                                            jax.tree.leaves(v)))  # fmt: skip
        return jax.grad(inner)(theta)
