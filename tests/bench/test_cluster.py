"""bench/cluster.py end to end on a briefly trained model (digits, --tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import cluster  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster")
    code = cluster.main(["--tiny", "--clusters", "16", "--out", str(out / "art"),
                         "--json", str(out / "r.json")])
    return code, out, json.loads((out / "r.json").read_text())


def test_rows_come_from_artifacts(tiny_run):
    code, out, res = tiny_run
    assert code == 0
    by = {r["label"]: r for r in res["rows"]}
    assert set(by) == {label for label, _ in cluster.plan([16])}
    for r in by.values():
        # The tiny model is trained (~98%): 16 shared values per layer cost at most a few
        # of the 359 test images (0 to 6 here); wrong codes or centroids cost most of them.
        assert r["fp32_top1"] >= 90 and r["top1"] >= r["fp32_top1"] - 3, r
        assert r["distinct_max"] <= 16
        assert r["drop"] == pytest.approx(r["fp32_top1"] - r["top1"])
        # 4-bit codes: about an eighth of the fp32 model.onnx, whatever the training.
        assert 0.1 < r["ratio"] <= 0.16
        assert (out / "art" / "".join(c if c.isalnum() else "-" for c in r["label"])
                / "model.onnx").is_file()
    tuned = by["16 clusters + centroid fine-tune"]
    assert tuned["finetune"]["steps"] == cluster.TINY_FINETUNE["steps"]
    assert by["16 clusters, k-means (linear init)"]["finetune"] is None
    # Fine-tuning moves centroids, not codes: the file has the same size.
    assert tuned["bytes"] == by["16 clusters, k-means (linear init)"]["bytes"]
    assert res["fp32"]["bytes"] > 7 * tuned["bytes"]


def test_checks(tiny_run):
    _, _, res = tiny_run
    texts = [c[0] for c in res["checks"]]
    assert any("model.onnx <= 0.16x fp32" in t for t in texts)
    assert any("within 1 point of fp32" in t for t in texts)
    assert all(ok for text, ok in res["checks"] if "distinct values" in text)
