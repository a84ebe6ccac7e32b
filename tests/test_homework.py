"""Check my homework (S14, S17, S23): exercises from a seed, marking, the common mistakes.

A student is simulated by a hand-written backward pass in NumPy (not fnn's rules) that rounds
every number to the sheet's decimals and can make one planted mistake; the marking must name
that mistake, mark the numbers after it that follow correctly as "right given your earlier
value", and mark a correct sheet all right.
"""

import json

import numpy as np
import pytest

from fnn import homework
from fnn.homework import FOLLOWS, RIGHT, WRONG

ACT = {
    "sigmoid": (lambda a: 1 / (1 + np.exp(-a)), lambda a: np.exp(-a) / (1 + np.exp(-a)) ** 2),
    "tanh": (np.tanh, lambda a: 1 - np.tanh(a) ** 2),
    "relu": (lambda a: np.maximum(a, 0), lambda a: (a > 0).astype(float)),
    "identity": (lambda a: a, np.ones_like),
}


def student(ex, mistake=None, at=None):
    """A worksheet filled in by hand, every number rounded as it is written down; ``mistake``
    (one of the common ones) is made at the quantity ``at``."""
    r = lambda v: np.round(np.asarray(v, float), ex.decimals)  # noqa: E731
    n, sheet = ex.net.num_layers, {}
    z = [ex.x]
    for i, (p, act) in enumerate(zip(ex.params, ex.net.activations), 1):
        f = ACT[act][0]
        a = p["W"] @ z[-1] + p["b"]
        sheet[f"a[{i}]"] = r(a)
        sheet[f"z[{i}]"] = r(f(sheet[f"a[{i}]"]))
        z.append(sheet[f"z[{i}]"])
    sheet["L"] = r(np.sum((z[-1] - ex.y) ** 2))
    for i in range(n, 0, -1):
        key = f"dL/dz[{i}]"
        if i == n:
            g = 2 * (z[-1] - ex.y)
            if at == key and mistake == "factor 2":
                g = z[-1] - ex.y
            if at == key and mistake == "sign":
                g = 2 * (ex.y - z[-1])
        else:
            W_next = ex.params[i]["W"]
            g = (W_next if at == key and mistake == "W not W^T" else W_next.T) @ sheet[
                f"delta[{i + 1}]"
            ]
        sheet[key] = r(g)
        f, df = ACT[ex.net.activations[i - 1]]
        a, zi = sheet[f"a[{i}]"], sheet[f"z[{i}]"]
        d = sheet[key] * df(a)
        if at == f"delta[{i}]" and mistake == "f' at z":
            d = sheet[key] * df(zi)
        if at == f"delta[{i}]" and mistake == "no f'":
            d = sheet[key]
        sheet[f"delta[{i}]"] = r(d)
        z_used = zi if at == f"dL/dW[{i}]" and mistake == "z(i)" else z[i - 1]
        sheet[f"dL/dW[{i}]"] = r(np.outer(sheet[f"delta[{i}]"], z_used))
        sheet[f"dL/db[{i}]"] = sheet[f"delta[{i}]"]
    return {k: v.tolist() for k, v in sheet.items()}


def smooth_exercise(layers):
    """The first seed whose hidden units are all sigmoid or tanh (f′(z) ≠ f′(a) there)."""
    for seed in range(100):
        ex = homework.exercise(seed, layers=layers)
        if "relu" not in ex.net.activations:
            return ex
    raise AssertionError("no smooth exercise in 100 seeds")


def test_same_seed_same_exercise_and_sizes():
    a, b = homework.exercise(7), homework.exercise(7)
    assert str(a) == str(b)
    assert homework.exercise(7, layers=2).net.sizes == (2, 2, 1)
    assert homework.exercise(7, layers=3).net.sizes == (2, 2, 2, 1)
    for p in homework.exercise(11).params:  # one decimal: numbers a student computes with
        np.testing.assert_array_equal(np.round(p["W"], 1), p["W"])


def test_keys_in_the_order_computed():
    ex = homework.exercise(0, layers=2)
    assert homework.keys(ex.net) == [
        "a[1]", "z[1]", "a[2]", "z[2]", "L",
        "dL/dz[2]", "delta[2]", "dL/dW[2]", "dL/db[2]",
        "dL/dz[1]", "delta[1]", "dL/dW[1]", "dL/db[1]",
    ]  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_correct_sheet_rounded_at_every_step_is_all_right(seed):
    ex = homework.exercise(seed)
    marking = homework.check(ex, student(ex))
    assert marking.all_right, str(marking)
    assert marking.first_wrong is None


def test_reference_is_fnn_trace_and_matches_the_hand_pass():
    ex = smooth_exercise(3)
    ref = homework.solution(ex)
    hand = student(ex)
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(hand[k]), v, atol=2e-3, err_msg=k)


PLANTED = [
    ("f' at z", "delta[2]", "f′ evaluated at z⁽²⁾ instead of at a⁽²⁾"),
    ("no f'", "delta[1]", "the factor f′(a⁽¹⁾) left out"),
    ("W not W^T", "dL/dz[1]", "W⁽²⁾ instead of W⁽²⁾ᵀ"),
    ("factor 2", "dL/dz[3]", "the factor 2 of L2 dropped"),
    ("sign", "dL/dz[3]", "the sign flipped"),
    ("z(i)", "dL/dW[2]", "z⁽²⁾ instead of z⁽¹⁾"),
]


@pytest.mark.parametrize(("mistake", "at", "named"), PLANTED)
def test_each_common_mistake_is_named(mistake, at, named):
    ex = smooth_exercise(3)
    marking = homework.check(ex, student(ex, mistake, at))
    assert marking.first_wrong is not None and marking.first_wrong.key == at, str(marking)
    assert any(named in rule for rule in marking.likely), (marking.likely, str(marking))
    assert f"Likely mistake: {marking.likely[0]}" in str(marking)
    keys = homework.keys(ex.net)
    before = [m for m in marking.marks if keys.index(m.key) < keys.index(at)]
    assert all(m.status == RIGHT for m in before)
    # After the planted quantity the student worked correctly from their own numbers.
    after = [m for m in marking.marks if keys.index(m.key) > keys.index(at)]
    assert all(m.status in (RIGHT, FOLLOWS) for m in after), str(marking)
    assert any(m.status == FOLLOWS for m in after) or at == "dL/dW[2]"


def test_right_given_your_earlier_value_and_wrong_after():
    ex = smooth_exercise(2)
    sheet = student(ex, "factor 2", "dL/dz[2]")
    marking = homework.check(ex, sheet)
    status = {m.label(): m.status for m in marking.marks}
    assert status["dL/dz[2][1]"] == WRONG
    assert status["delta[2][1]"] == FOLLOWS  # identity output: δ = ∂L/∂z, from their value
    assert "right given your earlier value" in str(marking)
    sheet["dL/db[1]"] = [9.0, 9.0]  # wrong even given their numbers
    marking = homework.check(ex, sheet)
    assert {m.label(): m.status for m in marking.marks}["dL/db[1][1]"] == WRONG
    assert marking.first_wrong.key == "dL/dz[2]"  # the first one is still the diagnosis


def test_unexplained_mistake_and_blanks():
    ex = homework.exercise(5)
    sheet = student(ex)
    sheet["a[1]"] = [123.0, sheet["a[1]"][1]]
    del sheet["L"]
    marking = homework.check(ex, sheet)
    assert marking.first_wrong.label() == "a[1][1]"
    assert marking.likely == []
    assert "None of the common mistakes" in str(marking)
    assert [m.status for m in marking.marks if m.key == "L"] == ["blank"]
    blank = homework.check(ex, homework.worksheet(ex))
    assert {m.status for m in blank.marks} == {"blank"}


def test_json_and_csv_round_trip(tmp_path):
    ex = homework.exercise(4)
    sheet = homework.worksheet(ex, filled=True)
    (tmp_path / "s.json").write_text(homework.to_json(sheet))
    (tmp_path / "s.csv").write_text(homework.to_csv(sheet))
    assert json.loads(homework.to_json(sheet)) == sheet
    for name in ("s.json", "s.csv"):
        read = homework.read_answers(tmp_path / name)
        assert (read["seed"], read["layers"], read["decimals"]) == (4, ex.net.num_layers, 4)
        marking = homework.check(None, tmp_path / name)  # the seed from the sheet
        assert marking.all_right, (name, str(marking))
    blank = homework.to_csv(homework.worksheet(ex))
    (tmp_path / "b.csv").write_text(blank.replace(",\n", ",0,5\n", 1).replace("0,5", '"0,5"'))
    marks = homework.check(ex, tmp_path / "b.csv").marks
    assert marks[0].given == 0.5  # a decimal comma, as German sheets write it


def test_bad_sheets_say_what_is_wrong(tmp_path):
    ex = homework.exercise(1, layers=2)
    with pytest.raises(ValueError, match=r"unknown quantities \['delta\[3\]'\]"):
        homework.check(ex, {"delta[3]": [1.0]})
    with pytest.raises(ValueError, match=r"a\[1\] must hold 2 numbers .* got 3"):
        homework.check(ex, {"a[1]": [1, 2, 3]})
    with pytest.raises(ValueError, match="must be a number; got 'abc'"):
        homework.check(ex, {"L": "abc"})
    with pytest.raises(ValueError, match=r"\.json or \.csv"):
        homework.check(ex, tmp_path / "sheet.txt")
    with pytest.raises(ValueError, match="seed"):
        homework.check(None, {"L": 1.0})
    with pytest.raises(ValueError, match="layers must be 2, 3 or None; got 4"):
        homework.exercise(1, layers=4)
    with pytest.raises(TypeError, match="seed must be an integer"):
        homework.exercise(1.5)


def test_command_line_new_and_check(tmp_path, capsys):
    assert homework.main(["new", "--seed", "3"]) == 0
    sheet = json.loads(capsys.readouterr().out)
    assert sheet["seed"] == 3 and set(sheet["answers"]) == set(
        homework.keys(homework.exercise(3).net)
    )
    ex = homework.exercise(3)
    sheet["answers"] = student(ex, "sign", f"dL/dz[{ex.net.num_layers}]")
    path = tmp_path / "sheet.json"
    path.write_text(json.dumps(sheet))
    assert homework.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "✗" in out and "Likely mistake: the sign flipped." in out
    assert max(len(line) for line in out.splitlines()) <= 88  # fits a docs column
    assert homework.main(["new", "--seed", "3", "--format", "csv", "--solution"]) == 0
    path = tmp_path / "sheet.csv"
    path.write_text(capsys.readouterr().out)
    assert homework.main(["check", str(path)]) == 0
