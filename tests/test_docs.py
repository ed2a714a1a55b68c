"""The documentation site builds with ``--strict`` and its pages are where the nav says."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(entries) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


class _MkdocsLoader(yaml.SafeLoader):
    """A safe loader that reads mkdocs' own tags (``!relative $docs_dir``, ``!ENV``) as plain strings."""


_MkdocsLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {loader.construct_scalar(node)}"
                                    if isinstance(node, yaml.ScalarNode) else None)


def _config() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkdocsLoader)  # noqa: S506


def test_strict_build_renders_every_nav_page(docs_site):
    pages = _nav_pages(_config()["nav"])
    assert len(pages) >= 20
    for page in pages:
        stem = page.removesuffix(".md")  # mkdocs' directory URLs: a.md -> a/index.html, b/index.md -> b/index.html
        html = docs_site / (f"{stem}.html" if stem == "index" or stem.endswith("/index") else f"{stem}/index.html")
        assert html.is_file(), f"{page} was not rendered to {html}"
        assert "To be written" not in html.read_text(encoding="utf-8"), f"{page} is still a placeholder"


def test_every_markdown_page_is_in_the_nav():
    pages = set(_nav_pages(_config()["nav"]))
    files = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert files - pages == set(), "pages missing from mkdocs.yml's nav"


def test_nav_checker_sees_a_missing_page():
    # Negative control for the two checks above: a page that is not in the nav is found.
    pages = set(_nav_pages([{"A": "a.md"}, {"B": [{"C": "c/d.md"}, "e.md"]}]))
    assert pages == {"a.md", "c/d.md", "e.md"}
    assert {"a.md", "x.md"} - pages == {"x.md"}


# Pages whose ```python blocks are complete programs (the tutorials include their scripts, which
# tests/test_tutorials.py runs; the API pages have none).
RUNNABLE_PAGES = ("install.md", "concepts/latent.md")


def test_page_python_examples_run(tmp_path):
    import os
    import subprocess
    import sys

    from test_readme import python_blocks

    for page in RUNNABLE_PAGES:
        blocks = python_blocks((ROOT / "docs" / page).read_text(encoding="utf-8"))
        assert blocks, f"{page} has no python example"
        script = tmp_path / (page.replace("/", "_") + ".py")
        script.write_text("\n\n".join(blocks), encoding="utf-8")
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, f"{page}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def test_build_from_another_working_directory(tmp_path):
    """`mkdocs build -f /path/to/mkdocs.yml` from elsewhere: every path in the config is relative to the file (the
    snippets' base path once was relative to the working directory: SnippetMissingError)."""
    import os
    import subprocess
    import sys

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=elsewhere, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # A tutorial page includes its script through a snippet: the code is really there.
    page = (site / "tutorials" / "new_group" / "index.html").read_text(encoding="utf-8")
    assert "class " in page and "Snippet" not in page
    assert not any(elsewhere.iterdir())  # nothing was written into the working directory


def test_math_is_typeset_when_arithmatex_is_on(docs_site):
    """arithmatex only marks math up; the pages must load MathJax (and its settings) to render it."""
    config = _config()
    names = [next(iter(e)) if isinstance(e, dict) else e for e in config["markdown_extensions"]]
    if "pymdownx.arithmatex" not in names:
        return
    scripts = config.get("extra_javascript", [])
    assert any("mathjax" in str(s).lower() and str(s).startswith("https://") for s in scripts), scripts
    html = (docs_site / "concepts" / "groups" / "index.html").read_text(encoding="utf-8")
    assert "javascripts/mathjax.js" in html and "tex-mml-chtml.js" in html
    assert (docs_site / "javascripts" / "mathjax.js").is_file()


def test_mkdocs_loader_reads_tags():
    # Negative control for _config(): a plain safe_load refuses mkdocs' tags, the loader here reads them.
    text = "a: !relative $docs_dir\n"
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        pass
    else:
        raise AssertionError("safe_load accepted an unknown tag")
    assert yaml.load(text, Loader=_MkdocsLoader) == {"a": "!relative $docs_dir"}  # noqa: S506
