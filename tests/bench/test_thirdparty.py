"""bench/thirdparty.py --tiny on ppocr-cls and silero-vad: optimize() on the real third-party
files, the ORT quantize_static peer, every method row, the artifact's report.json."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import thirdparty  # noqa: E402

METHODS = {"fp32 (source file)", "fp32 (onnxslim)", "ORT quantize_static defaults",
           "edgeopt optimize int8"}


def _fetch_or_skip(name: str) -> None:
    from edgeopt.core.errors import ModelLoadError
    from edgeopt.zoo.thirdparty import thirdparty_model

    try:
        thirdparty_model(name)
    except ModelLoadError as exc:
        pytest.skip(f"cannot fetch {name}: {exc}")


def _run(tmp_path, name: str) -> dict:
    out, js = tmp_path / "art", tmp_path / "r.json"
    code = thirdparty.main(["--tiny", "--only", name, "--out", str(out), "--json", str(js)])
    assert code == 0
    doc = json.loads(js.read_text())
    assert doc["tiny"] is True
    (r,) = doc["results"]
    assert r["model"] == name
    rows = {row["method"]: row for row in r["rows"]}
    assert set(rows) == METHODS
    for m, row in rows.items():
        assert row["size_bytes"] > 0
        assert row["p50_ms_b1"] > 0
        if m != "fp32 (source file)":
            assert math.isfinite(row["sqnr_db_min"])
    assert rows["fp32 (source file)"]["size_x"] == 1.0
    assert r["report_json_exists"]
    assert (out / name / "artifact" / "report.json").is_file()
    assert set(r["edgeopt_report"]) == {"fp32 source", "fp32 onnxruntime", "int8 onnxruntime"}
    assert r["checks"] and all(c["check"].startswith(name) for c in r["checks"])
    return r


def test_tiny_ppocr_cls(tmp_path):
    _fetch_or_skip("ppocr-cls")
    r = _run(tmp_path, "ppocr-cls")
    rows = {row["method"]: row for row in r["rows"]}
    # Measured on --tiny: 100% agreement and SQNR 15.4 dB (ORT's quantize_static 14.4).
    # Calibrating on inputs scaled by 1/16 (activation ranges 16x too small) gives 37.5%
    # and 4.1 dB: both bounds fail under that break.
    int8 = rows["edgeopt optimize int8"]
    assert int8["argmax_agreement"] >= 95
    assert int8["sqnr_db_min"] >= 12
    assert len(r["checks"]) == 2


def test_tiny_silero_vad(tmp_path):
    if not thirdparty.have_espeak():
        pytest.skip("espeak-ng is not installed (silero-vad's speech comes from it)")
    _fetch_or_skip("silero-vad")
    r = _run(tmp_path, "silero-vad")
    vad = r["vad"]
    assert set(vad) == {"fp32", "ORT quantize_static defaults", "edgeopt optimize int8"}
    assert vad["fp32"]["agreement_pct"] == 100.0
    assert vad["fp32"]["frames"] > 0
    # 99.37% of 158 frames here (one frame is 0.63 points); the bench's own bar is 99%.
    assert vad["edgeopt optimize int8"]["agreement_pct"] >= 98
    assert len(r["checks"]) == 3
