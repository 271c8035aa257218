"""fp16 weight storage: half the artifact bytes, fp32 results within rounding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgeopt.compress import apply
from edgeopt.compress.fp16 import Fp16Conv2d, Fp16Linear, Fp16WeightsConfig
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.pipeline import OptimizeOptions, optimize
from edgeopt.recipes import load_recipe
from edgeopt.runtime import load


@pytest.fixture(scope="module")
def setup(make_cnn, train_tiny, tmp_path_factory):
    """(digits, a TinyCNN trained on it, report, artifact folder): the model's weights
    (8.9k, 35 KB in fp32) dwarf the graph's own bytes."""
    digits = load_dataset("digits")
    model = train_tiny(make_cnn(seed=0, width=8, hidden=64), Preprocess()(digits.train.x),
                       digits.train.y, epochs=3, lr=3e-3)
    out = tmp_path_factory.mktemp("fp16") / "art"
    opts = OptimizeOptions(recipe="fp16", eval_limit=200, batch=4, latency_repeats=2,
                           progress=False)
    return digits, model, optimize(model, digits, out=out, options=opts, log=lambda m: None), out


def test_the_fp16_recipe_halves_the_artifact(setup):
    _, _, report, out = setup
    by = {s.name: s for s in report.stages}
    assert list(by) == ["fp32 pytorch", "after fp16_weights", "fp32 onnxruntime",
                        "fp16 onnxruntime"]
    fp32, fp16 = by["fp32 onnxruntime"], by["fp16 onnxruntime"]
    assert fp16.size_bytes == (out / "model.onnx").stat().st_size
    assert 0.45 < fp16.size_bytes / fp32.size_bytes < 0.56
    assert fp16.precision == "fp32"  # stored narrow, computed in fp32
    assert fp16.agreement >= 99.5 and abs(fp16.accuracy_top1 - fp32.accuracy_top1) <= 0.5
    graph = onnx.load(str(out / "model.onnx")).graph
    halves = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) == 3 == sum(n.op_type == "Cast" for n in graph.node)
    (step,) = report.meta["compression"]["steps"]
    assert step["step"] == "fp16_weights" and step["artifact_bytes"] == fp16.size_bytes
    md = (out / "report.md").read_text()
    assert "- fp16 weight storage: 3 layers store fp16 weights" in md


def test_onnx_runtime_matches_the_fp32_model(setup):
    digits, trained, _, out = setup
    x = Preprocess()(digits.test.x[:256])
    got = load(out).run(x)
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).numpy()
    err = np.abs(got - want).max()
    assert err < 2e-3 * np.abs(want).max(), err
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


def test_skipped_and_non_float_layers_stay_fp32(setup):
    digits, trained, _, _ = setup
    calib = Preprocess()(digits.train.x[:8])
    half = apply(trained, Fp16WeightsConfig(skip=("head.2",)), data=calib, progress=False)
    kinds = {n: type(m) for n, m in half.named_modules() if n in ("features.0", "head.0",
                                                                  "head.2")}
    assert kinds["features.0"] is Fp16Conv2d and kinds["head.0"] is Fp16Linear
    assert half.get_submodule("head.2").weight.dtype == torch.float32
    record = half.meta["edgeopt"]["fp16_weights"]
    assert record["kept_fp32"] == {"head.2": "skip"} and record["max_weight_error"] < 1e-3
    assert half.get_submodule("head.0").weight.dtype == torch.float16
    # A quantized model has no float layer left to store narrower.
    int8 = apply(trained, load_recipe("int8").steps[0].replace(calib_size=8), data=calib,
                 progress=False)
    with pytest.raises(ConfigError, match="no layer left to store in fp16"):
        apply(int8, Fp16WeightsConfig(), data=calib, progress=False)


def test_config_is_checked():
    assert Fp16WeightsConfig.from_dict({"skip": ["head.*"]}).skip == ("head.*",)
    assert Fp16WeightsConfig(skip="head.*").skip == ("head.*",)
    with pytest.raises(ConfigError, match="min_weights must be >= 0"):
        Fp16WeightsConfig(min_weights=-1)
