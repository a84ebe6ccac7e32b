"""MkDocs hooks for fnn's site (mkdocs.yml ``hooks:``).

* ``extra.pending_merge`` (mkdocs.yml): pages left out of the build until the APIs they use
  are merged, and API names whose links render as plain code meanwhile.
* MathJax 3 is served from the site itself (no CDN: the site works offline), copied from the
  ``django-static-mathjax`` wheel (the ``docs`` extra) into ``assets/mathjax/``.
* Notebook pages (mkdocs-jupyter): their own MathJax 2 tag is dropped, so the site-wide
  MathJax 3 typesets their Markdown cells too; ``[text][fnn.name]`` in a Markdown cell
  becomes an autorefs cross-reference, resolved and checked like those in Markdown pages;
  a line at the top links the page's source file (copied next to it by mkdocs-jupyter).
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.fnn")

MATHJAX_SENTINEL = "fnn-site-wide-mathjax"  # mkdocs-jupyter's custom_mathjax_url
# What the browser loads from MathJax's es5/ folder (checked by `make docs-check`).
MATHJAX_FILES = ("tex-chtml-full.js", "output/chtml/fonts/woff-v2", "ui", "a11y", "input")

_pending_pages: set[str] = set()
_pending_api: set[str] = set()

_MD_REF = re.compile(r"\[([^\[\]]+)\]\[([\w.]*)\]")
_MD_LINK = re.compile(r"\[([^\[\]]+)\]\(([^()\s#]+)(#[^()\s]*)?\)")
_HTML_REF = re.compile(r"\[((?:(?!</?p>)[^\[\]])+)\]\[([\w.]*)\]")


def _ref_id(text: str, ident: str) -> str:
    return ident or re.sub(r"<[^>]+>|`", "", text).strip()


def on_config(config, **kwargs):
    pending = (config.extra.get("pending_merge") or {}) if config.extra else {}
    _pending_pages.clear()
    _pending_pages.update(pending.get("pages") or [])
    _pending_api.clear()
    _pending_api.update(pending.get("api") or [])
    if _pending_pages:
        config.nav = _drop_pending(config.nav)
        log.info("pending_merge: leaving out %s", ", ".join(sorted(_pending_pages)))
    return config


def _drop_pending(nav):
    if isinstance(nav, list):
        return [item for item in (_drop_pending(i) for i in nav) if item is not None]
    if isinstance(nav, dict):
        out = {k: _drop_pending(v) for k, v in nav.items()}
        return out if all(v is not None for v in out.values()) else None
    return None if nav in _pending_pages else nav


def on_files(files: Files, config, **kwargs) -> Files:
    for src in _pending_pages:
        f = files.get_file_from_path(src)
        if f is None:
            raise FileNotFoundError(f"extra.pending_merge.pages lists {src!r}, not in docs/")
        files.remove(f)
    import mathjax  # django-static-mathjax: MathJax 3's es5 build, nothing of Django's

    es5 = Path(mathjax.__path__[0]) / "static" / "mathjax" / "es5"
    for name in MATHJAX_FILES:
        root = es5 / name
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            dest = "assets/mathjax/" + path.relative_to(es5).as_posix()
            files.append(File.generated(config, dest, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    def unlink_page(m: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), m[2]))
        return f"{m[1]} *(not merged yet)*" if target in _pending_pages else m[0]

    return _MD_LINK.sub(unlink_page, _MD_REF.sub(_unlink_pending, markdown))


def _unlink_pending(m: re.Match) -> str:
    if _ref_id(m[1], m[2]) in _pending_api:
        return f"{m[1]} *(not merged yet)*"
    return m[0]


def on_page_content(html: str, page, **kwargs) -> str:
    if not page.file.src_uri.endswith(".py"):
        return html
    html, n = re.subn(rf'<script src="{MATHJAX_SENTINEL}">\s*</script>', "", html)
    if n != 1:
        raise RuntimeError(f"{page.file.src_uri}: expected one notebook MathJax tag, found {n}")

    def autoref(m: re.Match) -> str:
        ident = _ref_id(m[1], m[2])
        if not ident.startswith("fnn"):
            return m[0]
        if ident in _pending_api:
            return f"{m[1]} <em>(not merged yet)</em>"
        return f'<autoref identifier="{ident}">{m[1]}</autoref>'

    name = page.file.src_uri.rsplit("/", 1)[-1]
    source = (
        f'<p class="fnn-source">Source: <a href="{name}" download><code>{name}</code></a> '
        f"(jupytext percent format; run it with <code>python docs/{page.file.src_uri}</code>)</p>"
    )
    return source + _HTML_REF.sub(autoref, html)
