"""--precision auto (issue 4): real runs on a TinyCNN trained on digits (ONNX Runtime on
x86_64 and aarch64, TVM for cuda), the report, and the CLI. The pick rule alone is
tested in test_rule.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import edgeopt.auto.run
from edgeopt.auto import AutoOptions, auto_compile
from edgeopt.cli import main
from edgeopt.core.data import load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.evaluate import Latency
from edgeopt.runtime import load

FAST = dict(eval_limit=200, repeats=6, rounds=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(make_cnn, digits, train_tiny):
    """A TinyCNN trained for a second: int8 is then within tolerance of fp32, so the pick
    turns on latency alone."""
    torch.manual_seed(0)
    return train_tiny(make_cnn(seed=0, width=8, hidden=32),
                      digits.train.x.astype(np.float32) / 255, digits.train.y, epochs=10)


@pytest.fixture(scope="module")
def ort_run(trained, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "art"
    res = auto_compile(trained, digits, target="x86_64", backend="onnxruntime", out=out,
                       options=AutoOptions(**FAST), model_name="tiny", log=lambda m: None)
    return res, out


def test_every_candidate_is_measured_and_the_pick_is_never_slower(ort_run):
    res, _ = ort_run
    by = {c.name: c for c in res.candidates}
    assert list(by) == ["fp32", "int8", "w4a8"]
    fp32 = by["fp32"]
    assert fp32.accuracy > 80  # trained: decisions are real, not coin flips
    for c in res.candidates:
        assert set(c.latency_ms) == {1, 32} and all(v > 0 for v in c.latency_ms.values())
        assert c.accuracy_on == c.latency_on == "this machine" and c.why
    assert by["int8"].size_bytes < 0.5 * fp32.size_bytes
    assert by["w4a8"].size_bytes < by["int8"].size_bytes
    assert sum(c.picked for c in res.candidates) == 1
    pick = res.picked
    assert pick.accuracy >= fp32.accuracy - 0.5
    assert all(pick.latency_ms[b] <= fp32.latency_ms[b] for b in (1, 32))


def test_the_artifact_is_the_pick_and_lists_every_candidate(ort_run):
    res, out = ort_run
    pred = load(out)  # checksums cover the reports too
    manifest = pred.manifest
    assert manifest["precision"] == res.picked.precision
    assert manifest["auto"]["picked"] == res.picked.name
    assert {"report.json", "report.md", "report.html"} <= set(manifest["files"])
    report = json.loads((out / "report.json").read_text())
    cands = report["meta"]["candidates"]
    assert cands == manifest["auto"]["candidates"]
    assert [c["name"] for c in cands] == ["fp32", "int8", "w4a8"]
    assert [c["picked"] for c in cands].count(True) == 1
    assert all(set(c["latency_ms"]) == {"1", "32"} for c in cands)
    assert set(report["meta"]["not_built"]) == {"mixed"}  # asked for explicitly only
    assert [s["name"] for s in report["stages"]] == [f"{n} onnxruntime"
                                                     for n in ("fp32", "int8", "w4a8")]
    md = (out / "report.md").read_text()
    assert "## Candidates" in md and "Pick rule" in md and "[{" not in md
    rows = [line for line in md.splitlines() if line.startswith(("| fp32 |", "| int8 |",
                                                                  "| w4a8 |"))]
    assert len(rows) == 3 and sum(" yes |" in r for r in rows) == 1


def _fake_latency(speed: dict[str, dict[int, float]]):
    """measure_latency stand-in: p50 by the artifact's precision and the batch size."""
    def fake(runnable, shape, *, batch=1, **kw):
        p50 = speed[runnable.manifest["precision"]][batch]
        return Latency(batch=batch, p50_ms=p50, p90_ms=p50, mean_ms=p50, repeats=1, threads=1)
    return fake


@pytest.mark.parametrize("speed, expected", [
    ({"fp32": {1: 1.0, 32: 10.0}, "int8": {1: 0.5, 32: 4.0}, "w4a8": {1: 0.6, 32: 5.0}}, "int8"),
    ({"fp32": {1: 1.0, 32: 10.0}, "int8": {1: 1.5, 32: 12.0}, "w4a8": {1: 2.0, 32: 9.0}}, "fp32"),
])
def test_injected_latency_decides_what_ships(trained, digits, tmp_path, monkeypatch, speed,
                                             expected):
    monkeypatch.setattr(edgeopt.auto.run, "measure_latency", _fake_latency(speed))
    res = auto_compile(trained, digits, target="x86_64", out=tmp_path / "art",
                       options=AutoOptions(**FAST, candidates=("int8", "w4a8")),
                       log=lambda m: None)
    assert res.picked.name == expected
    assert load(tmp_path / "art").manifest["precision"] == expected
    assert res.candidates[0].latency_ms == speed["fp32"]


def test_aarch64_is_measured_by_emulation_or_proxy_and_says_so(trained, digits, tmp_path):
    res = auto_compile(trained, digits, target="rpi4", out=tmp_path / "art",
                       options=AutoOptions(**FAST, candidates=("int8",)), log=lambda m: None)
    for c in res.candidates:
        assert c.latency_on == "x86_64 build on this machine (proxy)"
        assert ("rpi4 artifact under qemu-user emulation (cortex-a72)" == c.accuracy_on
                or c.accuracy_on.startswith("x86_64 build on this machine (proxy; no emulation"))
    note = res.report.meta["measured"]
    assert note.startswith("rpi4 artifacts cannot run natively here") and "proxy" in note
    assert res.manifest["target"] == "rpi4"
    assert note in (tmp_path / "art" / "report.md").read_text()


def test_cuda_measures_fp16_accuracy_on_the_cpu_but_never_ships_it_untimed(trained, digits,
                                                                            tmp_path):
    pytest.importorskip("tvm")
    res = auto_compile(trained, digits, target="cuda", backend="tvm", out=tmp_path / "art",
                       options=AutoOptions(**FAST), log=lambda m: None)
    fp32, fp16 = res.candidates
    assert (fp32.name, fp16.name, fp16.precision) == ("fp32", "fp16", "fp16")
    assert res.picked is fp32 and res.manifest["precision"] == "fp32"
    assert fp32.accuracy_on == "x86_64 build on this machine (proxy; no GPU here)"
    assert fp16.accuracy_on.startswith("the fp16 module built for this") and "proxy" in fp16.accuracy_on
    # The fp16 module's own numbers: close to fp32 but computed in half precision.
    assert abs(fp16.accuracy - fp32.accuracy) <= 1.0 and fp16.agreement >= 99.0
    assert fp16.latency_ms == {} and fp16.why.startswith(
        f"{fp16.accuracy - fp32.accuracy:+.2f} points vs fp32; not timed: fp16 speed needs the GPU")
    assert res.manifest["device"] == "cuda" and res.manifest["auto"]["not_built"] == {}
    note = res.report.meta["measured"]
    assert "fp16 module built for this" in note and "latency from x86_64 build" in note
    assert "| fp16 | fp16 |" in (tmp_path / "art" / "report.md").read_text()


def test_a_candidate_the_target_lacks_is_refused(trained, digits, tmp_path):
    with pytest.raises(ConfigError, match="target cuda does not support candidate 'w4a8'"):
        auto_compile(trained, digits, target="cuda", backend="tvm", out=tmp_path / "a",
                     options=AutoOptions(candidates=("w4a8",)))
    with pytest.raises(ConfigError, match="target cuda has no backend 'onnxruntime'"):
        auto_compile(trained, digits, target="cuda", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_compile_precision_auto(model_factories, tmp_path, capsys):
    out = tmp_path / "art"
    rc = main(["compile", f"{model_factories}:tiny_cnn", "--precision", "auto", "--data",
               "digits", "--eval-limit", "100", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "(picked by --precision auto) written to" in stdout
    assert "measured on this machine" in stdout
    for name in ("fp32", "int8", "w4a8"):
        assert f"{name} onnxruntime" in stdout and f" {name}: " in stdout
    manifest = load(out).manifest
    assert [c["name"] for c in manifest["auto"]["candidates"]] == ["fp32", "int8", "w4a8"]


def test_cli_auto_on_a_float_model_needs_data(model_factories, tmp_path, capsys):
    rc = main(["compile", f"{model_factories}:tiny_cnn", "--precision", "auto",
               "--input-shape", "1,8,8", "--out", str(tmp_path / "art")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1
    assert "--precision auto needs --data" in err
    assert not (tmp_path / "art").exists()


def test_cli_bad_tolerance_is_one_line(model_factories, tmp_path, capsys):
    rc = main(["compile", f"{model_factories}:tiny_cnn", "--precision", "auto", "--data",
               "digits", "--tolerance", "-1", "--out", str(tmp_path / "art")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "tolerance must be >= 0" in err


def test_cli_auto_keeps_an_already_quantized_model(model_factories, tmp_path, capsys):
    q = tmp_path / "q.pt2"
    assert main(["compress", f"{model_factories}:tiny_cnn", "--data", "digits", "--recipe",
                 "int8", "--out", str(q)]) == 0
    rc = main(["compile", str(q), "--precision", "auto", "--out", str(tmp_path / "art")])
    assert rc == 0
    assert "int8 onnxruntime artifact for x86_64 written" in capsys.readouterr().out
    assert "auto" not in load(tmp_path / "art").manifest
