"""edgeopt optimize hf:PATH end to end through the CLI on a tiny BERT and a small jsonl."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

TEXTS = ["the cat sat on the mat", "a good day", "the dog sat", "fortune is good",
         "a dog, a cat, a mat.", "is the mat good?", "the cat is good", "a fortune a day"]


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n"
                            for i, t in enumerate(TEXTS * 3)))
    return path


def _optimize(*args):
    return subprocess.run([sys.executable, "-m", "edgeopt.cli", "optimize", *args, "--no-progress",
                           "--threads", "1", "--force"], capture_output=True, text=True,
                          timeout=300, env={"HF_HUB_OFFLINE": "1", **__import__("os").environ})


def test_optimize_embedding_int8_end_to_end(tiny_hf, texts, tmp_path):
    out = tmp_path / "art"
    res = _optimize(f"hf:{tiny_hf}", "--task", "embedding", "--data", str(texts),
                    "--recipe", "int8", "--max-length", "16", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "nearest-neighbour agreement" in res.stderr
    report = json.loads((out / "report.json").read_text())
    int8 = report["stages"][1]
    assert int8["precision"] == "int8" and int8["fidelity"]["cosine_mean"] > 0.99
    from edgeopt import runtime

    emb = runtime.load(out).predict(["the cat sat"])
    assert emb.shape == (1, 32)


def test_bad_hf_folder_is_one_line(tmp_path, texts):
    res = _optimize(f"hf:{tmp_path}", "--data", str(texts), "--out", str(tmp_path / "o"))
    assert res.returncode != 0
    line = res.stderr.strip().splitlines()[-1]
    assert "not a transformers model folder" in line and "Traceback" not in res.stderr


def test_optimize_embedding_w4_text_end_to_end(tiny_hf, texts, tmp_path):
    out = tmp_path / "art"
    res = _optimize(f"hf:{tiny_hf}", "--data", str(texts), "--recipe", "w4-text",
                    "--max-length", "16", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    inits = {i.name for i in graph.initializer}
    assert {"MatMulNBits", "GatherBlockQuantized"} <= ops
    # every weight MatMul went 4-bit; only activation x activation MatMuls (Q.K^T, P.V) stay
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    report = json.loads((out / "report.json").read_text())
    w4 = report["stages"][1]
    assert w4["precision"] == "w4" and w4["size_bytes"] < 0.5 * report["stages"][0]["size_bytes"]
    assert w4["fidelity"]["cosine_mean"] > 0.8
    from edgeopt import runtime

    assert runtime.load(out).predict(["the cat sat"]).shape == (1, 32)


def test_int8_text_fidelity_recipe_end_to_end(tiny_hf, texts, tmp_path):
    """The text_int8 step with a fidelity target, through the CLI: the options reach
    quantize_text and its record reaches the manifest and the report."""
    out = tmp_path / "art"
    res = _optimize(f"hf:{tiny_hf}", "--data", str(texts), "--recipe", "int8-text-fidelity",
                    "--max-length", "16", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    int8 = report["stages"][1]
    assert int8["name"] == "int8 onnxruntime" and int8["precision"] == "int8"
    record = report["meta"]["compression"]
    assert record["target_cos"] == 0.9995 and record["gptq_weights"] > 0
    assert record["calib_cos"]["mean"] >= 0.9995 or len(record["fallback_float"]) == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert int8["fidelity"]["cosine_mean"] > 0.99


def test_int8_text_fast_recipe_reaches_quantize_text(tiny_hf, texts, tmp_path):
    """The int8-text-fast recipe's split_target reaches quantize_text's record (the tiny
    random BERT's activations cost nothing, so nothing needs splitting: an int8 model of
    plain dynamic MatMuls)."""
    out = tmp_path / "art"
    res = _optimize(f"hf:{tiny_hf}", "--data", str(texts), "--recipe", "int8-text-fast",
                    "--max-length", "16", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads((out / "report.json").read_text())["meta"]["compression"]
    assert record["split_target"] == 0.995 and record["dynamic_int8_outliers_split"] == []
    assert record["weight_only_int8"] == [] and record["dynamic_int8"]


def test_w4_text_on_a_torch_model_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "edgeopt.cli", "optimize",
                          "edgeopt.zoo.resnet:resnet_small", "--data", "digits", "--recipe", "w4-text", "--out", str(tmp_path / "o"),
                          "--no-progress", "--eval-limit", "32"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "text_w4 applies to hf: text models" in res.stderr.strip().splitlines()[-1]


def _then_int8(tiny_hf, texts, tmp_path, step: str, max_length: int = 16):
    """The report, artifact folder and stderr of ``step`` then int8, on the tiny BERT."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: tiny\nsteps:\n  - {step}\n"
                      "  - quantize: {weights: {bits: 8}, activations: {bits: 8}}\n")
    out = tmp_path / "art"
    res = _optimize(f"hf:{tiny_hf}", "--data", str(texts), "--recipe", str(recipe),
                    "--max-length", str(max_length), "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads((out / "report.json").read_text()), out, res.stderr


def test_student_int8_text_end_to_end(tiny_hf, texts, tmp_path):
    report, out, _ = _then_int8(tiny_hf, texts, tmp_path,
                                "text_student: {layers: 1, steps: 30, lr: 1.0e-3, spans: 1}")
    names = [s["name"] for s in report["stages"]]
    assert names == ["fp32 onnxruntime", "student fp32 onnxruntime", "student int8 onnxruntime"]
    student = report["meta"]["compression"]["text_student"]
    assert student["layers"] == 1 and student["teacher_layers"] == 2 and student["kept"] == [1]
    # distillation moved the student towards the teacher (30 steps, lr 1e-3, 24 texts): a
    # random tiny BERT's one layer starts at cos ~0.998; its distance to the teacher halves
    assert 1 - student["cos_last"] < 0.7 * (1 - student["cos_first"])
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    softmaxes = sum(1 for n in graph.node if n.op_type == "Softmax")
    assert softmaxes == 1  # one attention layer left, of two
    assert report["stages"][1]["fidelity"]["cosine_mean"] > 0.5


def test_student_distils_on_a_file_of_more_texts(tiny_hf, texts, tmp_path):
    extra = tmp_path / "more.txt"
    long = " ".join(["the cat sat on the mat"] * 4)  # 24 words: over 16 tokens
    extra.write_text("".join(f"the {w} sat on a mat number {i}\n" for i, w in
                             enumerate(["cat", "dog", "fox", "owl", "bee"] * 2))
                     + f"{long}\n{long} again\n")
    report, _, stderr = _then_int8(tiny_hf, texts, tmp_path, "text_student: {layers: 1, "
                                   f"steps: 10, lr: 1.0e-3, texts: {extra}}}")
    # the 12 lines join the training texts as distillation inputs, and the report says so
    assert f"and 12 texts of {extra}" in stderr
    # the two cut to the maximum length are counted, apart from the dataset's own
    assert f"2 of 12 texts of {extra} are longer than the maximum length (16 tokens)" in stderr
    assert report["meta"]["compression"]["text_student"]["config"]["texts"] == str(extra)


def test_a_missing_file_of_more_texts_is_one_line(tiny_hf, texts, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    missing = tmp_path / "nope.txt"
    recipe.write_text(f"name: tiny\nsteps:\n  - text_student: {{layers: 1, steps: 5, "
                      f"texts: {missing}}}\n")
    res = _optimize(f"hf:{tiny_hf}", "--data", str(texts), "--recipe", str(recipe),
                    "--max-length", "16", "--out", str(tmp_path / "o"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert str(missing) in line and "cannot read" in line


def test_heads_then_int8_end_to_end(tiny_hf, texts, tmp_path):
    # max length 6 tokens cuts the texts of 5 words or more ([CLS] and [SEP] take 2)
    report, out, stderr = _then_int8(tiny_hf, texts, tmp_path, "text_heads: {fraction: 0.5, "
                                     "importance_batches: 1, steps: 20}", max_length=6)
    # said once, for every text used (the pipeline has three tokenizer users), with the count
    lines = [ln for ln in stderr.splitlines() if "longer than the maximum length" in ln]
    assert len(lines) == 1, stderr
    said = re.search(r": warning: (\d+) of 24 \S+ texts \(training and evaluation\) are longer "
                     r"than the maximum length \(6 tokens\): truncated$", lines[0])
    assert said and 0 < int(said[1]) < 24, lines
    assert "Loading weights" not in stderr  # transformers' own bar, under --no-progress
    assert [s["name"] for s in report["stages"]] == [
        "fp32 onnxruntime", "pruned fp32 onnxruntime", "pruned int8 onnxruntime"]
    heads = report["meta"]["compression"]["text_heads"]
    assert heads["heads"] == 8 and heads["heads_kept"] == 4
    assert report["stages"][1]["fidelity"]["cosine_mean"] > 0.9
    import onnx
    from onnx import numpy_helper

    # the query projections shrink: the tiny BERT's 32 -> 8 or 16 columns a layer
    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out / "model.onnx"))
            .graph.initializer}
    widths = sorted({a.shape[-1] for n, a in init.items() if a.ndim == 2 and a.shape[0] == 32})
    assert any(w < 32 for w in widths), widths


def test_qat_then_int8_end_to_end(tiny_hf, texts, tmp_path):
    report, out, _ = _then_int8(tiny_hf, texts, tmp_path, "text_qat: {steps: 10}")
    assert [s["name"] for s in report["stages"]] == [
        "fp32 onnxruntime", "qat fp32 onnxruntime", "qat int8 onnxruntime"]
    qat = report["meta"]["compression"]["text_qat"]
    assert qat["linears"] == 13 and qat["steps"] == 10
    # fine-tuning sized steps from the float model: it stays the float model's twin
    assert report["stages"][1]["fidelity"]["cosine_mean"] > 0.999
    assert report["stages"][2]["precision"] == "int8"
    assert report["stages"][2]["fidelity"]["cosine_mean"] > 0.99
