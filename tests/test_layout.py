"""The shape of the code (docs/conventions.md, "The shape of the code"): every module of
fnn fits in 450 lines, every function on a page (60 lines of code, its docstring, comments
and blank lines aside), and no private name crosses a module — a private *module*
(``fnn._checks``) is the package's own, a private *name* (``_cache_step``) belongs to its
module alone.
"""

import ast
from pathlib import Path

import pytest

import fnn

SOURCE = Path(fnn.__file__).parent
MODULES = sorted(SOURCE.glob("*.py"))
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of ``node`` that hold code: not blank, not a comment, not its docstring."""
    span = set(range(node.lineno, node.end_lineno + 1))
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        span -= set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i in span if lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def long_functions(source: str) -> list[tuple[str, int]]:
    lines = source.splitlines()
    return [
        (node.name, code_lines(node, lines))
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and code_lines(node, lines) > MAX_FUNCTION_LINES
    ]


def crossing_private_names(source: str) -> list[str]:
    """``from fnn.x import _y`` and ``x._y`` for a module ``x`` imported from fnn (``from fnn
    import _checks`` imports a module of the package: allowed)."""
    tree = ast.parse(source)
    modules = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "fnn"
        for alias in node.names
    }
    found = [
        f"from {node.module} import {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fnn.")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    found += [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in modules
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_module_fits_and_every_function_fits_on_a_page(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES}"
    assert long_functions(source) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_name_crosses_a_module(path):
    assert crossing_private_names(path.read_text()) == []


def test_the_layout_checks_catch_what_they_are_for():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    found = long_functions(f'def f():\n    """Doc."""\n{body}\n')
    assert found == [("f", MAX_FUNCTION_LINES + 2)]  # its def line counts, its docstring not
    short = "\n".join(f"    # {i}\n" for i in range(80)) + "    return 1\n"
    assert long_functions(f"def g():\n{short}") == []
    leaks = "from fnn import backprop\nfrom fnn.network import _forward\nbackprop._cache_step(1)\n"
    assert crossing_private_names(leaks) == ["from fnn.network import _forward",
                                             "backprop._cache_step"]  # fmt: skip
    assert crossing_private_names("from fnn import _checks\n_checks.check_net(1)\n") == []
