"""Griffe extension: fnn's reST-flavoured Google docstrings, turned into mkdocstrings Markdown.

fnn's docstrings follow optax (STYLE.md): Google sections, ``.. math::`` blocks, ``::``
literal blocks, ``>>>`` examples and Sphinx roles (``:func:`name```). mkdocstrings renders
docstrings as Markdown, where those would show up raw. This extension rewrites each
docstring once the package is loaded (``on_object``: the whole tree exists, so relative
names resolve):

* ``.. math::  formula`` (and its indented continuation lines) -> a ``$$ … $$`` block
  (pymdownx.arithmatex, typeset by MathJax), ``:math:`x``` -> ``$x$``;
* ``:func:`name```, ``:class:``, ``:mod:``, ``:data:``, ``:attr:``, ``:meth:`` -> an
  autorefs cross-reference ``[`name`][full.path]``, the name resolved in the object's scope
  (an unresolvable name is logged as a warning, which fails the strict build); a private
  helper (``:func:`_per_example_pass```, on no page) -> plain code;
* ``text::`` + an indented block -> ``text:`` + a fenced ``text`` block;
* a ``Raises:`` section of prose (``As :func:`hvp`; …``) -> one paragraph ``Raises: As …``;
* a run of ``>>>``/``...`` lines and their output -> a fenced ``pycon`` block;
* bullet-list continuation lines indented by 2 (reST) -> by 4 (Python-Markdown); a blank
  line before the next bullet when an item holds a formula or a literal block;
* the first sentence on the first line: mkdocstrings' lists of a module's functions and
  classes show an entry's first line only, so a first sentence wrapped over two lines would
  be cut off there. The first paragraph is re-flowed (the page renders it the same): its
  first sentence on line one, the rest of the paragraph on line two.

The sources stay as they are: ``help()`` and the doctests read the same text.
"""

from __future__ import annotations

import re

import griffe

logger = griffe.get_logger(__name__)

_ROLE = re.compile(r":(func|class|mod|data|attr|meth|obj|const|exc):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<first>.*)$")
_BULLET = re.compile(r"^\s*[*-] ")
_SECTION = re.compile(r"^(Args|Arguments|Returns|Yields|Raises|Examples?|Notes?|Attributes):\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _MATH.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        base = len(m["indent"])
        body = [m["first"].strip()] if m["first"].strip() else []
        i += 1
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > base:
            body.append(lines[i].strip())
            i += 1
        pad = " " * base
        if out and out[-1].strip():
            out.append("")
        out += [pad + "$$", *(pad + b for b in body), pad + "$$"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return out


def _raises_prose(lines: list[str]) -> list[str]:
    """``Raises:`` followed by prose, not ``Exception: description`` pairs (``As :func:`hvp`;
    ValueError when …``): one paragraph ``Raises: As …``, which griffe's Google parser would
    otherwise warn about (and fail the strict build on) entry by entry."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        j = i + 1
        if line.strip() == "Raises:" and j < len(lines) and lines[j].strip().startswith("As "):
            base = _indent(line)
            body = []
            while j < len(lines) and lines[j].strip() and _indent(lines[j]) > base:
                body.append(lines[j].strip())
                j += 1
            out.append(" " * base + "Raises: " + " ".join(body))
            i = j
            continue
        out.append(line)
        i += 1
    return out


def _literal_blocks(lines: list[str]) -> list[str]:
    """``text::`` followed by a more indented block: a fenced block (reST literal block)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block_indent = _indent(lines[j]) if j < len(lines) else base
            if j < len(lines) and block_indent > base:
                out.append(line.rstrip()[:-1])  # "text::" -> "text:"
                out.append("")
                pad = " " * base
                out.append(pad + "```text")
                k = j
                while k < len(lines) and (
                    not lines[k].strip() or _indent(lines[k]) >= block_indent
                ):
                    out.append(pad + lines[k][block_indent:] if lines[k].strip() else "")
                    k += 1
                while out[-1] == "":
                    out.pop()
                out += [pad + "```", ""]
                i = k
                continue
        out.append(line)
        i += 1
    return out


def _doctest_blocks(lines: list[str]) -> list[str]:
    """Runs of ``>>>`` lines (with their ``...`` continuations and output): a pycon fence.

    Inside an ``Examples:`` section griffe does this itself, so those are left alone.
    """
    out: list[str] = []
    i = 0
    in_examples = False
    in_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if _SECTION.match(line):
            in_examples = line.startswith("Example")
        if stripped.startswith(">>>") and not in_examples and not in_fence:
            pad = " " * _indent(line)
            if out and out[-1].strip():
                out.append("")
            out.append(pad + "```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out += [pad + "```"]
            continue
        out.append(line)
        i += 1
    return out


def _list_indents(lines: list[str]) -> list[str]:
    """reST indents list-item continuations by 2; Python-Markdown wants 4."""
    out: list[str] = []
    in_list = False
    in_fence = False
    for line in lines:
        if line.strip().startswith("```"):
            in_fence = not in_fence
        if not line.strip():
            out.append(line)
            continue
        indent = _indent(line)
        if indent == 0:
            in_list = bool(_BULLET.match(line))
            out.append(line)
        elif in_list and not in_fence and indent < 4:
            out.append(" " * (2 * indent) + line[indent:])
        elif in_list and in_fence:
            out.append(" " * 2 + line)
        else:
            out.append(line)
    return out


def _separate_items(lines: list[str]) -> list[str]:
    """A blank line before a bullet whose previous item holds several blocks (a formula or a
    literal block, then more text): without it Python-Markdown reads the bullet as more text
    of that item's last paragraph and prints a literal ``*``."""
    out: list[str] = []
    in_fence = False
    several = False
    for line in lines:
        if line.strip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and _indent(line) == 0 and _BULLET.match(line):
            if several and out and out[-1].strip():
                out.append("")
            several = False
        elif not line.strip() and out and _indent(out[-1]) > 0:
            several = True
        elif _indent(line) == 0 and line.strip() and not in_fence:
            several = False
        out.append(line)
    return out


_ABBREVIATIONS = ("e.g", "i.e", "cf", "vs", "etc", "Fig", "ch", "resp", "approx")
_BLOCK_START = re.compile(r"^\s*(\$\$|```|[*-] |>>>|\.\. |\|)")


def _sentence_end(text: str) -> int | None:
    """The index just past the first sentence of ``text`` (a ``.``, ``!`` or ``?`` before a
    space, outside `code` and $maths$, not ending an abbreviation), or ``None``."""
    code = math = False
    for i, ch in enumerate(text):
        if ch == "`":
            code = not code
        elif ch == "$" and not code:
            math = not math
        elif ch in ".!?" and not (code or math) and text[i + 1 : i + 2] == " ":
            word = text[:i].rsplit(" ", 1)[-1].lstrip("(")
            if word not in _ABBREVIATIONS and not (len(word) == 1 and word.isalpha()):
                return i + 1
    return None


def _first_sentence_first(lines: list[str]) -> list[str]:
    """The first paragraph re-flowed: its first sentence as line one, the rest as line two."""
    k = 0
    while (
        k < len(lines)
        and lines[k].strip()
        and not (k and (_BLOCK_START.match(lines[k]) or _SECTION.match(lines[k])))
    ):
        k += 1
    if k < 2 or _BLOCK_START.match(lines[0]):
        return lines
    text = " ".join(line.strip() for line in lines[:k])
    end = _sentence_end(text)
    head = [text] if end is None else [text[:end], text[end:].strip()]
    return [h for h in head if h] + lines[k:]


def _unique_member(obj: griffe.Object, name: str) -> str | None:
    """A bare name that the object's module does not import (``run_layers`` written in
    ``fnn.network``): the one module of the package that defines it, if exactly one does."""
    package = obj.package
    found = [
        mod.members[name].path
        for mod in [package, *_modules(package)]
        if name in mod.members and not mod.members[name].is_alias
    ]
    return found[0] if len(found) == 1 else None


def _modules(mod: griffe.Module):
    for member in mod.modules.values():
        yield member
        yield from _modules(member)


def _crossref(obj: griffe.Object, kind: str, tilde: str, name: str) -> str:
    target = name.strip()
    if target.startswith("."):
        target = target[1:]
    shown = target.rsplit(".", 1)[-1] if tilde else target
    try:
        path = obj.resolve(target) if not target.startswith("fnn.") else target
    except griffe.NameResolutionError:
        head, _, tail = target.partition(".")
        try:
            path = obj.resolve(head) + ("." + tail if tail else "")
        except griffe.NameResolutionError:
            path = _unique_member(obj, target)
            if path is None:
                logger.warning("%s: cannot resolve :%s:`%s`", obj.path, kind, name)
                return f"`{shown}`"
    if _private_helper(obj, path):
        return f"`{shown}`"
    return f"[`{shown}`][{path}]"


def _private_helper(obj: griffe.Object, path: str) -> bool:
    """A private function, class or attribute (``fnn.extensions._per_example_pass``): named
    in a docstring for the reader of the source, but not on any page (``filters: public``),
    so shown as code, not linked. Private *modules* (``fnn._checks``) have pages."""
    name = path.rsplit(".", 1)[-1]
    if not name.startswith("_") or name.startswith("__"):
        return False
    try:
        target = obj.package[path.split(".", 1)[1]] if "." in path else obj.package
    except (KeyError, ValueError):  # not fnn's: leave it to autorefs to complain
        return False
    return not target.is_module


def convert(text: str, obj: griffe.Object) -> str:
    """One docstring, reST-flavoured -> Markdown (see the module docstring)."""
    lines = _first_sentence_first(text.split("\n"))
    lines = _raises_prose(lines)
    lines = _math_blocks(lines)
    lines = _literal_blocks(lines)
    lines = _doctest_blocks(lines)
    lines = _list_indents(lines)
    lines = _separate_items(lines)
    text = "\n".join(lines)
    text = _MATH_ROLE.sub(lambda m: f"${m[1]}$", text)
    return _ROLE.sub(lambda m: _crossref(obj, m[1], m[2], m[3]), text)


class RestToMarkdown(griffe.Extension):
    """Rewrites every docstring of the loaded package (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = convert(obj.docstring.value, obj)
