// MathJax 3, served from this site (assets/mathjax/, copied by docs/_tools/hooks.py).
// It typesets what pymdownx.arithmatex marked (Markdown pages, docstrings: \( \) and \[ \])
// and the Markdown cells of the tutorials ($ $ and $$ $$), nothing else. (Material suggests
// ignoreHtmlClass ".*|", which also matches the class-less <p> inside a notebook cell.)
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "md-header|md-container",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
  chtml: {
    fontURL: new URL("../assets/mathjax/output/chtml/fonts/woff-v2", document.currentScript.src).href,
  },
};
