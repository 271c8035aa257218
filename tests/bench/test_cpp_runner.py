import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import cpp_runner  # noqa: E402


def test_cpp_runner_bench_runs_on_a_tiny_setting(tmp_path, capsys):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: apt-get install g++")
    out = tmp_path / "rows.json"
    assert cpp_runner.main(["--tiny", "-n", "8", "--arch", "x86_64", "--backend", "onnxruntime",
                            "--json", str(out), "--results", str(tmp_path / "t.txt")]) == 0
    (row,) = json.loads(out.read_text())
    assert row["arch"] == "x86_64" and row["n"] == 8 and row["backend"] == "onnxruntime"
    assert row["max_abs_diff"] <= 1e-5
    assert 100_000 < row["runner_bytes"] < 5_000_000
    assert row["library_bytes"] > 10_000_000
    assert "PASS" in capsys.readouterr().out
