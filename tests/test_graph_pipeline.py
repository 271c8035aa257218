"""optimize() on ONNX files through the ONNX-graph path: exports made the way users make
them, multi-input models with int64 ids, a constant scalar, state on axis 1, and label-free
evaluation."""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeopt.cli import main
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.pipeline import OptimizeOptions, optimize
from edgeopt.recipes import load_recipe
from edgeopt.runtime import load


def _small(recipe="int8", calib=64):
    r = load_recipe(recipe)
    r.steps = [s.replace(calib_size=calib) for s in r.steps]
    return r


def _opts(**kw):
    return OptimizeOptions(recipe=kw.pop("recipe", _small()), eval_limit=kw.pop("eval_limit", 120),
                           batch=4, latency_repeats=10, threads=1, progress=False, **kw)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_cnn(digits, make_cnn, train_tiny):
    x = Preprocess()(digits.train.x)
    return train_tiny(make_cnn(seed=0, width=16, hidden=256), x, digits.train.y, epochs=6,
                      lr=3e-3)


@pytest.fixture(scope="module")
def legacy_onnx(trained_cnn, tmp_path_factory):
    """torch.onnx's legacy exporter, opset 17, dynamic batch: as users write it."""
    f = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    torch.onnx.export(trained_cnn, (torch.zeros(1, 1, 8, 8),), str(f), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return f


def test_legacy_onnx_int8_through_the_graph_path(legacy_onnx, digits, tmp_path):
    out = tmp_path / "art"
    logs = []
    report = optimize(str(legacy_onnx), digits, out=out, options=_opts(), log=logs.append)
    names = [s.name for s in report.stages]
    assert names == ["fp32 source", "fp32 onnxruntime", "int8 onnxruntime"]
    src, fp32, int8 = report.stages
    assert report.meta["path"] == "onnx-graph"
    # The simplified fp32 graph computes what the user's file computes.
    assert fp32.fidelity["headline"]["sqnr_db_min"] > 80
    assert int8.fidelity["headline"]["sqnr_db_min"] > 20
    assert int8.agreement >= 95
    assert abs(int8.accuracy_top1 - src.accuracy_top1) <= 3
    assert int8.size_bytes < 0.45 * src.size_bytes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert manifest["precision"] == "int8"
    pred = load(out)
    raw = digits.test.x[:5]
    assert pred.predict(raw).shape == (5, 10)
    types = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in types and "DequantizeLinear" in types


class IdsMaskState(nn.Module):
    """int64 ids + float mask + recurrent state batched on axis 1 + a scalar gain."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.cell = nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, ids, mask, state, gain):
        h = self.proj(self.emb(ids)) * mask.unsqueeze(-1)
        pooled = h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        new = torch.tanh(self.cell(torch.cat([pooled, state[0]], -1))) * gain
        return self.head(new), new.unsqueeze(0)


@pytest.fixture(scope="module")
def multi_input(tmp_path_factory):
    torch.manual_seed(0)
    m = IdsMaskState().eval()
    d = tmp_path_factory.mktemp("multi")
    f = d / "multi.onnx"
    ex = (torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 6), torch.zeros(1, 2, 16),
          torch.tensor(1.0))
    torch.onnx.export(m, ex, str(f), dynamo=False, opset_version=17,
                      input_names=["ids", "mask", "state", "gain"],
                      output_names=["logits", "state_out"],
                      dynamic_axes={"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"},
                                    "state": {1: "batch"}, "logits": {0: "batch"},
                                    "state_out": {1: "batch"}})
    rng = np.random.default_rng(0)
    n = 200
    mask = (rng.random((n, 6)) > 0.2).astype(np.float32)
    np.savez(d / "data.npz", ids=rng.integers(0, 50, (n, 6)), mask=mask,
             state=rng.standard_normal((n, 1, 16)).astype(np.float32) * 0.5,
             gain=np.float32(1.0))
    return f, d / "data.npz", m


def test_multi_input_model_with_state_on_axis_1_and_a_constant(multi_input, tmp_path):
    f, data, module = multi_input
    out = tmp_path / "art"
    report = optimize(str(f), str(data), out=out, options=_opts(eval_limit=60))
    int8 = report.stages[-1]
    assert set(int8.fidelity["outputs"]) == {"logits", "state_out"}
    assert int8.fidelity["headline"]["sqnr_db_min"] > 15
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["ids", "mask", "state", "gain"]
    assert [i["dtype"] for i in manifest["inputs"]] == ["int64", "float32", "float32", "float32"]
    assert manifest["bound_inputs"] == {"gain": 1.0}
    pred = load(out)
    ids = np.arange(12).reshape(2, 6) % 50
    feed = {"ids": ids, "mask": np.ones((2, 6), np.float32),
            "state": np.zeros((1, 2, 16), np.float32), "gain": np.float32(1.0)}
    got = pred.run(feed)
    assert set(got) == {"logits", "state_out"} and got["logits"].shape == (2, 3)
    want = module(torch.from_numpy(ids), torch.ones(2, 6), torch.zeros(1, 2, 16),
                  torch.tensor(1.0))[0].detach().numpy()
    assert np.corrcoef(got["logits"].ravel(), want.ravel())[0, 1] > 0.98
    with pytest.raises(Exception, match="missing input 'mask'"):
        pred.run({"ids": ids, "state": feed["state"]})


def test_cli_graph_path_errors_are_one_line(multi_input, tmp_path, capsys):
    f, data, _ = multi_input
    bad = tmp_path / "bad.npz"
    np.savez(bad, ids=np.zeros((4, 6), np.int64), state=np.zeros((4, 1, 16), np.float32),
             gain=np.float32(1))
    rc = main(["optimize", str(f), "--data", str(bad), "--out", str(tmp_path / "o"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and "mask" in err[-1] and "Traceback" not in "\n".join(err)
    rc = main(["optimize", str(f), "--data", str(data), "--out", str(tmp_path / "o"),
               "--onnx-path", "graph", "--recipe", "prune-distill-int8", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and "prune" in err[-1]


def test_inspect_an_onnx_file_lists_nodes_ops_and_the_int8_plan(multi_input, capsys):
    f, _, _ = multi_input
    assert main(["inspect", str(f)]) == 0
    out = capsys.readouterr().out
    assert "Gemm" in out or "MatMul" in out
    assert "int8 (weights + activations)" in out and "float (passed through)" in out
    assert "ids int64" in out and "ops:" in out


def test_readme_graph_path_commands_run(multi_input, tmp_path, capsys):
    """The README's two commands for any ONNX model, on a multi-input export."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Any model a user brings")[1].split("```sh")[1].split("```")[0]
    f, data, _ = multi_input
    for line in block.strip().splitlines():
        argv = line.split("#")[0].split()[1:]
        argv = [str(f) if a == "model.onnx" else str(data) if a == "inputs.npz" else
                str(tmp_path / "m") if a == "out/m" else a for a in argv]
        assert main(argv + (["--no-progress", "--eval-limit", "40"] if argv[0] == "optimize"
                            else [])) == 0
    assert (tmp_path / "m" / "manifest.json").is_file()


def test_compile_auto_on_an_onnx_graph_never_keeps_a_slower_or_worse_int8(multi_input, tmp_path,
                                                                          capsys):
    f, data, _ = multi_input
    out = tmp_path / "auto"
    assert main(["compile", str(f), "--precision", "auto", "--data", str(data), "--out",
                 str(out), "--eval-limit", "40"]) == 0
    text = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert manifest["precision"] in ("int8", "fp32")
    picked = [line for line in text.splitlines() if "picked" in line]
    assert picked and picked[0].startswith(manifest["precision"])
    if manifest["precision"] == "int8":
        by = {s["name"]: s for s in report["stages"]}
        for b, lat in by["int8 onnxruntime"]["latency"].items():
            assert lat["p50_ms"] < by["fp32 onnxruntime"]["latency"][b]["p50_ms"]
    assert not list(tmp_path.glob(".auto*"))  # the candidate folder is gone


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_other_opsets_through_the_graph_path(trained_cnn, legacy_onnx, digits, tmp_path, opset):
    """The same model exported at opsets 11 and 13, and converted up to 21 (torch.onnx's
    legacy exporter stops at 20)."""
    from onnx import version_converter

    f = tmp_path / f"cnn{opset}.onnx"
    if opset <= 17:
        torch.onnx.export(trained_cnn, (torch.zeros(1, 1, 8, 8),), str(f), dynamo=False,
                          opset_version=opset, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
    else:
        onnx.save(version_converter.convert_version(onnx.load(str(legacy_onnx)), opset), str(f))
    assert onnx.load(str(f)).opset_import[0].version == opset
    report = optimize(str(f), digits, out=tmp_path / "art", options=_opts(eval_limit=60))
    int8 = report.stages[-1]
    assert int8.agreement >= 95 and int8.size_bytes < 0.45 * report.stages[0].size_bytes


class TinyEncoder(nn.Module):
    """Gather embeddings, LayerNorm, GELU (Erf), attention with MatMul between activations,
    Softmax and an additive mask: the op mix of a transformer export."""

    def __init__(self, vocab=64, d=32, classes=4):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(16, d) * 0.1)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, ids, mask):
        x = self.emb(ids) + self.pos[: ids.shape[1]]
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        att = q @ k.transpose(1, 2) / 32 ** 0.5 + (1.0 - mask[:, None, :]) * -10000.0
        x = x + self.proj(att.softmax(-1) @ v)
        x = x + self.ff(self.ln2(x))
        return self.head(x.mean(1))


class TinyGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.fc = nn.GRU(8, 32, batch_first=True), nn.Linear(32, 3)

    def forward(self, x, h):
        y, h = self.gru(x, h)
        return self.fc(y[:, -1]), h


def _export(module, example, names, outs, axes, path):
    torch.onnx.export(module.eval(), example, str(path), dynamo=False, opset_version=17,
                      input_names=names, output_names=outs, dynamic_axes=axes)
    return path


def test_a_transformer_export_with_an_additive_mask(tmp_path):
    torch.manual_seed(0)
    f = _export(TinyEncoder(), (torch.zeros(2, 12, dtype=torch.long), torch.ones(2, 12)),
                ["input_ids", "attention_mask"], ["logits"],
                {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}, tmp_path / "enc.onnx")
    types = {n.op_type for n in onnx.load(str(f)).graph.node}
    assert {"Gather", "Softmax", "MatMul"} <= types
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 13, 240)
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.float32)
    np.savez(tmp_path / "text.npz", input_ids=rng.integers(1, 64, (240, 12)) * mask.astype(int),
             attention_mask=mask)
    report = optimize(str(f), str(tmp_path / "text.npz"), out=tmp_path / "art",
                      options=_opts(eval_limit=80))
    int8 = report.stages[-1]
    assert report.meta["task"] == "classification" and int8.agreement >= 90
    assert int8.fidelity["headline"]["cosine_min"] > 0.95
    assert int8.size_bytes < 0.6 * report.stages[0].size_bytes


def test_a_recurrent_model_with_its_state_as_input(tmp_path):
    torch.manual_seed(0)
    f = _export(TinyGRU(), (torch.zeros(2, 10, 8), torch.zeros(1, 2, 32)), ["x", "h0"],
                ["logits", "hn"], {"x": {0: "batch"}, "h0": {1: "batch"}, "logits": {0: "batch"},
                                   "hn": {1: "batch"}}, tmp_path / "gru.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "seq.npz", x=rng.standard_normal((200, 10, 8)).astype(np.float32),
             h0=rng.standard_normal((200, 1, 32)).astype(np.float32) * 0.3)
    report = optimize(str(f), str(tmp_path / "seq.npz"), out=tmp_path / "art",
                      options=_opts(eval_limit=60))
    int8 = report.stages[-1]
    # The GRU itself passes through in float; the head is quantized where it pays.
    assert set(int8.fidelity["outputs"]) == {"logits", "hn"}
    assert int8.fidelity["headline"]["sqnr_db_min"] > 20
    kept = {k["op"] for k in report.meta["compression"]["float_kept"]} | set(
        report.meta["compression"]["float_ops"])
    assert "GRU" in kept


def test_evaluate_any_onnx_model_with_labels_or_against_a_reference(multi_input, legacy_onnx,
                                                                    tmp_path, capsys):
    f, data, _ = multi_input
    art = tmp_path / "art"
    optimize(str(f), str(data), out=art, options=_opts(eval_limit=40))
    capsys.readouterr()
    assert main(["evaluate", str(art), "--data", str(data), "--reference", str(f), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["outputs"]) == {"logits", "state_out"} and res["fidelity"]["sqnr_db_min"] > 15
    # No labels and no reference: nothing to score, one line.
    assert main(["evaluate", str(art), "--data", str(data)]) != 0
    assert "no labels" in capsys.readouterr().err
    assert main(["evaluate", str(legacy_onnx), "--data", "digits", "--limit", "50"]) == 0
    assert "top-1" in capsys.readouterr().out
