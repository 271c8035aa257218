"""bench/prune.py end to end on a briefly trained model (digits, --tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import prune  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune")
    code = prune.main(["--tiny", "--out", str(out / "art"), "--json", str(out / "r.json")])
    return code, out, json.loads((out / "r.json").read_text())


def test_structured_rows_come_from_artifacts(tiny_run):
    code, out, res = tiny_run
    assert code == 0  # without --strict a failed check is reported, not fatal
    rows = {r["label"]: r for r in res["rows"] if r["experiment"] == "structured"}
    dense, pruned = rows["fp32"], rows["structured"]
    assert pruned["macs"] <= 0.55 * dense["macs"]
    assert pruned["params"] < dense["params"] and pruned["bytes"] < dense["bytes"]
    assert pruned["drop"] == pytest.approx(dense["top1"] - pruned["top1"])
    assert pruned["lat_b32_ratio"] == pytest.approx(pruned["lat_b32_ms"] / dense["lat_b32_ms"])
    assert pruned["finetune"]["steps"] == 6
    assert all(after % 16 == 0 for _, after in pruned["channels"].values() if after != 10)
    assert (out / "art" / "structured" / "manifest.json").is_file()


def test_unstructured_rows_and_checks(tiny_run):
    _, _, res = tiny_run
    rows = {r["label"]: r for r in res["rows"] if r["experiment"] == "unstructured"}
    assert set(rows) == {"dense", "sparse50", "sparse80"}
    assert rows["sparse50"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert rows["sparse80"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    # Zeros are stored all the same; only the compressed size falls, more with more zeros.
    assert rows["sparse80"]["bytes"] == pytest.approx(rows["dense"]["bytes"], rel=0.01)
    assert rows["sparse80"]["zlib_bytes"] < rows["sparse50"]["zlib_bytes"] < \
        rows["dense"]["zlib_bytes"]
    texts = [c[0] for c in res["checks"]]
    assert any("within 1.5 points" in t for t in texts)
    assert any("<= 0.65x unpruned" in t for t in texts)
    assert sum("zlib artifact smaller" in t for t in texts) == 2


def test_only_rejects_unknown_experiments():
    with pytest.raises(SystemExit):
        prune.main(["--tiny", "--only", "quantize"])
