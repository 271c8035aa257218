"""bench/formats.py on digits (--tiny): every form through int8, the trained recipes on .pt2/ONNX."""

from __future__ import annotations

import json
import numbers
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import formats  # noqa: E402


def test_tiny_run_covers_every_form(tmp_path, one_thread):
    code = formats.main(["--tiny", "--only", "resnet_small", "--json", str(tmp_path / "r.json")])
    assert code == 0
    r = json.loads((tmp_path / "r.json").read_text())
    rows = r["rows"]
    got = {(row["form"], row["recipe"]) for row in rows}
    assert {(f, "int8") for f in formats.FORMS} <= got
    assert {(f, rec) for f in formats.TRAIN_FORMS
            for rec in ("w4a8-adaround", "prune-distill-int8")} <= got
    assert r["floors"]["resnet_small"]["total"] > 0
    for row in rows:
        assert row["size"] > 0 and row["size_fp32_onnx"] > row["size"]
        assert isinstance(row["top1_fp32"], numbers.Real)
        assert isinstance(row["top1"], numbers.Real)
        want = "w4a8" if row["recipe"] == "w4a8-adaround" else "int8"
        assert row["last_stage"] == f"{want} onnxruntime"
        assert row["checks"] and all(isinstance(c["pass"], bool) for c in row["checks"])
    by = {(row["form"], row["recipe"]): row for row in rows}
    assert by[("pt2-static", "int8")]["static_batch"] == 1
    assert by[("pt2-dyn", "int8")]["static_batch"] is None
    # An .onnx file with int8 takes the ONNX-graph path; the torch forms the PyTorch one.
    assert by[("onnx", "int8")]["first_stage"] == "fp32 source"
    assert by[("onnx-dynamo", "int8")]["first_stage"] == "fp32 source"
    assert by[("pt2-dyn", "int8")]["first_stage"] == "fp32 pytorch"
    assert by[("onnx", "prune-distill-int8")]["first_stage"] == "fp32 pytorch"
    assert by[("pt2-dyn", "prune-distill-int8")]["macs_after"] < by[
        ("pt2-dyn", "prune-distill-int8")]["macs_before"]
    # prune vs int8 latency: the two artifacts timed here, interleaved, at 1 and 32.
    vs = by[("onnx", "prune-distill-int8")]["vs_int8"]
    assert set(vs) == {"1", "32"} and all(v["ratio"] > 0 for v in vs.values())
    assert any(c["check"].startswith("b1 ") for c in by[("onnx", "prune-distill-int8")]["checks"])
