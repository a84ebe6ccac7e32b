"""The main script, scripts/compare_modes.py, end to end with --quick (S18, S19)."""

import json
import math
from pathlib import Path

import pytest

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_modes.py"


@pytest.fixture(scope="module")
def compare_modes():
    return load_script(SCRIPT)


@pytest.mark.slow
def test_quick_run_writes_table_json_and_figure(compare_modes, tmp_path, capsys):
    assert compare_modes.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Verdict:" in printed and "10→32→100" in printed

    result = json.loads((tmp_path / "compare_modes.json").read_text())
    assert (tmp_path / "compare_modes.png").stat().st_size > 10_000
    assert set(result) >= {"config", "machine", "sweeps", "crossover", "headline", "verdict"}
    assert result["all_checks_passed"] is True
    assert result["config"]["dtype"] == "float32" and result["config"]["quick"] is True
    for sweep, varied in (("output", "d_out"), ("input", "d_in")):
        rows = result["sweeps"][sweep]
        assert [r[varied] for r in rows] == [1, 10, 100]
        for r in rows:
            assert set(r["time_s"]) >= {"fwd", "rev", "explicit", "jacfwd", "jacrev"}
            assert all(t > 0 for t in r["time_s"].values())
            assert all(r["ok"].values())
            assert r["max_abs_error"]["fwd"] < 1e-4 and r["max_abs_error"]["rev"] < 1e-4
        # The cost model's prediction: equal multiply-adds where M_out = D_in = 10.
        assert result["crossover"][sweep]["predicted"] == pytest.approx(10)
    wide_in = result["sweeps"]["input"][-1]
    assert wide_in["macs"]["forward"] > wide_in["macs"]["reverse"]
    assert result["headline"]["wide_input_network"] == "100→32→10"
    assert len(result["verdict"]) == 6


def test_float64_run_checks_against_the_tighter_tolerance(compare_modes, tmp_path):
    argv = ["--dtype", "float64", "--sizes", "2,101", "--hidden", "6", "--fixed", "3"]
    assert compare_modes.main([*argv, "--reps", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare_modes.json").read_text())
    assert result["all_checks_passed"] is True
    errors = [
        e
        for r in result["sweeps"]["output"]
        for k, e in r["max_abs_error"].items()
        if k != "central"
    ]
    assert max(errors) < 1e-12
    # Central differences run on the small input widths only.
    for r in result["sweeps"]["input"]:
        assert ("central" in r["time_s"]) == (r["d_in"] <= compare_modes.CENTRAL_MAX_WIDTH)


def test_ratios_are_medians_of_paired_samples(compare_modes):
    # The median of the per-repetition ratios (1, 4, 1), not the ratio of the medians (4 / 1).
    samples = {"a": [1.0, 4.0, 9.0], "b": [1.0, 1.0, 9.0]}
    assert compare_modes.ratio(samples, "a", "b") == 1.0


def test_measured_crossover_interpolates_on_log_axes(compare_modes):
    def row(width, fwd, rev):
        return {"d_out": width, "samples_s": {"fwd": [fwd, 9 * fwd], "rev": [rev, 9 * rev]}}

    # t_fwd / t_rev goes from 1/2 at width 1 to 2 at width 100: crosses 1 at width 10.
    rows = [row(1, 1.0, 2.0), row(100, 2.0, 1.0)]
    assert compare_modes.measured_crossover(rows, "d_out") == pytest.approx(10)
    assert compare_modes.measured_crossover(rows[:1], "d_out") is None
    assert math.isfinite(compare_modes.measured_crossover([row(3, 1.0, 1.0), *rows], "d_out"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dtype", "float16"], "invalid choice: 'float16'"),
        (["--reps", "0"], "expected a positive integer, got '0'"),
        (["--sizes", "1,x"], "expected comma-separated integers, got '1,x'"),
        (["--sizes", "0,4"], "widths must be positive integers, got '0,4'"),
        (["--hidden", ""], "expected comma-separated integers"),
    ],
)
def test_bad_flags_are_argparse_errors(compare_modes, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_modes.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_verdict_tells_a_missed_target_from_the_runs_noise(compare_modes):
    samples = {"a": [1.0, 1.2, 0.9, 1.1], "b": [1.0, 1.0, 1.0, 1.0]}
    assert compare_modes.spread(samples, "a", "b") == pytest.approx((0.975, 1.125))
    noise = compare_modes.target("≤ 1.05×", 1.08, (0.98, 1.12), 1.05, at_most=True)
    assert "within this run's noise" in noise and "0.98–1.12×" in noise
    assert "missed" in compare_modes.target("≤ 1.05×", 1.3, (1.2, 1.4), 1.05, at_most=True)
    assert compare_modes.target("≥ 10×", 12.0, (9.0, 13.0), 10, at_most=False).endswith("met)")
    assert compare_modes.target("≥ 10×", 8.0, (7.0, 9.0), 10, at_most=False, show=False) == ""
