"""bench/distill.py end to end on digits (--tiny): both students trained, compiled, compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import distill  # noqa: E402


def test_tiny_run_reports_both_students(tmp_path, one_thread):
    code = distill.main(["--tiny", "--out", str(tmp_path / "art"), "--json",
                         str(tmp_path / "r.json")])
    assert code == 0
    res = json.loads((tmp_path / "r.json").read_text())
    rows = res["rows"]
    assert set(rows) == {"teacher", "labels only", "distilled"}
    # Same architecture, same budget: only the loss differs.
    assert rows["labels only"]["params"] == rows["distilled"]["params"] < rows["teacher"]["params"]
    assert rows["labels only"]["steps"] == rows["distilled"]["steps"] > 0
    for r in rows.values():
        assert 0 <= r["top1"] <= 100 and r["bytes"] > 0
    check = res["checks"][0]
    assert check["gain"] == rows["distilled"]["top1"] - rows["labels only"]["top1"]
