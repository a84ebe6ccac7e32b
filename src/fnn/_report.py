"""The text of a :class:`fnn.oracle.GradCheck`: its verdict, tolerance and worst entry, the
notes that explain it, and one line per leaf (S11, S19)."""

from __future__ import annotations

import math


def report_lines(r, *, floor: float, resolved: float) -> list[str]:
    """The lines of ``str(r)`` for a :class:`fnn.oracle.GradCheck` ``r``; ``floor`` and
    ``resolved`` are the oracle's ``FLOOR`` and ``RESOLVED``, named in its notes."""
    return _header(r) + _notes(r, floor, resolved) + _table(r)


def _header(r) -> list[str]:
    judged = sum(leaf.size for leaf in r.leaves) - r.num_kinks
    lines = [
        f"{r.kind} check {r.verdict} ({r.dtype}) against {r.oracle_dtype} central differences:",
        f"  {r.num_failed} of {judged} entries failed, {r.num_unresolved} unresolved; "
        f"{r.num_evaluations} evaluations",
        f"  tolerance per entry: |hand − numerical| ≤ {r.threshold:.0e} (|hand| + |numerical|)",
        f"    + {r.atol:.2e} (rounding) + {r.resolution:.2e} (the oracle's resolution)",
    ]
    if r.worst_path or r.worst_index:
        diff = abs(r.worst_hand - r.worst_numerical)
        error = (
            f"relative error {r.max_error:.2e}"
            if r.max_error or diff > r.resolution
            else "both below the oracle's resolution"
        )
        lines += [
            f"  worst entry {r.worst_path}{list(r.worst_index)}: "
            f"hand {r.worst_hand:.10g}, numerical {r.worst_numerical:.10g}",
            f"    {error}, |difference| {diff:.2e} = {r.worst_ratio:.2g} × its tolerance",
        ]
    return lines


def _notes(r, floor: float, resolved: float) -> list[str]:
    lines = []
    if r.nonfinite:
        lines.append(f"  not finite: {r.nonfinite}")
        lines.append("    FAIL: a check never passes a NaN or inf")
    if r.num_unresolved:
        u = "u at their best step" if r.second_look else f"{r.resolution:.1e}"
        lines += [
            f"  unresolved: {r.num_unresolved} entries with |hand| + |numerical| ≤ "
            f"{resolved:g} × {u},",
            f"    the oracle's resolution, which exceeds {floor:.0e} × the gradient's largest "
            "entry: not passed",
        ]
        if r.second_look:  # even the widest step could not see them
            lines.append(
                "    (f moves too little there for central differences in this dtype, even "
                "at wider steps\n    — for a loss, a near-perfect prediction or a saturated "
                "probability: check at another point)"
            )
    if r.second_look:
        lines += [
            "  second look: the quotients at 2h, 4h, … as well; per entry, where D(H) and",
            "    D(2H) agree, judged against (4 D(H) − D(2H)) / 3 with resolution",
            "    1.5 u h/H + |D(H) − D(2H)| / 3 (one-sided where one side crosses a kink)",
        ]
    if r.num_kinks:
        lines.append(f"  kink crossed at {r.num_kinks} entries: left out of the verdict")
    if r.kinks_crossed:
        lines += [
            f"  θ ± h v crosses a kink at {r.kinks_crossed} pre-activations or residuals:",
            "    ∇L jumps there, the quotient is no derivative (FAIL; a smaller eps or another v)",
        ]
    if not math.isnan(r.min_detectable):
        lines.append(
            f"  the smallest relative error of the whole gradient it detects: "
            f"{r.min_detectable:.1e}"
        )
    return lines


def _table(r) -> list[str]:
    lines = [f"  {'leaf':<22} {'worst rel. error':>16} {'median':>9}"]
    for leaf in r.leaves:
        counts = ((leaf.failed, "failed"), (leaf.unresolved, "unresolved"),
                  (leaf.kinks, "kink crossed"))  # fmt: skip
        notes = ", ".join(f"{n} {what}" for n, what in counts if n)
        lines.append(
            f"  {leaf.path:<22} {leaf.max_error:16.2e} {leaf.median_error:9.2e}"
            + (f"  {notes}" if notes else "")
        )
    return lines
