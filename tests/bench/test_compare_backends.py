"""bench/compare_backends.py end to end on a briefly trained ResNet (digits, --tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tvm", reason="Apache TVM is not installed (pip install 'edgeopt[tvm]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import compare_backends  # noqa: E402
from edgeopt.compile.host import host_isa_target  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # One model keeps this under a minute on two busy cores; both run the same code.
    out = tmp_path_factory.mktemp("backends") / "r.json"
    code = compare_backends.main(["--tiny", "--model", "resnet_small", "--quiet",
                                  "--json", str(out)])
    return code, json.loads(out.read_text())


def test_every_backend_and_build_is_a_row(tiny_run):
    code, res = tiny_run
    assert code == 0
    assert res["host_isa"] == host_isa_target() and res["data"] == "digits"
    (model,) = res["models"]
    rows = {r["label"]: r for r in model["rows"]}
    tvm_targets = list(dict.fromkeys(["x86_64", host_isa_target()]))
    expected = ["pytorch eager fp32", "onnxruntime fp32",
                *(f"tvm fp32 {t}" for t in tvm_targets), "onnxruntime int8",
                *(f"tvm int8 {t}" for t in tvm_targets)]
    assert list(rows) == expected
    eager = rows["pytorch eager fp32"]
    assert eager["speedup_vs_eager"] == {"1": 1.0, "32": 1.0} and eager["max_abs_vs_eager"] == 0
    for r in rows.values():
        assert r["bytes"] > 0
        assert set(r["p50_ms"]) == {"1", "32"} and all(v > 0 for v in r["p50_ms"].values())
        assert len(r["rounds_p50_ms"]["1"]) == 2  # --tiny: two interleaved rounds
        assert r["speedup_vs_eager"]["1"] == pytest.approx(
            eager["p50_ms"]["1"] / r["p50_ms"]["1"])
    # fp32 artifacts reproduce PyTorch; int8 ones are smaller and close to it.
    for label in ("onnxruntime fp32", *(f"tvm fp32 {t}" for t in tvm_targets)):
        assert rows[label]["max_abs_vs_eager"] <= 1e-4
        assert rows[label]["top1"] == eager["top1"]  # the same predictions, image for image
    assert rows["onnxruntime int8"]["bytes"] < 0.3 * rows["onnxruntime fp32"]["bytes"]
    assert rows["onnxruntime int8"]["agreement"] >= 80


def test_checks_cover_both_tvm_builds(tiny_run):
    _, res = tiny_run
    checks = res["models"][0]["checks"]
    texts = [c["text"] for c in checks]
    for t in dict.fromkeys(["x86_64", host_isa_target()]):
        match = [c for c in checks if c["text"].startswith(f"tvm fp32 {t} logits match")]
        assert len(match) == 1 and match[0]["ok"]
        assert any(x.startswith(f"tvm fp32 {t} no slower than PyTorch eager at batch 1")
                   for x in texts)
