"""Runnable benchmark scripts (not installed, not collected by pytest); a package so that they import each other
with ordinary import statements (``from benchmarks import training``)."""

import json
from pathlib import Path
from typing import Any


def write_result(stem: str, payload: dict[str, Any], page: str, out: Path, page_dir: Path | None = None) -> None:
    """``{stem}.json`` (the payload) and ``{stem}.md`` (its page) in ``out``, and in ``page_dir`` when given (the
    committed copy under docs/results)."""
    for directory in [out] + ([page_dir] if page_dir is not None else []):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        (directory / f"{stem}.md").write_text(page, encoding="utf-8")
