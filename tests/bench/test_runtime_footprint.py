"""bench/runtime_footprint.py --tiny: the table and the JSON, from a real runtime venv."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import runtime_footprint as fp  # noqa: E402


def test_tiny_run_reports_both_venvs(tmp_path, capsys):
    try:
        fp.runtime_venv()
    except fp.VenvUnavailable as exc:
        pytest.skip(f"no runtime venv here: {exc}")
    assert fp.main(["--tiny", "--json", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    rows = res["rows"]
    assert set(rows) == {"edgeopt-runtime", "full edgeopt"} and res["repeats"] == 3
    for row in rows.values():
        assert len(row["import_s"]) == 3 and 0 < row["import_s_median"] < 5
        assert 10 * 2**20 < row["peak_rss_bytes"] < 4 * 2**30
        assert not row["torch_loaded"]
    assert 0 < rows["edgeopt-runtime"]["bytes_vs_full"] < 0.2
    assert rows["edgeopt-runtime"]["bytes"] < rows["full edgeopt"]["bytes"]
    out = capsys.readouterr().out
    assert "edgeopt-runtime" in out and "runtime venv / full venv on disk" in out


def test_a_venv_that_cannot_be_made_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))
    monkeypatch.setattr(fp, "pins", lambda: ["numpy==0.0.0.no.such.version"])
    assert fp.main(["--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: pip install of numpy")
