// MathJax settings for pymdownx.arithmatex (generic mode): it wraps math in \( \) and \[ \] inside
// <span|div class="arithmatex">, which MathJax typesets; re-run on every page load of mkdocs-material's instant
// navigation. The MathJax script itself is loaded after this file (mkdocs.yml, extra_javascript).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  }
};

if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.startup && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
