"""bench/compare_peers.py end to end on briefly trained tiny models (digits, --tiny)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a top-level folder, not part of the edgeopt package

from bench import compare_peers  # noqa: E402

HAS_NNCF = importlib.util.find_spec("nncf") is not None
METHODS = [compare_peers.FP32, compare_peers.ORT, compare_peers.NNCF, compare_peers.EDGEOPT]
ROW_FIELDS = {"method", "top1", "agreement", "size_bytes", "size_x_fp32", "latency_p50_ms",
              "latency_vs_ort_int8", "notes"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    # Module scope: one run (both archs trained for seconds, then quantized by each
    # method; ~45 s on 2 cores) serves every test below.
    out = tmp_path_factory.mktemp("peers") / "results.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = compare_peers.main(["--tiny", "--json", str(out)])
    return code, buf.getvalue(), json.loads(out.read_text())


def _table_row(text: str, method: str) -> list[str]:
    """Every table line for ``method``: its name then a percentage accuracy."""
    return re.findall(rf"^{re.escape(method)}\s+(\d+\.\d+)%", text, flags=re.M)


def test_edgeopt_int8_keeps_the_accuracy_of_the_trained_models(tiny_run):
    _, _, data = tiny_run
    for result in data["results"]:
        rows = {r["method"]: r for r in result["rows"]}
        fp32, ours, ort = rows[compare_peers.FP32], rows[compare_peers.EDGEOPT], \
            rows[compare_peers.ORT]
        # Trained for seconds: 96% (resnet), 86% (mobilenet) on 200 test images.
        assert fp32["top1"] >= 80, result["model"]
        # 100% and 99% agreement here. A quantizer with a wrong scale, or one that
        # quantizes nothing, misses one of these.
        assert ours["agreement"] >= 97 and ours["top1"] >= fp32["top1"] - 1.5, ours
        assert ours["top1"] >= ort["top1"] - 1.0  # one image is 0.5 points
        assert ours["size_x_fp32"] <= 0.35  # 0.269x and 0.344x: the weights are int8
    statuses = {c["check"]: c["status"] for c in data["results"][0]["checks"]}
    assert statuses["size <= 0.27x fp32"] == "PASS"  # resnet_small


def _fake_result(status: str) -> dict:
    return {"model": "m", "checks": [{"check": "c", "status": status, "detail": "d"}]}


@pytest.mark.parametrize("status, strict, code", [
    ("FAIL", True, 1), ("FAIL", False, 0), ("PASS", True, 0), ("SKIP", True, 0),
])
def test_strict_exits_1_only_when_a_check_fails(monkeypatch, status, strict, code):
    monkeypatch.setattr(compare_peers, "bench_model", lambda *a: _fake_result(status))
    argv = ["--tiny", "--model", "resnet_small"] + (["--strict"] if strict else [])
    assert compare_peers.main(argv) == code


@pytest.mark.parametrize("method", METHODS)
def test_table_rows_show_the_measured_accuracy(tiny_run, method):
    if method == compare_peers.NNCF and not HAS_NNCF:
        pytest.skip("nncf is not importable here, so its row only says why")
    _, text, data = tiny_run
    accs = _table_row(text, method)
    assert len(accs) == 2, f"expected one {method!r} row per model:\n{text}"  # both archs
    want = [f"{row['top1']:.2f}" for r in data["results"] for row in r["rows"]
            if row["method"] == method]
    assert accs == want


def test_table_prints_acceptance_checks(tiny_run):
    _, text, _ = tiny_run
    assert "acceptance checks:" in text
    assert re.search(r"^\s+(PASS|FAIL)\s+latency b1 <= 1.05x ORT int8", text, flags=re.M)
    assert re.search(r"^\s+(PASS|FAIL)\s+size <= 0.27x fp32", text, flags=re.M)  # resnet only


def test_json_has_the_fields(tiny_run):
    _, _, data = tiny_run
    assert data["missing"] == []
    assert [r["model"] for r in data["results"]] == ["resnet_small", "mobilenetv2_small"]
    for result in data["results"]:
        assert {"model", "data", "n_eval", "n_calib", "threads", "repeats", "rows",
                "checks"} <= set(result)
        assert [row["method"] for row in result["rows"]] == METHODS
        for row in result["rows"]:
            if row["method"] == compare_peers.NNCF and not HAS_NNCF:
                continue
            assert ROW_FIELDS <= set(row), row["method"]
            assert isinstance(row["top1"], float)
            assert set(row["latency_p50_ms"]) == {"1", "32"}
            assert all(v > 0 for v in row["latency_p50_ms"].values())
        for check in result["checks"]:
            assert check["status"] in ("PASS", "FAIL", "SKIP")
            assert check["check"] and check["detail"]


def test_missing_reference_weights_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))  # an empty cache
    code = compare_peers.main(["--model", "resnet_small", "--data", "digits"])
    assert code == 2
    assert "no reference weights" in capsys.readouterr().err


def test_a_failing_peer_gets_a_row_saying_why(monkeypatch, capsys, tmp_path):
    def broken(*_args, **_kwargs):
        raise ImportError("No module named 'nncf'")

    monkeypatch.setattr(compare_peers, "nncf_int8", broken)
    out = tmp_path / "r.json"
    code = compare_peers.main(["--tiny", "--model", "resnet_small", "--repeats", "2",
                               "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^NNCF int8\s+FAILED: ImportError: No module named 'nncf'", text, flags=re.M)
    assert re.search(r"^\s+SKIP\s+accuracy >= NNCF int8", text, flags=re.M)
    rows = json.loads(out.read_text())["results"][0]["rows"]
    assert rows[2]["top1"] is None and rows[2]["notes"].startswith("FAILED")
    assert isinstance(rows[3]["top1"], float)  # edgeopt still measured
