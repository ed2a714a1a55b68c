"""``docs/figures.py`` draws the documentation's three figures as valid PNGs of a sensible size, and bad
arguments fail with a clear message instead of a traceback."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "figures.py"
NAMES = ("group_actions.png", "monotone_warp_grid.png", "canonical_forms.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figures_module():
    spec = importlib.util.spec_from_file_location("docs_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; raises AssertionError if the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_png_reader_rejects_a_non_png(tmp_path):
    # Negative control for the check below: a file that is not a PNG is caught.
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(AssertionError, match="not a PNG"):
        _png_size(fake)


@pytest.mark.slow
def test_figures_are_written_as_pngs_of_sensible_size(tmp_path, capsys):
    pytest.importorskip("escnn")
    out = tmp_path / "images"
    assert _figures_module().main(["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
    for name in NAMES:
        path = out / name
        width, height = _png_size(path)
        assert 400 <= width <= 2500 and 400 <= height <= 2500, (name, width, height)
        assert 10_000 < path.stat().st_size < 300_000, (name, path.stat().st_size)
    printed = capsys.readouterr().out
    assert all(f"wrote {out / name}" in printed for name in NAMES)


def test_unknown_option_is_a_usage_error(tmp_path, capsys):
    assert _figures_module().main(["--outt", str(tmp_path)]) == 2
    assert "unrecognized arguments: --outt" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_out_path_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    assert _figures_module().main(["--out", str(blocker / "images")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --out" in err and "file.txt" in err
