"""bench/compose.py on digits (--tiny): both optimize() runs, the side-by-side timing, the checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import compose  # noqa: E402


def test_tiny_run_compares_pruned_int8_with_int8_alone(tmp_path, one_thread):
    code = compose.main(["--tiny", "--out", str(tmp_path / "art"), "--json",
                         str(tmp_path / "r.json")])
    assert code == 0
    r = json.loads((tmp_path / "r.json").read_text())
    names = [s["name"] for s in r["stages"]["prune-distill-int8"]]
    assert names[:3] == ["fp32 pytorch", "after prune", "after distill"]
    assert names[-1] == "int8 onnxruntime"
    assert r["macs_after"] <= 0.5 * r["macs_before"]
    # Half the MACs removed: the pruned int8 artifact is well under the int8 one.
    assert r["pdi_bytes"] < 0.7 * r["int8_bytes"] < r["fp32_bytes"]
    assert set(r["latency_ms"]["32"]) == {"fp32", "int8", "prune-distill-int8"}
    assert len(r["checks"]) == 4
