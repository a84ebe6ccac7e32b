"""Open every page of the built site in headless Chromium and check what a reader sees.

``make docs-check`` (after ``make docs``) runs ``python docs/_tools/docs_check.py``. It serves
``site/`` on 127.0.0.1 (a free port, this process only, stopped at the end), drives the
system's Chromium through Selenium (``apt-get install chromium chromium-driver``) and, on
every ``.html`` page, checks:

* no console errors (a script error, a resource that failed to load);
* no broken images, and every internal link leads to a page that exists and, when it names
  a ``#fragment``, to an element with that id there;
* the math is typeset: MathJax finished, no TeX error box, every arithmatex span holds a
  typeset formula, and no raw ``$…$``, ``\\(``, ``\\[``, ``\\frac`` or ``.. math::`` (nor a
  Sphinx role such as ``:func:``, nor a ``* `` bullet) is left in the visible text outside
  code;
* it reads at a laptop's width (1280 × 800): no code block or output is wider than its box
  (``scrollWidth > clientWidth``: the reader would have to scroll it) or wraps a line in
  the middle; the failure names the cell and the longest line;
* every API summary (the first line of an entry in a module's or class's list of functions,
  classes, attributes) is a whole sentence, not a first line cut off mid-sentence, and no
  entry lacks one: a constant or a record's field says what it is.

It saves screenshots at 1280 and at 390 px wide (a phone) of the landing page, two
tutorials and one API page under ``results/docs/`` (more with ``--screenshot
tutorials/07_curvature.html``); at 390 px it also counts the code blocks that scroll
sideways there (a phone cannot show a line of code whole; that is reported, not failed).
It prints one row per page and writes ``results/docs/docs_check.json``; the exit code is 1
if any page failed.
Everything is bounded: page loads and scripts time out, and the whole run stops after
``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SCREENSHOTS = {
    "index.html": "landing.png",
    "tutorials/03_backprop_by_hand.html": "tutorial_03.png",
    "tutorials/03c_check_my_homework.html": "tutorial_03c.png",
    "api/numerical.html": "api_numerical.png",
}
LAPTOP, PHONE = (1280, 800), (390, 800)
# A summary ends a sentence: . ! ? or : (before a list or formula), perhaps then ) ' " ”.
SENTENCE_END = re.compile(r"[.!?:…][)'\"”’]*$")

# Raw markup that must not survive into the visible text (code blocks excluded).
LEFTOVERS = {
    "inline $…$": re.compile(r"(?<![\w$])\$[^$\s][^$]*\$"),
    "\\(": re.compile(r"\\\("),
    "\\[": re.compile(r"\\\["),
    "\\frac": re.compile(r"\\frac"),
    ".. math::": re.compile(r"\.\. math::"),
    "Sphinx role": re.compile(r":(func|class|mod|data|attr|meth|math):`"),
    "list bullet": re.compile(r"\n[ \t]*\* "),  # a "* item" Markdown read as text
}

# Visible text outside code, formulas and scripts; the state of MathJax; broken images.
PAGE_JS = r"""
const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "MJX-CONTAINER", "TEXTAREA", "NOSCRIPT"]);
const texts = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  let el = node.parentElement, hidden = false;
  for (let e = el; e; e = e.parentElement) {
    if (skip.has(e.tagName)) { hidden = true; break; }
  }
  if (hidden || !el || el.getClientRects().length === 0) continue;
  const style = getComputedStyle(el);
  if (style.visibility === "hidden" || style.display === "none") continue;
  texts.push(node.textContent);
}
const arith = [...document.querySelectorAll(".arithmatex")];
return {
  text: texts.join(" "),
  mathjax: typeof window.MathJax === "object" && !!window.MathJax.typesetPromise,
  formulas: document.querySelectorAll("mjx-container").length,
  untypeset: arith.filter(a => !a.querySelector("mjx-container"))
    .map(a => a.textContent.slice(0, 60)),
  tex_errors: [...document.querySelectorAll("mjx-merror")]
    .map(e => e.getAttribute("data-mjx-error") || e.textContent),
  broken_images: [...document.images]
    .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
  links: [...document.querySelectorAll("a[href]")].map(a => a.href),
  height: document.documentElement.scrollHeight,
};
"""

# Code blocks and outputs wider than their box (or wrapping a line), and API summaries.
LAYOUT_JS = r"""
const cells = [...document.querySelectorAll(".jp-Cell")];
const where = (pre) => {
  const cell = pre.closest(".jp-Cell");
  const part = pre.closest(".jp-OutputArea") ? "output" : "input";
  if (cell) return `cell ${cells.indexOf(cell) + 1} ${part}`;
  const head = pre.closest(".doc-object, section, article");
  const id = head && head.querySelector("[id]");
  return id ? `#${id.id}` : "a code block";
};
const wide = [], wrapped = [];
for (const pre of document.querySelectorAll("pre")) {
  if (pre.getClientRects().length === 0) continue;
  const lines = pre.textContent.replace(/\n$/, "").split("\n");
  const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), "").trim().slice(0, 60);
  const over = pre.scrollWidth - pre.clientWidth;
  if (over > 1) { wide.push(`${where(pre)}: ${over} px too wide: ${longest}`); continue; }
  const style = getComputedStyle(pre);
  if (style.whiteSpace.startsWith("pre-wrap") || style.whiteSpace === "break-spaces") {
    const lh = parseFloat(style.lineHeight);
    const pad = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    if (lh && pre.clientHeight - pad > (lines.length + 0.5) * lh) {
      wrapped.push(`${where(pre)}: a line wraps: ${longest}`);
    }
  }
}
const summaries = [];
for (const title of document.querySelectorAll(".doc-section-title")) {
  const kind = title.textContent.trim();
  if (!/^(Functions|Classes|Modules|Attributes|Type Aliases):?$/.test(kind)) continue;
  const list = title.closest("p") && title.closest("p").nextElementSibling;
  if (!list) continue;
  for (const li of list.querySelectorAll(":scope > li")) {
    const name = li.querySelector("code");
    const desc = li.querySelector(".doc-md-description");
    summaries.push([name ? name.textContent.trim() : "?", desc ? desc.innerText.trim() : ""]);
  }
}
return {wide, wrapped, summaries};
"""

WAIT_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => done(true), e => done(String(e)));
} else { done(false); }
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free one
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def browser(width: int, height: int, phone: bool = False) -> webdriver.Chrome:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        sys.exit(
            "docs-check needs Chromium and its driver: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    if phone:  # a window narrower than 500 px is widened by Chromium; a phone's screen is not
        metrics = {"width": width, "height": height, "pixelRatio": 1.0}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@functools.cache
def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # only 127.0.0.1: internal links
            body = r.read().decode("utf-8", "replace") if url.endswith(".html") else ""
            return r.status, body
    except urllib.error.HTTPError as e:
        return e.code, ""


def broken_links(links: list[str], base: str) -> list[str]:
    bad = []
    for link in sorted(set(links)):
        if not link.startswith(base):
            continue  # external: not followed (no network here)
        url, _, frag = link.partition("#")
        status, body = fetch(url)
        if status != 200:
            bad.append(f"{link} (HTTP {status})")
        elif frag and url.endswith(".html"):
            ident = html.escape(urllib.parse.unquote(frag), quote=True)
            if f'id="{ident}"' not in body:
                bad.append(f"{link} (no element with id {frag!r})")
    return bad


def check_page(driver, base: str, page: str, shots: Path, screenshots: dict) -> dict:
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(base + page)
    mathjax_done = driver.execute_async_script(WAIT_MATHJAX_JS)
    time.sleep(0.2)  # late console messages (fonts) arrive after the promise
    info = driver.execute_script(PAGE_JS)
    console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    leftovers = sorted(
        f"{name}: {m.group(0)[:50]!r}"
        for name, pattern in LEFTOVERS.items()
        for m in pattern.finditer(info["text"])
    )
    layout = driver.execute_script(LAYOUT_JS)
    cut = [f"{n}: …{d[-50:]}" for n, d in layout["summaries"] if d and not SENTENCE_END.search(d)]
    problems = {
        "code wider than its box": layout["wide"],
        "code line wrapped": layout["wrapped"],
        "summary ends mid-sentence": cut,
        "entry with no summary": [n for n, d in layout["summaries"] if not d],
        "console errors": console,
        "broken images": info["broken_images"],
        "broken links": broken_links(info["links"], base),
        "MathJax": [] if mathjax_done is True else [f"not finished: {mathjax_done}"],
        "TeX errors": info["tex_errors"],
        "untypeset math": info["untypeset"],
        "raw markup": leftovers,
    }
    if page in screenshots:
        screenshot(driver, info["height"], shots / screenshots[page])
    return {
        "page": page,
        "formulas": info["formulas"],
        "links": len(set(info["links"])),
        "problems": {k: v for k, v in problems.items() if v},
    }


def screenshot(driver, height: int, path: Path) -> None:
    """The top of the page, up to 2400 px of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    driver.set_window_size(size["width"], min(max(height, size["height"]), 2400))
    driver.save_screenshot(str(path))
    driver.set_window_size(size["width"], size["height"])


def phone_pass(base: str, shots: Path, screenshots: dict) -> dict:
    """At 390 px: a screenshot of each page in ``screenshots`` and how many of its code
    blocks scroll sideways there (reported, not failed)."""
    driver = browser(*PHONE, phone=True)
    scrolling = {}
    try:
        for page, name in screenshots.items():
            driver.get(base + page)
            driver.execute_async_script(WAIT_MATHJAX_JS)
            layout = driver.execute_script(LAYOUT_JS)
            scrolling[page] = len(layout["wide"])
            height = driver.execute_script("return document.documentElement.scrollHeight")
            metrics = {"width": PHONE[0], "height": min(max(height, PHONE[1]), 2400)}
            driver.execute_cdp_cmd(  # the emulated screen, not the window, sets the height
                "Emulation.setDeviceMetricsOverride",
                {**metrics, "deviceScaleFactor": 1, "mobile": True},
            )
            driver.save_screenshot(str(shots / name.replace(".png", "_390.png")))
    finally:
        driver.quit()
    return scrolling


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=Path("site"))
    parser.add_argument("--out", type=Path, default=Path("results/docs"))
    parser.add_argument("--timeout", type=float, default=300.0, help="whole run, seconds")
    parser.add_argument(
        "--screenshot",
        action="append",
        default=[],
        metavar="PAGE",
        help="also screenshot this page (e.g. tutorials/07_curvature.html); repeatable",
    )
    args = parser.parse_args(argv)
    screenshots = dict(SCREENSHOTS)
    screenshots.update(
        {p: p.removesuffix(".html").replace("/", "_") + ".png" for p in args.screenshot}
    )
    pages = sorted(p.relative_to(args.site).as_posix() for p in args.site.rglob("*.html"))
    pages = [p for p in pages if not p.startswith("assets/")]
    if "index.html" not in pages:
        sys.exit(f"no index.html under {args.site}: run `make docs` first")
    missing = [p for p in screenshots if p not in pages]
    if missing:  # a page left out of this build (mkdocs.yml extra.pending_merge)
        print(f"not in the site, no screenshot: {missing}")
        screenshots = {p: n for p, n in screenshots.items() if p in pages}

    server, base = serve(args.site)
    driver = browser(*LAPTOP)
    start = time.monotonic()
    rows = []
    try:
        for page in pages:
            if time.monotonic() - start > args.timeout:
                rows.append(
                    {
                        "page": page,
                        "formulas": 0,
                        "links": 0,
                        "problems": {"timeout": [f"run stopped after {args.timeout} s"]},
                    }
                )
                continue
            rows.append(check_page(driver, base, page, args.out, screenshots))
        phone = phone_pass(base, args.out, screenshots)
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()

    width = max(len(r["page"]) for r in rows)
    print(f"{'page':<{width}}  formulas  links  result")
    for r in rows:
        verdict = "ok" if not r["problems"] else "FAIL"
        print(f"{r['page']:<{width}}  {r['formulas']:>8}  {r['links']:>5}  {verdict}")
        for kind, items in r["problems"].items():
            for item in items[:8]:
                print(f"    {kind}: {item}")
    print(f"at {PHONE[0]} px, code blocks that scroll sideways (not failed): {phone}")
    failed = sum(bool(r["problems"]) for r in rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "docs_check.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    names = [s for n in screenshots.values() for s in (n, n.replace(".png", "_390.png"))]
    print(f"screenshots: {', '.join(str(args.out / s) for s in names)}")
    # Not pytest's "N passed, M failed": CI reads that line as the test count.
    verdict = f"FAILED on {failed} of {len(rows)} pages" if failed else "every page passed"
    print(f"docs-check: {verdict} ({len(rows)} pages)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
