"""SIGINT and SIGTERM at any moment of `edgeopt optimize` (issue 14, "Interruption"):
exit 130/143 with one line, and no artifact, staging folder, lock or temporary file left;
an interrupted training run resumed with --resume writes the same bytes.

The runs are real processes killed at seeded moments by bench/interrupt.py (the same code
as the bench's 20 kills). Each run takes about 10 s, so CI kills 8 (EDGEOPT_KILLS to change).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import interrupt  # noqa: E402

KILLS = int(os.environ.get("EDGEOPT_KILLS", "8"))


def test_optimize_killed_at_seeded_moments_leaves_nothing_behind(tmp_path):
    reference, outcomes = interrupt.kill_runs(KILLS, seed=0, root=tmp_path)
    report = "\n".join(interrupt.row(i, o) for i, o in enumerate(outcomes))
    for o in outcomes:
        assert o.clear, report  # 130/143 and one "interrupted by SIG..." line, or exit 0
        assert not o.half_written, report  # absent, or whole and verified
        assert o.stray == [], report  # no staging folder, lock, probe, temporary file
    interrupted = [o for o in outcomes if o.rc in (130, 143)]
    assert {o.rc for o in interrupted} == {130, 143}, report  # both signals were handled


def test_resume_after_sigint_writes_the_uninterrupted_bytes(tmp_path):
    res = interrupt.resume_run(tmp_path)
    assert res.reference.ok and res.reference.artifact == "complete"
    assert res.cut.rc == 130 and res.cut.artifact == "absent" and res.cut.stray == []
    assert 0 < res.cut_at_step < 120  # cut while training, the step its checkpoint holds
    assert res.resumed.rc == 0 and res.resumed_from == res.cut_at_step
    assert res.same_bytes  # sha256 of model.onnx
    assert res.ok


@pytest.mark.parametrize("argv", [["recipes"], ["targets"]])
def test_an_uninterrupted_command_is_unchanged(argv, capsys):
    from edgeopt.cli import main

    assert main(argv) == 0 and capsys.readouterr().out
