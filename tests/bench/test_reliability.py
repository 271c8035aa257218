"""bench/reliability.py on a tiny setting: the cheap fault classes run (2 fuzz cases per
loader), the slow ones (interruption, determinism) are left to tests/test_interrupt.py and
tests/test_determinism.py, which check the same code paths; every class has its row, every
measured case ended as specified, and the must-be-0 columns are 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import reliability  # noqa: E402

RUN = ["bad data", "destinations", "concurrent", "security", "fuzz", "concurrency"]


def test_every_fault_class_is_counted_and_nothing_is_lost(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = reliability.main(["--fuzz-cases", "2", "--only", ",".join(RUN), "--json", str(out)])
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    for title in reliability.TITLES.values():
        assert any(r["fault"].startswith(title.split(" (")[0]) for r in rows), (title, table)
    skipped = [r["fault"] for r in rows if r["note"] == "not run (--only)"]
    assert skipped == [reliability.TITLES["interruption"], reliability.TITLES["determinism"]]
    measured = [r for r in rows if r["tried"] is not None]
    # Cases each class is made of: a class that silently ran none would pass the zeros.
    tried = {r["fault"].split(" (")[0]: r["tried"] for r in measured}
    assert tried["bad data"] == 4 and tried["destination"] == 5 and tried["security"] == 5
    assert tried["concurrent runs, same --out"] == 2 and tried["concurrency"] >= 1
    fuzz = [r for r in measured if r["fault"].startswith("fuzz")]
    assert len(fuzz) >= 10 and all(r["tried"] == 2 for r in fuzz), fuzz
    for r in measured:
        assert r["clear"] == r["tried"], (r, table)
        for column in reliability.LOSS:
            assert r[column] == 0, (column, r, table)
    assert code == 0
