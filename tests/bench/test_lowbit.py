"""bench/lowbit.py end to end on briefly trained models (digits, --tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import lowbit  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lowbit")
    code = lowbit.main(["--tiny", "--out", str(out / "art"), "--json", str(out / "r.json")])
    return code, out, json.loads((out / "r.json").read_text())


def test_every_experiment_produces_artifact_rows(tiny_run):
    code, out, res = tiny_run
    assert code == 0
    rows = res["rows"]
    assert {r["experiment"] for r in rows} == set(lowbit.CHECKS)
    for r in rows:
        assert 0 <= r["top1"] <= 100 and r["bytes"] > 0
        assert r["drop"] == pytest.approx(r["fp32_top1"] - r["top1"])
    by = {(r["arch"], r["label"]): r for r in rows}
    # Size follows the bit width: packed artifacts shrink with the weights.
    sizes = [by[("resnet_small", f"uniform W{b}A8 PTQ")]["bytes"] for b in (2, 3, 5, 6, 8)]
    assert sizes == sorted(sizes) and sizes[0] < 0.4 * sizes[-1]
    assert by[("resnet_small", "W4A8 AdaRound + bias corr.")]["precision"] == "w4a8"
    assert by[("resnet_small", "pow2 4-bit PTQ + QAT")]["qat"]["steps"] == 4
    mixed = by[("resnet_small", "mixed @ uniform 4-bit size")]
    assert mixed["bytes"] <= by[("resnet_small", "uniform W4A8 PTQ")]["bytes"]
    assert set(mixed["policy"].values()) <= {2, 3, 4, 5, 6, 8}


def test_checks_and_pareto_plot(tiny_run):
    _, out, res = tiny_run
    texts = [c[0] for c in res["checks"]]
    assert any("AdaRound within 1.5 points" in t for t in texts)
    assert any("2-bit QAT reaches" in t for t in texts)
    png = out / "art" / "pareto-resnet_small.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
