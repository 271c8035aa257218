"""ONNX files -> torch (onnx2torch after onnxslim), as users export them."""

import dataclasses
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgeopt
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.errors import ModelLoadError
from edgeopt.core.graph import leaf_modules
from edgeopt.core.model import load_model
from edgeopt.core.onnx_import import input_shape, load_onnx
from edgeopt.zoo import build

INPUT_SHAPE = [1, 8, 8]
FORMS = ["opset11", "opset13", "opset17", "dynamo"]


def export(model: nn.Module, path, form: str) -> str:
    """``model`` saved the ways users export: the TorchScript exporter at an opset with a
    dynamic batch axis, or the dynamo exporter with a dynamic batch Dim."""
    x = torch.randn(2, *INPUT_SHAPE)
    if form == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=int(form[5:]),
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return str(path)


def ort_run(path: str, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _save(tmp_path, nodes, inits, *, in_shape, out_shape, name="m.onnx", opset=17,
          inputs=None):
    graph = helper.make_graph(
        nodes, "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


@pytest.mark.parametrize("arch,form", [("resnet_small", f) for f in FORMS]
                         + [("mobilenetv2_small", "opset13")])
def test_user_exports_match_ort_and_keep_the_torch_layer_names(tmp_path, arch, form):
    torch.manual_seed(0)
    model = build(arch, width_mult=0.25).eval()
    path = export(model, tmp_path / "m.onnx", form)
    handle = load_model(path)
    assert handle.kind == "onnx" and handle.input_shape == INPUT_SHAPE
    x = torch.randn(5, *INPUT_SHAPE)
    ref = ort_run(path, x)
    assert np.abs(handle.module(x).detach().numpy() - ref).max() < 1e-4
    # The canonical form traces with a dynamic batch (the old importer's forward(*inputs)
    # broke torch.export's dynamic_shapes), and lift recovers real Conv2d/Linear layers
    # named as in the torch model, so per-layer policies written for one fit the other.
    gm = canonical_copy(handle.module, x)
    layers = leaf_modules(gm)
    assert sorted(n for n, _ in layers) == sorted(n for n, _ in leaf_modules(canonical_copy(model, x)))
    assert {type(m) for _, m in layers} == {nn.Conv2d, nn.Linear}
    x7 = torch.randn(7, *INPUT_SHAPE)
    assert np.abs(gm(x7).detach().numpy() - ort_run(path, x7)).max() < 1e-4


def test_hand_built_gemm_relu_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 6)).astype(np.float32)  # transB=1: (out, in)
    b = rng.standard_normal(5).astype(np.float32)
    path = _save(tmp_path, [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["y"], name="act"),
    ], {"w": w, "b": b}, in_shape=["N", 6], out_shape=["N", 5])

    module, shape = load_onnx(path)
    assert shape == [6]
    # A hand-built graph's layers are named after its nodes.
    assert dict(module.named_parameters()).keys() == {"fc.weight", "fc.bias"}
    assert isinstance(module.fc, nn.Linear)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(),
                               np.maximum(x @ w.T + b, 0), atol=1e-5)


def test_edgeopts_own_export_round_trips(tmp_path, tiny_cnn):
    edgeopt.compile(tiny_cnn, target="x86_64", input_shape=INPUT_SHAPE, out=tmp_path / "a")
    module, shape = load_onnx(str(tmp_path / "a" / "model.onnx"))
    assert shape == INPUT_SHAPE
    x = torch.randn(5, *INPUT_SHAPE)
    np.testing.assert_allclose(module(x).detach().numpy(), tiny_cnn(x).detach().numpy(),
                               atol=1e-4)
    # BN was folded by compile: one conv weight and one linear weight remain.
    weights = [n for n, p in module.named_parameters() if n.endswith(".weight")]
    assert len(weights) == 2


def test_constant_shape_reshape_traces_with_a_dynamic_batch(tmp_path):
    """Reshape to an initializer shape (what the dynamo exporter writes for flatten): onnx2torch
    reads the shape at run time, which torch.export cannot trace unless it is baked in."""
    shape = np.array([0, -1], np.int64)
    path = _save(tmp_path, [
        helper.make_node("Reshape", ["x", "s"], ["y"], name="flat"),
    ], {"s": shape}, in_shape=["N", 2, 3], out_shape=["N", 6])
    module, _ = load_onnx(path)
    x = torch.randn(4, 2, 3)
    gm = canonical_copy(module, x)
    assert gm(torch.randn(9, 2, 3)).shape == (9, 6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_opset20_gelu_is_decomposed_and_downgraded(tmp_path, approximate):
    """The dynamo exporter writes opset 20 and Gelu-20, newer than onnx2torch's converters."""
    path = _save(tmp_path, [helper.make_node("Gelu", ["x"], ["y"], name="act",
                                             approximate=approximate)],
                 {}, in_shape=["N", 16], out_shape=["N", 16], opset=20)
    module, _ = load_onnx(path)
    x = torch.randn(4, 16) * 3
    ref = nn.functional.gelu(x, approximate=approximate)
    assert (module(x) - ref).abs().max() < 1e-5
    assert np.abs(ort_run(path, x) - ref.numpy()).max() < 1e-5


def test_unsupported_op_is_one_line_naming_op_and_node(tmp_path):
    path = _save(tmp_path, [helper.make_node("Det", ["x"], ["y"], name="my_det")], {},
                 in_shape=["N", 3, 3], out_shape=["N"])
    with pytest.raises(ModelLoadError) as exc:
        load_onnx(path)
    msg = str(exc.value)
    assert "ONNX op Det (node my_det)" in msg and "onnx2torch has no converter for Det at opset" in msg
    assert "needed by the torch techniques" in msg and path in msg and "\n" not in msg


def test_converter_refusal_names_the_node_it_came_from(tmp_path):
    # onnx2torch's own NotImplementedError does not say which node; we find it.
    path = _save(tmp_path, [
        helper.make_node("Relu", ["x"], ["h"], name="ok"),
        helper.make_node("DepthToSpace", ["h"], ["y"], name="d2s", blocksize=2, mode="DCR"),
    ], {}, in_shape=["N", 4, 2, 2], out_shape=["N", 1, 4, 4])
    with pytest.raises(ModelLoadError, match=r"ONNX op DepthToSpace \(node d2s\).*other than CRD"):
        load_onnx(path)


def test_nms_model_is_refused_in_one_line_without_torchvision(tmp_path):
    pytest.importorskip("onnx2torch")
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 4])
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["idx"], name="my_nms")],
        "g", [boxes, scores], [helper.make_tensor_value_info("idx", TensorProto.INT64, ["K", 3])])
    path = tmp_path / "nms.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ModelLoadError) as exc:
            load_onnx(str(path))
        msg = str(exc.value)
        assert "ONNX op NonMaxSuppression (node my_nms)" in msg and "needs torchvision" in msg
        assert "\n" not in msg
    else:
        load_onnx(str(path))  # with torchvision there is nothing to refuse


def test_onnx2torch_imports_without_torchvision_and_leaves_no_stub():
    """The stub exists only while onnx2torch imports: afterwards torchvision is as absent as
    before (the torch.onnx exporter probes for it), and the stubbed ops refuse in one line."""
    code = (
        "import sys\n"
        "from edgeopt.core import onnx_torch\n"
        "onnx_torch.onnx2torch()\n"
        "import onnx2torch.node_converters.nms as nms\n"
        "print('torchvision' in sys.modules, onnx_torch._TORCHVISION_STUBBED)\n"
        "try:\n"
        "    nms.torchvision.ops.nms(None, None, 0.5)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    try:
        import torchvision  # noqa: F401
    except Exception:
        assert out == ["False True",
                       "ModelLoadError ONNX op NonMaxSuppression needs torchvision, "
                       "which is not installed"]
    else:
        assert out[0] == "True False"


def test_invalid_model_is_refused_with_its_path(tmp_path):
    # A Relu reading a tensor nothing produces: the checker rejects the graph.
    path = _save(tmp_path, [helper.make_node("Relu", ["ghost"], ["y"])], {},
                 in_shape=["N", 3], out_shape=["N", 3])
    with pytest.raises(ModelLoadError, match="not a valid ONNX model") as exc:
        load_onnx(path)
    assert path in str(exc.value) and "\n" not in str(exc.value)


def test_symbolic_spatial_dims_declare_no_shape(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {},
                 in_shape=["N", 1, "H", "W"], out_shape=["N", 1, "H", "W"])
    assert input_shape(onnx.load(path)) is None


# ---- end to end: optimize() on the ONNX form, through the torch path ----


@pytest.fixture(scope="module")
def digits():
    from edgeopt.core.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_cnn(digits, make_cnn, train_tiny):
    from edgeopt.core.data import Preprocess

    model = make_cnn(seed=0, width=16, hidden=64)
    x = Preprocess()(digits.train.x)
    return train_tiny(model, x, digits.train.y, epochs=6, lr=3e-3)


def _optimize(model, digits, out, recipe):
    from edgeopt.pipeline import OptimizeOptions, optimize

    kw = dict(recipe=recipe, eval_limit=200, batch=4, latency_repeats=2, progress=False)
    # Where the pipeline also has an ONNX-native int8 path, force this torch one.
    if "onnx_path" in {f.name for f in dataclasses.fields(OptimizeOptions)}:
        kw["onnx_path"] = "torch"
    report = optimize(model, digits, out=out, options=OptimizeOptions(**kw), log=lambda m: None)
    return report, {s.name: s for s in report.stages}


def test_int8_of_the_onnx_form_matches_the_torch_form(tmp_path, trained_cnn, digits, one_thread):
    from edgeopt.recipes import load_recipe

    path = export(trained_cnn, tmp_path / "m.onnx", "opset17")
    results = {}
    for form, model in (("pt", trained_cnn), ("onnx", path)):
        recipe = load_recipe("int8")
        recipe.steps = [s.replace(calib_size=128) for s in recipe.steps]
        results[form] = _optimize(model, digits, tmp_path / form, recipe)[1]
    pt, ox = results["pt"], results["onnx"]
    assert pt["fp32 pytorch"].accuracy_top1 >= 80  # the model did learn
    assert ox["int8 onnxruntime"].agreement >= 97 and ox["int8 simulated"].agreement >= 97
    assert abs(ox["int8 onnxruntime"].accuracy_top1 - ox["fp32 pytorch"].accuracy_top1) <= 3
    ratio = ox["int8 onnxruntime"].size_bytes / pt["int8 onnxruntime"].size_bytes
    assert 0.9 <= ratio <= 1.1
    assert ox["int8 onnxruntime"].size_bytes < 0.35 * ox["fp32 onnxruntime"].size_bytes


def test_prune_distill_int8_of_the_onnx_form(tmp_path, trained_cnn, digits, one_thread):
    from edgeopt.recipes import parse_recipe

    path = export(trained_cnn, tmp_path / "m.onnx", "opset17")
    recipe = parse_recipe({"name": "prune-distill-int8", "steps": [
        {"prune": {"macs_reduction": 0.5, "global_pruning": True, "importance": "l2",
                   "round_to": 4}},
        {"distill": {"steps": 20, "lr": 1e-3, "train_size": 256}},
        {"quantize": {"calib_size": 128}},
    ]}, "test")
    report, stages = _optimize(path, digits, tmp_path / "art", recipe)
    assert list(stages)[:3] == ["fp32 pytorch", "after prune", "after distill"]
    info = report.meta["compression"]["steps"][0]
    assert info["macs_after"] <= 0.55 * info["macs_before"]
    assert stages["int8 onnxruntime"].size_bytes < 0.25 * stages["fp32 onnxruntime"].size_bytes
    assert stages["int8 onnxruntime"].agreement >= 70


class _TinyAttention(nn.Module):
    """Embedding + LayerNorm + MatMul attention + Softmax + GELU MLP, on int64 tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.ln, self.qkv = nn.Embedding(50, 16), nn.LayerNorm(16), nn.Linear(16, 48)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 5)

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.emb(tok))
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
        h = h + self.mlp(h)
        return self.head(h.mean(1))


def test_transformer_export_matches_ort_and_traces(tmp_path):
    """Gather/Slice/Shape chains and constant Slice bounds (baked in for torch.export)."""
    torch.manual_seed(0)
    model = _TinyAttention().eval()
    path = str(tmp_path / "t.onnx")
    torch.onnx.export(model, (torch.randint(0, 50, (2, 7)),), path, dynamo=False,
                      opset_version=17, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    module, _ = load_onnx(path)
    tok = torch.randint(0, 50, (3, 7))
    ref = ort_run(path, tok)
    assert np.abs(module(tok).detach().numpy() - ref).max() < 1e-4
    gm = canonical_copy(module, tok)
    assert np.abs(gm(tok).detach().numpy() - ref).max() < 1e-4
    assert isinstance(gm.head, nn.Linear)
