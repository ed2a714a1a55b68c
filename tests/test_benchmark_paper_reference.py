"""benchmarks/paper_reference.py: a missing or wrong reference folder is named in the error; with a fetched copy of
the reference (only on machines that have one: it has no license and never ships), the quick mode times both sides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import paper_reference

#: Where a session may have fetched the reference (ashiq24/local-scale-equivariance); override with EQUICAN_REFERENCE.
REFERENCE = Path(os.environ.get("EQUICAN_REFERENCE", "/tmp/refcode"))


def test_a_folder_without_the_reference_is_refused_by_name(tmp_path):
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "sampling_utils.py").write_text("")
    with pytest.raises(FileNotFoundError, match="models/surrogate_model.py") as info:
        paper_reference.load_reference(tmp_path)
    assert "utils/sampling_utils.py" not in str(info.value).rsplit("without", 1)[1]  # only what is missing


@pytest.mark.skipif(not (REFERENCE / paper_reference.REFERENCE_FILES[1]).is_file(),
                    reason=f"no fetched copy of the reference at {REFERENCE}")
def test_quick_mode_times_both_sides(tmp_path):
    payload = paper_reference.main(["--reference", str(REFERENCE), "--quick", "--out", str(tmp_path)])
    assert (tmp_path / "paper_reference.json").is_file()
    assert [row["cells"] for row in payload["inverse"]] == [4, 8]
    assert all(row["reference_ms"] > 0 and row["equican_ms"] > 0 for row in payload["inverse"])
    assert set(payload["dec"]["ms_per_image"]) == {"reference", "equican@48", "equican@24"}


def test_without_a_reference_it_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EQUICAN_REFERENCE", raising=False)
    assert paper_reference.main(["--out", str(tmp_path)]) == {}
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "paper_reference.json").exists()
