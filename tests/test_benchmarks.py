"""The benchmark suite runs end to end (S22). It is never a timed test: only the structure
of its table and JSON is checked here, not the figures (those depend on the machine)."""

import json
import math
from pathlib import Path

from conftest import load_script

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "run_all.py"


def test_run_all_quick_writes_every_row(tmp_path, capsys):
    run_all = load_script(SCRIPT)
    result = run_all.main(["--quick", "--out", str(tmp_path)])

    saved = json.loads((tmp_path / "benchmarks.json").read_text())
    assert saved["machine"]["platform"] == result["machine"]["platform"]
    names = [r["name"] for r in saved["rows"]]
    for prefix in (
        "reverse ÷ jax.value_and_grad",
        "gradient ÷ forward loss",
        "gradient FLOP/s ÷ 1024³ dot",
        "jacobian forward ÷ jax.jacfwd",
        "jacobian reverse ÷ jax.jacrev",
        "explicit ÷ reverse",
        "small step ÷ trivial jitted call",
        "small step: fnn ÷ PyTorch eager step",
        "compile gradient: depth 8 ÷ 2",
    ):
        assert any(n.startswith(prefix) for n in names), prefix
    for r in saved["rows"]:
        if r["value"] is None:  # only PyTorch may be missing
            assert "PyTorch" in r["name"] and r["detail"]
        else:
            assert math.isfinite(r["value"]) and r["value"] > 0, r
        assert r["ok"] in (True, False, None)
    flop = next(r for r in saved["rows"] if r["name"].startswith("gradient FLOP/s"))
    assert flop["counted_flops"] == 6 * 16 * (64 * 32 + 32 * 32 + 32 * 4)
    compile_rows = [r for r in saved["rows"] if r["name"].startswith("compile")]
    assert len(compile_rows) == len(run_all.COMPILE_VARIANTS)
    assert all(set(r["ms"]) == {"2", "8"} for r in compile_rows)
    out = capsys.readouterr().out
    assert "benchmark" in out and "goal" in out and "Wrote" in out


def test_every_planted_bug_still_applies():
    """Each mutation of benchmarks/planted_bugs.py must find its line exactly once in its
    module, and name test modules that exist: a refactor that moves the line would
    otherwise drop the mutant from the count silently ("not applied")."""
    root = Path(__file__).parents[1]
    planted = load_script(root / "benchmarks" / "planted_bugs.py")
    stale = []
    for m in planted.MUTATIONS:
        source = root / "src" / "fnn" / m.module
        count = source.read_text().count(m.old) if source.exists() else 0
        missing = [t for t in m.tests if not (root / "tests" / t).exists()]
        if count != 1 or missing or m.old == m.new:
            stale.append((m.module, m.bug, count, missing))
    assert not stale, stale
