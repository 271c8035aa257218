"""bench/fuzz.py at a tiny setting: every loader's row, the table, the JSON, and ``run``
(the function bench/reliability.py imports)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import fuzz  # noqa: E402
from edgeopt.fuzz import LOADERS  # noqa: E402

KEYS = {"loader", "cases", "ok", "clear", "unhandled", "hangs", "stray"}


def test_five_cases_per_loader_are_all_counted_and_clean(tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--cases", "5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["loader"] for r in rows] == list(LOADERS)
    for row in rows:
        assert KEYS <= set(row)
        assert row["cases"] == 5 == row["ok"] + row["clear"] + row["unhandled"] + row["hangs"] \
            + row["stray"]
        assert row["unhandled"] == row["hangs"] == row["stray"] == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "bench/fuzz.py --cases 5 --seed 0"
    assert all(name in text for name in LOADERS) and "unhandled" in text


def test_run_returns_the_rows_for_other_benches():
    rows = fuzz.run(3, 1, ["npz", "recipe"])
    assert [r["loader"] for r in rows] == ["npz", "recipe"]
    assert all(KEYS <= set(r) and r["cases"] == 3 for r in rows)
    again = fuzz.run(3, 1, ["npz"])[0]
    # the same seed, the same counts (the time differs)
    assert {**again, "seconds": None} == {**rows[0], "seconds": None}


def test_an_unhandled_case_fails_the_bench(monkeypatch, capsys):
    from edgeopt.fuzz import Loader

    def broken(path):
        raise KeyError(path)

    monkeypatch.setitem(fuzz.LOADERS, "npz", Loader("npz", LOADERS["npz"].cases, broken))
    assert fuzz.main(["--cases", "2", "--loaders", "npz"]) == 1
    assert "    2" in capsys.readouterr().out


def test_a_loader_that_kills_the_interpreter_is_counted_and_the_run_goes_on(monkeypatch):
    """A segfault in a C++ parser must not end the bench without its table."""
    import os

    from edgeopt.fuzz import Loader

    def crash(path):
        os.abort()

    monkeypatch.setitem(fuzz.LOADERS, "npz", Loader("npz", LOADERS["npz"].cases, crash))
    row = fuzz.run_loader("npz", 3, 0)
    assert row["cases"] == row["unhandled"] == 3
