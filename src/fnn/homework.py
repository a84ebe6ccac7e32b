r"""Check my homework: a backward pass by hand, marked step by step (S14, S17, S23).

:func:`exercise` makes a small network from a seed — two or three layers, weights with one
decimal, sigmoid, tanh or ReLU hidden units, a linear output and the L2 loss
``L = Σᵢ (ŷᵢ − yᵢ)²`` — and :func:`worksheet` the blank sheet a student fills in, every
number in the order the passes compute it::

    forward,  i = 1 … N:   a[i] = W⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ + b⁽ⁱ⁾,   z[i] = f(a⁽ⁱ⁾)          (z⁽⁰⁾ = x)
    the loss:             L = Σ (z⁽ᴺ⁾ − y)²
    backward, i = N … 1:  dL/dz[N] = 2 (z⁽ᴺ⁾ − y),   dL/dz[i] = W⁽ⁱ⁺¹⁾ᵀ δ⁽ⁱ⁺¹⁾
                          delta[i] = dL/dz[i] ⊙ f′(a⁽ⁱ⁾)
                          dL/dW[i] = δ⁽ⁱ⁾ z⁽ⁱ⁻¹⁾ᵀ,   dL/db[i] = δ⁽ⁱ⁾

:func:`check` marks a filled-in sheet (a dict, a JSON or a CSV file). Every number is
recomputed twice: from the right earlier values (the reference,
:func:`fnn.backprop_trace`'s) and from the student's own earlier values. A number that
matches the first is right; one that matches only the second is "right given your earlier
value" — the step was done right on a wrong input. For the first number that matches
neither, the step is redone from the student's own earlier values under the common wrong
rules (f′ at z instead of a, f′ left out, W instead of Wᵀ, the factor 2 of L2 dropped, a
flipped sign, z⁽ⁱ⁾ instead of z⁽ⁱ⁻¹⁾ in ∂L/∂W, …), and the rules that reproduce the
student's number are named.

From the shell::

    python -m fnn.homework new --seed 3 > sheet.json     # fill in the "answers"
    python -m fnn.homework check sheet.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from fnn import activations
from fnn.homework_io import answer_array, read_answers, to_csv, to_json
from fnn.network import MLP
from fnn.traces import backprop_trace  # the reference pass (S23)

__all__ = [
    "Exercise",
    "Mark",
    "Marking",
    "check",
    "exercise",
    "keys",
    "main",
    "read_answers",
    "solution",
    "to_csv",
    "to_json",
    "worksheet",
]

HIDDEN = ("sigmoid", "tanh", "relu")
"""The hidden activations an exercise draws from; the output is always linear."""
RIGHT, FOLLOWS, WRONG, BLANK = "right", "right given your earlier value", "wrong", "blank"
"""The four marks a number can get (:attr:`Mark.status`)."""
SYMBOL = {RIGHT: "✓", FOLLOWS: "✓*", WRONG: "✗", BLANK: "·"}
"""How each mark is printed."""
_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class Exercise(NamedTuple):
    """One hand-calculation exercise: the network, its parameters (NumPy, one decimal), one
    example ``x`` with target ``y``, and how many decimals answers are given to."""

    seed: int
    """The seed the exercise was made from."""
    net: MLP
    """The network: ``2 → 2 → 1`` or ``2 → 2 → 2 → 1``, a linear output."""
    params: list
    """``[{"W": (M, D), "b": (M,)}, …]`` as NumPy arrays with one decimal."""
    x: np.ndarray
    """The input, shape ``(2,)``."""
    y: np.ndarray
    """The target, shape ``(1,)``."""
    decimals: int
    """How many decimals answers are given to."""

    def __str__(self) -> str:
        arrows = " → ".join(map(str, self.net.sizes))
        lines = [
            f"Exercise {self.seed}: {arrows}, activations {', '.join(self.net.activations)}",
            f"loss L = Σ (ŷ − y)², answers to {self.decimals} decimals",
            f"x = {self.x.tolist()},  y = {self.y.tolist()}",
        ]
        for i, p in enumerate(self.params, 1):
            lines.append(f"W[{i}] = {p['W'].tolist()},  b[{i}] = {p['b'].tolist()}")
        return "\n".join(lines)


def exercise(seed: int, *, layers: int | None = None, decimals: int = 4) -> Exercise:
    """The exercise of ``seed``: the same seed always gives the same numbers.

    Args:
      seed: a non-negative integer.
      layers: 2 (``2 → 2 → 1``) or 3 (``2 → 2 → 2 → 1``); ``None``: drawn from the seed.
      decimals: how many decimals the answers are rounded to (1 to 8); the marking forgives
        a difference of one unit in the last of them.

    Returns:
      An :class:`Exercise`. ReLU units are never drawn at their kink (``|a| ≥ 0.1``) and every
      ReLU layer has a unit that is on.

    Raises:
      ValueError: ``seed`` negative, ``layers`` not 2, 3 or ``None``, ``decimals`` outside 1–8.
      TypeError: ``seed``, ``layers`` or ``decimals`` not an integer.

    >>> ex = exercise(3)
    >>> ex.net.sizes[0], ex.net.activations[-1]
    (2, 'identity')
    """
    for name, value in (("seed", seed), ("layers", layers), ("decimals", decimals)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}.")
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0; got {seed}.")
    if layers not in (None, 2, 3):
        raise ValueError(f"layers must be 2, 3 or None; got {layers!r}.")
    if not 1 <= decimals <= 8:
        raise ValueError(f"decimals must be between 1 and 8; got {decimals}.")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 4))  # drawn always: `layers` must not shift the other draws
    n = layers or n
    sizes = (2,) * n + (1,)
    acts = (*(str(rng.choice(HIDDEN)) for _ in range(n - 1)), "identity")
    one_decimal = lambda lo, hi, shape: rng.integers(lo, hi + 1, shape) / 10  # noqa: E731
    while True:  # redraw until no ReLU sits at its kink
        params = [
            {"W": one_decimal(-9, 9, (M, D)), "b": one_decimal(-5, 5, (M,))}
            for D, M in itertools.pairwise(sizes)
        ]
        x, y = one_decimal(-10, 10, (2,)), one_decimal(-10, 10, (1,))
        ex = Exercise(seed, MLP(sizes, acts), params, x, y, decimals)
        ref = solution(ex)
        relu = [i for i, f in enumerate(acts, 1) if f == "relu"]
        if all(np.min(np.abs(ref[f"a[{i}]"])) >= 0.1 and np.max(ref[f"a[{i}]"]) > 0 for i in relu):
            return ex


def keys(net: MLP) -> list[str]:
    """The worksheet's quantities in the order the forward and backward passes compute them:
    ``a[1], z[1], …, a[N], z[N], L, dL/dz[N], delta[N], dL/dW[N], dL/db[N], …, dL/db[1]``."""
    n = net.num_layers
    forward = [f"{q}[{i}]" for i in range(1, n + 1) for q in ("a", "z")]
    backward = [f"{q}[{i}]" for i in range(n, 0, -1) for q in ("dL/dz", "delta", "dL/dW", "dL/db")]
    return [*forward, "L", *backward]


def solution(ex: Exercise) -> dict[str, np.ndarray]:
    """Every quantity of the worksheet, exactly, from :func:`fnn.backprop_trace` (S23)."""
    params = [{k: jnp.asarray(v, jnp.float32) for k, v in p.items()} for p in ex.params]
    t = backprop_trace(
        ex.net, params, jnp.asarray(ex.x, jnp.float32), jnp.asarray(ex.y, jnp.float32)
    )
    fields = {"a": "a", "z": "z", "dL/dz": "dL_dz", "delta": "dL_da", "dL/dW": "dL_dW"}
    fields["dL/db"] = "dL_db"
    ref = {"L": np.float64(t.loss)}
    for i, lt in enumerate(t.layers, 1):
        ref.update({f"{q}[{i}]": np.asarray(getattr(lt, f), np.float64) for q, f in fields.items()})
    return {k: ref[k] for k in keys(ex.net)}


def worksheet(ex: Exercise, *, filled: bool = False) -> dict:
    """The sheet as JSON-ready data: the exercise, and ``answers`` with one ``null`` per
    number (``filled``: the solution, rounded to ``ex.decimals``)."""
    ref = solution(ex)
    answers = {
        k: (np.round(v, ex.decimals) if filled else np.full(np.shape(v), np.nan)).tolist()
        for k, v in ref.items()
    }
    answers = json.loads(json.dumps(answers).replace("NaN", "null"))
    return {
        "seed": ex.seed,
        "layers": ex.net.num_layers,
        "decimals": ex.decimals,
        "exercise": str(ex).splitlines(),
        "answers": answers,
    }


# ---------------------------------------------------------------------------------------
# Marking: one step of the passes, from given earlier values: the right rule and the wrong ones.
# ---------------------------------------------------------------------------------------


def _outer_if(u, v, shape):
    out = np.outer(u, v)
    return out if out.shape == shape else None


def _rules(ex: Exercise, key: str, v: dict) -> dict:
    """``{rule: value}`` for the quantity ``key`` from the earlier values ``v``; the first
    rule is the right one, the others the common mistakes (``None`` where one cannot be
    made, e.g. ``W`` for ``Wᵀ`` when ``W`` is not square)."""
    if key == "L":
        r = v[f"z[{ex.net.num_layers}]"] - ex.y
        return {
            "L = Σ (ŷ − y)²": np.sum(r**2),
            "½ Σ (ŷ − y)², the ½ of another convention": 0.5 * np.sum(r**2),
            "the mean instead of the sum": np.mean(r**2),
        }
    q, i = key[: key.index("[")], int(key[key.index("[") + 1 : -1])
    f = activations.get(ex.net.activations[i - 1])
    fn = lambda a: np.asarray(f.fn(jnp.asarray(a)), np.float64)  # noqa: E731
    df = lambda a: np.asarray(f.derivative(jnp.asarray(a)), np.float64)  # noqa: E731
    step = _forward_rules if q in ("a", "z") else _backward_rules
    rules = step(ex, q, i, v, fn, df)
    right = next(iter(rules.values()))
    rules["the sign flipped"] = -right
    return {_superscripts(name): value for name, value in rules.items()}


def _forward_rules(ex, q, i, v, fn, df):
    W, b = ex.params[i - 1]["W"], ex.params[i - 1]["b"]
    z_prev = ex.x if i == 1 else v[f"z[{i - 1}]"]
    if q == "a":
        return {
            f"a⁽{i}⁾ = W⁽{i}⁾ z⁽{i - 1}⁾ + b⁽{i}⁾": W @ z_prev + b,
            f"the bias b⁽{i}⁾ left out": W @ z_prev,
            f"W⁽{i}⁾ᵀ instead of W⁽{i}⁾": W.T @ z_prev + b if W.shape[0] == W.shape[1] else None,
        }
    a = v[f"a[{i}]"]
    return {
        f"z⁽{i}⁾ = f(a⁽{i}⁾)": fn(a),
        f"the activation f not applied (z⁽{i}⁾ = a⁽{i}⁾)": a,
        f"f′(a⁽{i}⁾) instead of f(a⁽{i}⁾)": df(a),
    }


def _backward_rules(ex, q, i, v, fn, df):
    n, z_prev = ex.net.num_layers, ex.x if i == 1 else v[f"z[{i - 1}]"]
    if q == "dL/dz" and i == n:
        return {
            "∂L/∂ŷ = 2 (ŷ − y)": 2 * (v[f"z[{n}]"] - ex.y),
            "the factor 2 of L2 dropped: ŷ − y instead of 2 (ŷ − y)": v[f"z[{n}]"] - ex.y,
        }
    if q == "dL/dz":
        W_next, delta_next = ex.params[i]["W"], v[f"delta[{i + 1}]"]
        square = W_next.shape[0] == W_next.shape[1]
        return {
            f"∂L/∂z⁽{i}⁾ = W⁽{i + 1}⁾ᵀ δ⁽{i + 1}⁾": W_next.T @ delta_next,
            f"W⁽{i + 1}⁾ instead of W⁽{i + 1}⁾ᵀ": W_next @ delta_next if square else None,
            f"∂L/∂z⁽{i + 1}⁾ instead of δ⁽{i + 1}⁾ (f′ of layer {i + 1} left out)": (
                W_next.T @ v[f"dL/dz[{i + 1}]"]
            ),
        }
    g, delta = v[f"dL/dz[{i}]"], v[f"delta[{i}]"]
    if q == "delta":
        a, z = v[f"a[{i}]"], v[f"z[{i}]"]
        return {
            f"δ⁽{i}⁾ = ∂L/∂z⁽{i}⁾ ⊙ f′(a⁽{i}⁾)": g * df(a),
            f"f′ evaluated at z⁽{i}⁾ instead of at a⁽{i}⁾": g * df(z),
            f"the factor f′(a⁽{i}⁾) left out (δ⁽{i}⁾ = ∂L/∂z⁽{i}⁾)": g,
            f"f(a⁽{i}⁾) instead of f′(a⁽{i}⁾)": g * fn(a),
        }
    if q == "dL/dW":
        shape = ex.params[i - 1]["W"].shape
        return {
            f"∂L/∂W⁽{i}⁾ = δ⁽{i}⁾ z⁽{i - 1}⁾ᵀ": np.outer(delta, z_prev),
            f"z⁽{i}⁾ instead of z⁽{i - 1}⁾": _outer_if(delta, v[f"z[{i}]"], shape),
            f"a⁽{i - 1}⁾ instead of z⁽{i - 1}⁾": (
                _outer_if(delta, v[f"a[{i - 1}]"], shape) if i > 1 else None
            ),
            f"∂L/∂z⁽{i}⁾ instead of δ⁽{i}⁾": np.outer(g, z_prev),
            f"transposed: z⁽{i - 1}⁾ δ⁽{i}⁾ᵀ": _outer_if(z_prev, delta, shape),
        }
    return {f"∂L/∂b⁽{i}⁾ = δ⁽{i}⁾": delta, f"∂L/∂z⁽{i}⁾ instead of δ⁽{i}⁾": g}


def _superscripts(text: str) -> str:
    """``z⁽12⁾`` → ``z⁽¹²⁾``: the layer index as the lecture writes it."""
    return re.sub(r"⁽(\d+)⁾", lambda m: "⁽" + m.group(1).translate(_SUP) + "⁾", text)


class Mark(NamedTuple):
    """One number of the sheet: its quantity and (0-based) index, the student's value, the
    right value, the status (right, right given your earlier value, wrong, blank)."""

    key: str
    """The quantity, as :func:`keys` names it (``"delta[2]"``)."""
    index: tuple
    """The entry within it, 0-based (``()`` for the loss)."""
    given: float
    """The student's number (NaN: blank)."""
    right: float
    """The right number, from :func:`solution`."""
    status: str
    """One of ``RIGHT``, ``FOLLOWS``, ``WRONG``, ``BLANK``."""

    def label(self) -> str:
        """The number's name on the sheet, 1-based: ``"dL/dW[1][2,1]"``."""
        entry = ",".join(str(k + 1) for k in self.index)
        return self.key + (f"[{entry}]" if entry else "")


class Marking(NamedTuple):
    """The marked sheet: every :class:`Mark` in order and, for the first wrong number, the
    mistakes that explain it (``[]``: none of the common ones; ``None``: nothing wrong)."""

    exercise: Exercise
    """The exercise that was marked."""
    marks: list
    """One :class:`Mark` per number, in the order the passes compute them."""
    first_wrong: Mark | None
    """The first number marked wrong, or ``None``."""
    likely: list | None
    """The common mistakes that give the first wrong number (``None``: nothing wrong)."""

    @property
    def all_right(self) -> bool:
        """Every number filled in and right."""
        return all(m.status == RIGHT for m in self.marks)

    def __str__(self) -> str:
        d = self.exercise.decimals
        fmt = lambda v: "" if np.isnan(v) else f"{np.round(v, d) + 0.0:.{d}f}"  # noqa: E731
        lines = [str(self.exercise), ""]
        for m in self.marks:
            tail = "" if m.status == RIGHT else f"  right: {fmt(m.right)}"
            tail += "  (right given your earlier value)" if m.status == FOLLOWS else ""
            lines.append(f"{SYMBOL[m.status]:2} {m.label():14} {fmt(m.given):>10}{tail}")
        counts = {s: sum(m.status == s for m in self.marks) for s in SYMBOL}
        lines += [
            "",
            f"{counts[RIGHT]} of {len(self.marks)} right, {counts[WRONG]} wrong, "
            f"{counts[FOLLOWS]} right given an earlier value, {counts[BLANK]} blank.",
        ]
        if self.first_wrong is not None:
            m = self.first_wrong
            lines.append(f"First wrong number: {m.label()} = {fmt(m.given)}, right {fmt(m.right)}.")
            if self.likely:
                lines += [f"  Likely mistake: {rule}." for rule in self.likely]
            else:
                lines.append("  None of the common mistakes gives this number: redo the step.")
        return "\n".join(lines)


def check(exercise_or_seed, answers, *, layers: int | None = None) -> Marking:
    """Mark a filled-in worksheet, number by number (S14, S17, S23).

    Args:
      exercise_or_seed: an :class:`Exercise`, or the seed of one (``None``: the seed the
        sheet states).
      answers: a dict ``{quantity: numbers}`` (keys as :func:`keys`; ``None`` or ``""`` for a
        blank), a whole :func:`worksheet`, or the path of a ``.json`` or ``.csv`` sheet.
      layers: with a seed, the layers of its exercise (as :func:`exercise`).

    Returns:
      A :class:`Marking`; ``print`` it for the marked sheet.

    Raises:
      ValueError: an unknown quantity (with the valid ones), a quantity with the wrong number
        of entries, a value that is not a number, no seed to make the exercise from.
    """
    sheet = read_answers(answers)
    ex = exercise_or_seed
    if not isinstance(ex, Exercise):
        seed = sheet.get("seed") if ex is None else ex
        if seed is None:
            raise ValueError("check needs an Exercise or a seed; the sheet states none.")
        ex = exercise(seed, layers=layers or sheet.get("layers"), decimals=sheet.get("decimals", 4))
    ref = solution(ex)
    unknown = sorted(set(sheet["answers"]) - set(ref))
    if unknown:
        raise ValueError(f"unknown quantities {unknown}; a sheet holds {list(ref)}.")
    given = {q: answer_array(q, sheet["answers"].get(q), np.shape(r)) for q, r in ref.items()}
    tol = lambda u, w: np.abs(u - w) <= 1.01 * 10.0**-ex.decimals + 1e-3 * np.abs(w)  # noqa: E731
    own, marks, first, likely, slipped = dict(ref), [], None, None, False
    for q, r in ref.items():
        rules = _rules(ex, q, own)  # this step, from the student's own earlier values
        follow = np.asarray(next(iter(rules.values())), np.float64)
        g = given[q]
        for index in np.ndindex(np.shape(r)):
            gi, ri, fi = g[index], r[index], follow[index]
            if np.isnan(gi):
                status = BLANK
            elif tol(gi, ri) or (tol(gi, fi) and not slipped):
                status = RIGHT
            elif tol(gi, fi):
                status = FOLLOWS
            else:
                status = WRONG
            marks.append(Mark(q, index, float(gi), float(ri), status))
            if status == WRONG and first is None:
                first, likely = marks[-1], _explain(rules, g, index, tol)
        slipped = slipped or any(m.key == q and m.status in (WRONG, FOLLOWS) for m in marks)
        own[q] = np.where(np.isnan(g), r, g)
    return Marking(ex, marks, first, likely)


def _explain(rules: dict, g: np.ndarray, index: tuple, tol) -> list[str]:
    """The wrong rules that give the student's numbers: all that they filled in, else the
    first wrong one alone."""
    right, *wrong = rules.items()
    filled = ~np.isnan(g)
    cands = [(name, np.asarray(v, np.float64)) for name, v in wrong if v is not None]
    cands = [(n, v) for n, v in cands if v.shape == g.shape and not np.allclose(v, right[1])]
    whole = [n for n, v in cands if np.all(tol(g[filled], v[filled]))]
    return whole or [n for n, v in cands if tol(g[index], v[index])]


# ---------------------------------------------------------------------------------------
# python -m fnn.homework new --seed 3 > sheet.json;  python -m fnn.homework check sheet.json
# ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """The command line: ``new`` prints a blank sheet (JSON or CSV), ``check`` marks one;
    the exit code is 0 when every number is right."""
    parser = argparse.ArgumentParser(
        prog="python -m fnn.homework", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="print a blank worksheet")
    new.add_argument("--seed", type=int, required=True)
    new.add_argument("--layers", type=int, choices=(2, 3))
    new.add_argument("--decimals", type=int, default=4)
    new.add_argument("--format", choices=("json", "csv"), default="json")
    new.add_argument("--solution", action="store_true", help="the sheet filled in (teachers)")
    chk = sub.add_parser("check", help="mark a filled-in worksheet")
    chk.add_argument("sheet", type=Path, help="a .json or .csv worksheet")
    chk.add_argument("--seed", type=int, help="when the sheet states none")
    args = parser.parse_args(argv)
    if args.command == "new":
        ex = exercise(args.seed, layers=args.layers, decimals=args.decimals)
        sheet = worksheet(ex, filled=args.solution)
        text = to_csv(sheet) if args.format == "csv" else to_json(sheet)
        sys.stdout.write(text)
        return 0
    marking = check(args.seed, args.sheet)
    print(marking)
    return 0 if marking.all_right else 1


if __name__ == "__main__":
    sys.exit(main())
