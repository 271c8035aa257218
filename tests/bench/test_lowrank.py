"""bench/lowrank.py end to end on a briefly trained model (digits, --tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import lowrank  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lowrank")
    code = lowrank.main(["--tiny", "--strict", "--out", str(out / "art"),
                         "--json", str(out / "r.json")])
    return code, out, json.loads((out / "r.json").read_text())


def test_rows_meet_the_budget_from_artifacts(tiny_run):
    code, out, res = tiny_run
    assert code == 0
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == set(lowrank.METHODS)
    fp32 = res["fp32"]
    for method, r in rows.items():
        assert r["params_before"] == fp32["params"] == 308_074  # resnet_small
        assert r["param_reduction"] >= 0.4
        saved = sum(v["params_before"] - v["params_after"] for v in r["layers"].values())
        assert r["params_before"] - r["params_after"] == saved
        # fp32 ONNX: the file shrinks with the parameters (4 bytes each, plus the graph).
        assert r["bytes"] < fp32["bytes"] - 4 * saved + 64_000
        assert r["drop"] == pytest.approx(r["fp32_top1"] - r["top1"])
        assert r["finetune"]["steps"] == 4 and r["finetune"]["distill"] is True
        assert min(r["b1_ms"], r["b32_ms"], r["fp32_b1_ms"]) > 0
        assert (out / "art" / f"{method}-finetuned" / "manifest.json").is_file()
    assert all(v["kind"] == "tucker2" for k, v in rows["tucker2"]["layers"].items()
               if len(v["shape"]) == 4 and v["shape"][2] > 1)
    assert all(len(v["ranks"]) == 1 for v in rows["cp"]["layers"].values())


def test_checks_name_the_figures(tiny_run):
    _, _, res = tiny_run
    texts = [c[0] for c in res["checks"]]
    assert any(t.startswith("tucker2 parameters 308,074 -> ") for t in texts)
    assert any("tucker2 fine-tuned within 1.5 points of fp32" in t for t in texts)
