"""The checked boundary: every public function validates its inputs here, once, in Python.

Each check raises ``ValueError`` (a wrong value or shape) or ``TypeError`` (a wrong kind of
object or dtype) whose message names the argument, what was expected and what was got, the
way chex's assertions point at the culprit. The engines behind the public functions never
check again. What these checks cannot see — the *values* of arrays that are traced under
``jax.jit`` or ``jax.vmap`` — is handled where the values are used (a label out of range
gives NaN, never a finite wrong number: :mod:`fnn.losses`).

:func:`check_net` comes first at every door; the other checks of a network's arrays take a
``net`` that has passed it. The checks of a loss's inputs (S16) —
:func:`check_output_activation`, :func:`check_target`, :func:`check_prediction` — take a
:class:`fnn.losses.Loss` record and are public as ``fnn.losses.check_target`` and so on;
their traced twin, the opt-in checked mode, is :func:`fnn.losses.checkify_target`, with the
same messages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:  # fnn.losses imports this module; the checks read a Loss's fields only
    from fnn.losses import Loss

__all__ = [
    "HINTS",
    "PREDICTION_RULE",
    "check_choice",
    "check_finite",
    "check_input",
    "check_key",
    "check_limit",
    "check_net",
    "check_number",
    "check_one_example",
    "check_output_activation",
    "check_params",
    "check_positive_int",
    "check_prediction",
    "check_target",
    "format_size",
    "target_rule",
    "unknown_name",
]


HINTS = {
    "mse": "l2",
    "squared_error": "l2",
    "mae": "l1",
    "absolute_error": "l1",
    "ce": "cross_entropy",
    "nll": "cross_entropy",
    "logistic": "sigmoid",
    "swish": "silu",
    "linear": "identity",
    "none": "identity",
    "r_op": "r_operator",
}
"""Names people reach for that fnn spells differently, each with fnn's name for it.

A hint in the error, never an alias that is accepted (one name per thing).
"""


def unknown_name(kind: str, name, valid: Iterable[str]) -> ValueError:
    """The ``ValueError`` for an unknown name: the valid ones, and the nearest as a hint.

    The nearest is found ignoring case (``'Relu'`` → ``'relu'``), and :data:`HINTS` maps
    names of other libraries to fnn's (``'mse'`` → ``'l2'``).

    >>> str(unknown_name("activation", "tahn", ("sigmoid", "tanh")))
    "Unknown activation 'tahn' (did you mean 'tanh'?); expected one of ('sigmoid', 'tanh')."
    >>> str(unknown_name("loss", "MSE", ("l1", "l2")))
    "Unknown loss 'MSE' (did you mean 'l2'?); expected one of ('l1', 'l2')."
    """
    valid = tuple(valid)
    near = []
    if isinstance(name, str):
        lower = {v.lower(): v for v in valid}
        hinted = HINTS.get(name.lower())
        if hinted in valid:
            near = [hinted]
        else:
            near = [lower[m] for m in difflib.get_close_matches(name.lower(), lower, n=1)]
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ValueError(f"Unknown {kind} {name!r}{hint}; expected one of {valid}.")


def check_net(net):
    """``net`` if it is an :class:`fnn.MLP`; else a ``TypeError`` naming what was passed (every
    public function that takes ``net`` calls this first).

    >>> check_net([{"W": 1}])
    Traceback (most recent call last):
    ...
    TypeError: net must be an fnn.MLP; got list (arguments in the order net, params, …?).
    """
    from fnn.network import MLP  # network imports this module: resolve at call time

    if not isinstance(net, MLP):
        hint = " (arguments in the order net, params, …?)" if isinstance(net, (list, tuple)) else ""
        raise TypeError(f"net must be an fnn.MLP; got {type(net).__name__}{hint}.")
    return net


def check_choice(value, choices: Iterable[str], kind: str) -> str:
    """``value`` if it is one of ``choices``; else :func:`unknown_name`'s error."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise unknown_name(kind, value, choices)
    return value


def check_one_example(a, name: str = "a") -> None:
    """``ValueError`` unless ``a`` is one example ``(n,)``: a dense ``(n, n)`` Jacobian is for
    one example, and ``jnp.diag`` and ``jnp.outer`` would silently take a diagonal of, or
    flatten, a batch."""
    if np.ndim(a) != 1:
        raise ValueError(
            f"{name} must be one example of shape (n,) for a dense (n, n) matrix (jax.vmap it "
            f"over a batch); got shape {np.shape(a)}."
        )


def check_positive_int(value, name: str) -> int:
    """``value`` as an int; ``ValueError`` naming ``name`` unless it is a positive integer
    (batch sizes, epochs, chunk sizes, repetitions, graph sizes)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def check_number(value, name: str, *, positive: bool) -> None:
    """``TypeError`` unless ``value`` is one real number, ``ValueError`` unless it is finite and
    ``> 0`` (``positive``) or ``≥ 0`` (norm bounds, noise multipliers); traced values pass."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, bool) or np.ndim(value) != 0 or not np.isreal(value):
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    v = float(value)
    if not (np.isfinite(v) and (v > 0 if positive else v >= 0)):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '≥'} 0; got {v}.")


def check_tolerances(**options) -> None:
    """:func:`check_number` ``≥ 0`` of every option given (not ``None``): a check's
    ``threshold``, ``atol`` or ``resolution``."""
    for name, value in options.items():
        if value is not None:
            check_number(value, name, positive=False)


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


def _dtype(value) -> np.dtype | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return None
    return np.dtype(dtype) if not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) else None


def _check_real_float(value, name: str) -> None:
    dtype = _dtype(value)
    if dtype is None or not jax.dtypes.issubdtype(dtype, np.floating):
        got = "no array" if dtype is None else str(dtype)
        raise TypeError(f"{name} must be a real floating-point array; got {got}.")


def _act_name(f) -> str:
    return f if isinstance(f, str) else getattr(f, "name", repr(f))


def check_params(net, params, name: str = "params") -> None:
    """``ValueError`` unless ``params`` has exactly the layers and shapes of ``net``;
    ``TypeError`` unless every leaf is a real floating-point array (it gets a gradient: an
    integer leaf would silently truncate it)."""
    if not isinstance(params, (list, tuple)):
        raise ValueError(
            f"{name} must be a list of {net.num_layers} per-layer dicts; "
            f"got {type(params).__name__}."
        )
    if len(params) != net.num_layers:
        raise ValueError(
            f"{name} must hold {net.num_layers} layers for sizes {net.sizes}; got {len(params)}."
        )
    for i, (layer_params, expected) in enumerate(zip(params, net.layer_shapes())):
        if not isinstance(layer_params, dict) or set(layer_params) != set(expected):
            got = sorted(layer_params) if isinstance(layer_params, dict) else type(layer_params)
            raise ValueError(
                f"{name}[{i}] (layer {i + 1}, activation {_act_name(net.activations[i])!r}) "
                f"must be a dict with keys {sorted(expected)}; got {got}."
            )
        for key, shape in expected.items():
            got = tuple(np.shape(layer_params[key]))
            if got != shape:
                raise ValueError(
                    f"{name}[{i}][{key!r}] (layer {i + 1}) must have shape {shape} for sizes "
                    f"{net.sizes}; got {got}."
                )
            _check_real_float(layer_params[key], f"{name}[{i}][{key!r}]")


def check_input(net, x, name: str = "x", *, single: bool = False, floating: bool = True):
    """``ValueError`` unless ``x`` is one example ``(D,)`` or a non-empty batch ``(B, D)``
    (only ``(D,)`` with ``single=True``); ``TypeError`` unless it is a real floating-point
    array (``floating=False`` admits integers too, for a forward pass)."""
    shape = tuple(np.shape(x))
    D = net.in_features
    if single and shape != (D,):
        raise ValueError(f"{name} must be ONE example of shape (D,) = ({D},); got {shape}.")
    if len(shape) not in (1, 2) or shape[-1] != D:
        raise ValueError(f"{name} must have shape (D,) or (B, D) with D = {D}; got {shape}.")
    if len(shape) == 2 and shape[0] == 0:
        raise ValueError(f"{name} must hold at least one example; got an empty batch {shape}.")
    dtype = _dtype(x)
    numeric = dtype is not None and (
        jax.dtypes.issubdtype(dtype, np.floating)
        or (not floating and jax.dtypes.issubdtype(dtype, np.integer))
    )
    if not numeric:
        want = "a real floating-point" if floating else "a real (integer or floating) numeric"
        raise TypeError(f"{name} must be {want} array; got {dtype}.")


def check_finite(value, name: str) -> None:
    """``ValueError`` naming the first non-finite entry of a concrete array (traced values
    pass: their NaNs surface in the results)."""
    if isinstance(value, jax.core.Tracer):
        return
    values = np.asarray(value)
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise ValueError(f"{name} must be finite; got {values[index]} at index {index}.")


def format_size(n: int, unit: str = "bytes") -> str:
    """``n`` in the unit that shows it: bytes as B, KiB, MiB or GiB; other counts as integers.

    >>> format_size(3 * 2**20), format_size(1500), format_size(2**22, "tangents")
    ('3.0 MiB', '1.5 KiB', '4194304 tangents')
    """
    if unit != "bytes":
        return f"{int(n)} {unit}"
    for name, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {name}"
    return f"{int(n)} B"


def check_limit(
    needed: int, limit: int, *, name: str, what: str, instead: str, unit: str = "bytes"
) -> None:
    """Refuse work that can explode before it starts: every limit of fnn (``max_bytes``,
    ``max_tangents``, ``max_paths``, …) is honoured here, the caller's value, not a default.

    Raises ``ValueError`` when ``needed > limit``, naming the work, both sizes, the limit's
    argument and the cheap alternative ``instead``.

    >>> check_limit(2**30, 2**28, name="max_bytes", what="H", instead="Use fnn.hvp.")
    Traceback (most recent call last):
    ...
    ValueError: H needs 1.0 GiB, over max_bytes=256.0 MiB. Use fnn.hvp. (Or raise max_bytes.)
    """
    if needed > limit:
        raise ValueError(
            f"{what} needs {format_size(needed, unit)}, over {name}={format_size(limit, unit)}. "
            f"{instead} (Or raise {name}.)"
        )


# ---------------------------------------------------------------------------------------
# A loss's target and prediction (S16), in Python before tracing; fnn.losses's public checks.
# ---------------------------------------------------------------------------------------


def _concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` while it is traced (its values are unknown)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _first_outside(values: np.ndarray, lo: float, hi: float, hi_open: bool = False):
    """The first entry of ``values`` outside [lo, hi] (or [lo, hi)), as text, or None."""
    inside = (values >= lo) & ((values < hi) if hi_open else (values <= hi))
    if np.all(inside):
        return None
    if values.ndim == 0:
        return f"{values}"
    index = tuple(int(i) for i in np.argwhere(~inside)[0])
    return f"{values[index]} at index {index}"


def target_rule(loss: Loss, n: int | None) -> str:
    """What the targets of ``loss`` must hold for ``n`` outputs, as every message says it
    (eager here, traced in :func:`fnn.losses.checkify_target`)."""
    if loss.target == "label":
        return f"labels in [0, {n}) for {n} outputs"
    lo, hi = loss.target_range
    return f"targets in [{lo:g}, {hi:g}] (0/1 labels or probabilities)"


PREDICTION_RULE = "probabilities in [0, 1] (the output of a softmax or sigmoid)"
"""What the ``ŷ`` of a loss on probabilities must hold, as every message says it."""


def check_output_activation(loss: Loss, f_out: str) -> None:
    """Raise ``ValueError`` unless the network's output activation ``f_out`` is one of
    ``loss.outputs`` (S7, S16): a loss on logits (``softmax_cross_entropy``,
    ``sigmoid_binary_cross_entropy``) needs ``"identity"`` (the softmax or sigmoid is part of
    the loss), a loss on probabilities one of :data:`fnn.losses.PROBABILITY_OUTPUTS`."""
    if loss.outputs is None or f_out in loss.outputs:
        return
    if loss.on_logits:
        raise ValueError(
            f"loss {loss.name!r} is applied to logits, so the output activation must be "
            f"'identity'; got {f_out!r} (the softmax or sigmoid is part of the loss)."
        )
    what = "takes probabilities" if loss.on_probabilities else "suits"
    raise ValueError(
        f"loss {loss.name!r} {what}, so the output activation must be one of "
        f"{loss.outputs}; got {f_out!r}."
    )


def check_target(loss: Loss, y_hat_shape: tuple[int, ...], y) -> None:
    """Raise ``ValueError`` unless ``y`` is a valid target for outputs of ``y_hat_shape``
    (S16).

    ``y_hat_shape`` is ``(n,)`` for one example or ``(B, n)`` for a batch. Always checked
    (static): the shape of ``y``, and for ``target="label"`` an integer dtype. Checked where
    ``y`` is concrete (never on tracers): labels in ``[0, n)``; for a loss on probabilities
    with vector targets (``binary_cross_entropy``) ``y`` in ``[0, 1]`` (0/1 labels, or soft
    targets). The predictions ``ŷ`` are checked by :func:`check_prediction`.

    Raises:
      ValueError: naming ``y``, the expected and the actual shape, dtype or value.
    """
    shape = tuple(np.shape(y))
    if loss.target == "vector":
        if shape != tuple(y_hat_shape):
            raise ValueError(
                f"y for loss {loss.name!r} must have the output's shape {tuple(y_hat_shape)}; "
                f"got {shape}."
            )
        values = _concrete(y)
        if loss.target_range is not None and values is not None:
            bad = _first_outside(values, *loss.target_range)
            if bad is not None:
                raise ValueError(
                    f"y for loss {loss.name!r} must hold {target_rule(loss, None)}; got {bad}."
                )
        return
    expected = tuple(y_hat_shape[:-1])
    if shape != expected:
        raise ValueError(
            f"y for loss {loss.name!r} must be integer labels of shape {expected}; got {shape}."
        )
    dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"y for loss {loss.name!r} must be integer class labels; got dtype {dtype}."
        )
    values = _concrete(y)
    n = y_hat_shape[-1]
    bad = None if values is None else _first_outside(values, 0, n, hi_open=True)
    if bad is not None:
        raise ValueError(f"y for loss {loss.name!r} must hold {target_rule(loss, n)}; got {bad}.")


def check_prediction(loss: Loss, y_hat) -> None:
    """Raise ``ValueError`` if a loss on probabilities gets a concrete ``ŷ`` outside [0, 1]
    (S16).

    ``cross_entropy`` and ``binary_cross_entropy`` take probabilities (the output of a
    softmax, or of a sigmoid); any other ŷ, or one that is traced, passes unchecked. This
    lives apart from :func:`check_target`, which sees only the shape of ``ŷ``: call it where
    ``ŷ`` comes from the user rather than from the network's own output activation.

    Raises:
      ValueError: naming ``y_hat``, the expected range and the first value outside it.
    """
    values = _concrete(y_hat) if loss.on_probabilities else None
    bad = None if values is None else _first_outside(values, 0, 1)
    if bad is not None:
        raise ValueError(f"y_hat for loss {loss.name!r} must be {PREDICTION_RULE}; got {bad}.")
