"""bench/reliability.py on a tiny setting (1 kill, no fuzz cases): every fault class has
its row, every case ended as specified, and the must-be-0 columns are 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import reliability  # noqa: E402

CLASSES = ["bad data", "destination", "concurrent runs", "interruption (",
           "interruption: --resume", "security", "fuzz", "determinism", "concurrency ("]


def test_every_fault_class_is_counted_and_nothing_is_lost(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = reliability.main(["--kills", "1", "--fuzz-cases", "0", "--json", str(out)])
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    for name in CLASSES:
        assert sum(r["fault"].startswith(name) for r in rows) >= 1, (name, table)
        assert name in table
    measured = [r for r in rows if r["tried"] is not None]
    # Cases each class is made of: a class that silently ran none would pass the zeros.
    tried = {r["fault"].split(" (")[0]: r["tried"] for r in measured}
    assert tried["bad data"] == 4 and tried["destination"] == 5 and tried["security"] == 5
    assert tried["determinism"] == 5 and tried["concurrent runs, same --out"] == 2
    for r in measured:
        assert r["clear"] == r["tried"], (r, table)
        for column in reliability.LOSS:
            assert r[column] == 0, (column, r, table)
    fuzz = [r for r in rows if r["fault"].startswith("fuzz")]
    assert fuzz[0]["note"].startswith("not run") and fuzz[0]["tried"] is None
    assert code == 0
