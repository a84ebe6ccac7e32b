r"""Reading and writing a homework worksheet (:mod:`fnn.homework`): a dict, JSON or CSV.

A sheet is ``{"seed": …, "layers": …, "decimals": …, "exercise": [lines], "answers": {…}}``
with one entry per quantity (``"a[1]"``, ``"delta[2]"``, ``"dL/dW[1]"``, …) holding its
numbers as a list (a vector) or a list of rows (a matrix), ``null`` for a blank. As CSV, one
number a row: ``quantity,row,col,value`` (1-based; ``col`` empty for a vector, both empty for
the loss ``L`` and for the ``seed``, ``layers`` and ``decimals`` rows). A value may be
written with a decimal comma (``0,25``), as German sheets write it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

__all__ = ["answer_array", "read_answers", "to_csv", "to_json"]


def _number(value, where: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return np.nan
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", "."))  # 0,25 as German sheets write it
        except ValueError:
            raise ValueError(f"{where} must be a number; got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{where} must be a number; got {type(value).__name__} {value!r}.")
    return float(value)


def _from_csv(text: str) -> dict:
    """Rows ``quantity,row,col,value`` (1-based; ``col`` empty for vectors, both empty for
    ``L`` and for the ``seed``, ``layers`` and ``decimals`` rows)."""
    sheet, answers = {}, {}
    for r in csv.DictReader(io.StringIO(text)):
        q, value = r["quantity"].strip(), r.get("value")
        if q in ("seed", "layers", "decimals"):
            sheet[q] = int(value)
            continue
        index = tuple(int(r[c]) - 1 for c in ("row", "col") if (r.get(c) or "").strip())
        answers.setdefault(q, []).append((index, value))
    sheet["answers"] = answers
    return sheet


def to_csv(sheet: dict) -> str:
    """A :func:`worksheet` as CSV: rows ``quantity,row,col,value`` (read back by
    :func:`read_answers`)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("quantity", "row", "col", "value"))
    for meta in ("seed", "layers", "decimals"):
        w.writerow((meta, "", "", sheet[meta]))
    for q, values in sheet["answers"].items():
        arr = np.array(values, dtype=float)
        for index in np.ndindex(arr.shape):
            cells = [str(k + 1) for k in index] + [""] * (2 - len(index))
            value = "" if np.isnan(arr[index]) else repr(float(arr[index]))
            w.writerow((q, *cells, value))
    return out.getvalue()


def to_json(sheet: dict) -> str:
    """A :func:`worksheet` as JSON, one quantity a line (read back by :func:`read_answers`)."""
    head = {k: v for k, v in sheet.items() if k != "answers"}
    lines = json.dumps(head, indent=1, ensure_ascii=False)[:-2].splitlines()
    answers = [f"  {json.dumps(q)}: {json.dumps(v)}" for q, v in sheet["answers"].items()]
    return "\n".join(lines) + ',\n "answers": {\n' + ",\n".join(answers) + "\n }\n}\n"


def read_answers(source) -> dict:
    """A sheet from a dict, or a ``.json`` or ``.csv`` file: ``{"answers": …}`` plus whatever
    of ``seed``, ``layers``, ``decimals`` it states. A plain ``{quantity: numbers}`` dict is
    the answers alone.

    Raises:
      ValueError: a file that is neither ``.json`` nor ``.csv``.
      TypeError: ``source`` neither a dict nor a path.
    """
    if isinstance(source, dict):
        return dict(source) if "answers" in source else {"answers": dict(source)}
    if not isinstance(source, (str, Path)):
        raise TypeError(f"answers must be a dict or a file path; got {type(source).__name__}.")
    path = Path(source)
    if path.suffix.lower() == ".json":
        return read_answers(json.loads(path.read_text(encoding="utf-8")))
    if path.suffix.lower() == ".csv":
        return _from_csv(path.read_text(encoding="utf-8"))
    raise ValueError(f"answers file must end in .json or .csv; got {path.name!r}.")


def answer_array(q: str, given, shape: tuple) -> np.ndarray:
    """The student's numbers for quantity ``q`` (as :func:`read_answers` holds them) as an
    array of ``shape``, NaN where blank.

    Raises:
      ValueError: the wrong number of entries, an entry outside ``shape``, a value that is
        not a number.
      TypeError: a value that is neither a number nor a string."""
    arr = np.full(shape, np.nan)
    if given is None:
        return arr
    if isinstance(given, list) and given and isinstance(given[0], tuple):  # from CSV
        for index, value in given:
            if len(index) != len(shape) or any(not 0 <= k < s for k, s in zip(index, shape)):
                raise ValueError(f"{q}: entry {tuple(k + 1 for k in index)} is not in {shape}.")
            arr[index] = _number(value, f"{q}{list(k + 1 for k in index)}")
        return arr
    flat = np.ravel(np.array(given, dtype=object))
    if flat.size != arr.size:
        raise ValueError(f"{q} must hold {arr.size} numbers (shape {shape}); got {flat.size}.")
    return np.array([_number(g, q) for g in flat], dtype=float).reshape(shape)
