import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.evaluate import Report, evaluate
from edgeopt.pipeline import OptimizeOptions, optimize
from edgeopt.recipes import load_recipe, parse_recipe
from edgeopt.runtime import load

STAGES = ["fp32 pytorch", "int8 simulated", "fp32 onnxruntime", "int8 onnxruntime"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits, make_cnn):
    """A TinyCNN trained for 150 Adam steps on digits (about a second on one core)."""
    model = make_cnn(seed=0, width=8, hidden=64).train()
    x = torch.from_numpy(Preprocess()(digits.train.x))
    y = torch.from_numpy(digits.train.y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    # One thread: these tiny steps ran 20x slower with two threads on a busy 2-core machine.
    torch.set_num_threads(1)
    try:
        for _ in range(150):
            idx = torch.randint(0, len(y), (64,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def optimized(trained, digits, tmp_path_factory):
    """(report, artifact folder, log lines) of optimize(trained, digits) with the int8 recipe."""
    out = tmp_path_factory.mktemp("pipeline") / "art"
    recipe = load_recipe("int8")
    recipe.steps = [s.replace(calib_size=256) for s in recipe.steps]
    logs: list[str] = []
    opts = OptimizeOptions(recipe=recipe, eval_limit=300, batch=4, latency_repeats=3,
                           progress=False)
    report = optimize(trained, digits, out=out, options=opts, log=logs.append)
    return report, out, logs


def test_every_stage_is_measured(optimized):
    report, _, logs = optimized
    assert [s.name for s in report.stages] == STAGES
    assert [s.precision for s in report.stages] == ["fp32", "int8", "fp32", "int8"]
    assert report.n_eval == 300 and report.dataset == "digits" and report.model == "TinyCNN"
    for stage in report.stages:
        assert stage.accuracy_top1 is not None and stage.accuracy_top5 is not None
        assert stage.size_bytes > 0
        assert sorted(stage.latency) == [1, 4]
        assert all(lat.p50_ms > 0 for lat in stage.latency.values())
    assert "compress: QuantConfig with 256 calibration samples" in logs


def test_int8_keeps_accuracy(optimized):
    fp32, sim, ort_fp32, ort_int8 = optimized[0].stages
    assert fp32.accuracy_top1 >= 80  # the model did learn
    assert fp32.agreement is None  # it is the reference
    assert ort_fp32.agreement >= 99
    assert ort_int8.agreement >= 95
    assert sim.agreement >= 95
    assert abs(ort_int8.accuracy_top1 - fp32.accuracy_top1) <= 3


def test_int8_model_is_small(optimized):
    report, out, _ = optimized
    sizes = {s.name: s.size_bytes for s in report.stages}
    assert sizes["int8 onnxruntime"] == (out / "model.onnx").stat().st_size
    assert sizes["int8 onnxruntime"] < 0.35 * sizes["fp32 onnxruntime"]


def test_report_json_round_trips(optimized):
    report, out, _ = optimized
    data = json.loads((out / "report.json").read_text())
    assert Report.from_dict(data).to_dict() == data
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["meta"]["recipe"] == "int8" and data["meta"]["target"] == "x86_64"


def test_artifact_reproduces_the_reported_accuracy(optimized, digits):
    report, out, _ = optimized
    manifest = json.loads((out / "manifest.json").read_text())
    # The reports were written before the final manifest: they are checksummed too.
    assert {"model.onnx", "report.json", "report.md"} <= set(manifest["files"])
    pred = load(out)
    test = digits.test.subset(300, seed=0)
    res = evaluate(pred, test.x, test.y, preprocess=Preprocess(), progress=False)
    assert res.top1 == pytest.approx(report.stages[-1].accuracy_top1)
    np.testing.assert_allclose(pred.predict(test.x[:8]), pred.run(Preprocess()(test.x[:8])),
                               atol=1e-6)


def test_existing_output_is_refused_before_any_work(optimized, trained, digits):
    from edgeopt.core.errors import OutputExistsError

    _, out, _ = optimized
    before = (out / "model.onnx").read_bytes()
    logs: list[str] = []
    with pytest.raises(OutputExistsError):
        optimize(trained, digits, out=out, log=logs.append)
    assert logs == [] and (out / "model.onnx").read_bytes() == before


def test_mixed_recipe_writes_policy_and_pareto_plot(trained, digits, tmp_path):
    """--recipe mixed end to end: the artifact fits the budget and carries the plot."""
    recipe = load_recipe("mixed")
    step = recipe.steps[0]
    recipe.steps = [step.replace(base=step.base.replace(calib_size=128), eval_samples=200,
                                 sensitivity_samples=64, pareto_points=3)]
    opts = OptimizeOptions(recipe=recipe, eval_limit=100, batch=4, latency_repeats=2,
                           progress=False, overrides={"budget": 0.3})
    report = optimize(trained, digits, out=tmp_path / "art", options=opts, log=lambda m: None)
    art = tmp_path / "art"
    info = report.meta["compression"]["steps"][0]["mixed"]
    assert report.stages[-1].precision == "mixed"
    assert report.stages[-1].size_bytes == info["bytes"] <= info["budget_bytes"]
    assert info["budget_bytes"] == int(0.3 * info["fp32_bytes"])
    assert (art / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((art / "manifest.json").read_text())
    assert "pareto.png" in json.dumps(manifest["files"])
    md = (art / "report.md").read_text()
    assert "Mixed precision, budget 0.3x" in md and "| head.0 |" in md
    assert [s["step"] for s in report.meta["compression"]["steps"]] == ["mixed_precision"]
    load(art)  # checksums verify, plot included


def test_every_step_of_a_composed_recipe_is_a_stage(trained, digits, tmp_path):
    """distill -> int8: the distilled model is a stage of its own, with accuracy, size and
    latency, between the fp32 model and the int8 ones; its teacher is the original model."""
    recipe = parse_recipe({"name": "distill-int8", "steps": [
        {"distill": {"steps": 3, "lr": 1e-4, "train_size": 256}},
        {"quantize": {"calib_size": 128}},
    ]}, "test")
    opts = OptimizeOptions(recipe=recipe, eval_limit=100, batch=4, latency_repeats=2,
                           progress=False)
    report = optimize(trained, digits, out=tmp_path / "art", options=opts, log=lambda m: None)
    assert [s.name for s in report.stages] == ["fp32 pytorch", "after distill", *STAGES[1:]]
    after = report.stages[1]
    assert after.backend == "torch" and after.precision == "fp32" and after.size_bytes > 0
    assert after.latency[1].p50_ms > 0
    # Three small steps from the trained model itself as teacher: the distilled stage
    # keeps its accuracy (a stage scored on the wrong model, or a step that
    # re-initialised it, would not).
    fp32 = report.stages[0].accuracy_top1
    assert fp32 >= 80 and after.accuracy_top1 >= fp32 - 2, (fp32, after.accuracy_top1)
    steps = report.meta["compression"]["steps"]
    assert [s["step"] for s in steps] == ["distill", "quantize"]
    assert steps[0]["teacher"] == "original model"
    assert steps[0]["steps"] == 3 and steps[0]["train_samples"] == 256
    assert "after distill" in (tmp_path / "art" / "report.md").read_text()


def test_prune_distill_int8_recipe_reports_every_stage(trained, digits, tmp_path):
    """The built-in composition in one optimize(): prune -> distill -> int8 -> compile."""
    recipe = load_recipe("prune-distill-int8")
    prune, distill, quant = recipe.steps
    # The tiny CNN has 8 channels: multiples of 16 cannot be kept.
    recipe.steps = [prune.replace(round_to=None), distill.replace(epochs=None, steps=5,
                                                                   train_size=256),
                    quant.replace(calib_size=128)]
    opts = OptimizeOptions(recipe=recipe, eval_limit=100, batch=4, latency_repeats=2,
                           progress=False)
    report = optimize(trained, digits, out=tmp_path / "art", options=opts, log=lambda m: None)
    names = [s.name for s in report.stages]
    assert names == ["fp32 pytorch", "after prune", "after distill", *STAGES[1:]]
    by = {s.name: s for s in report.stages}
    # Pruning removed whole channels: the model file shrinks, before any quantization.
    assert by["after prune"].size_bytes < 0.7 * by["fp32 pytorch"].size_bytes
    assert by["int8 onnxruntime"].size_bytes < 0.5 * by["fp32 onnxruntime"].size_bytes
    info = report.meta["compression"]["steps"][0]
    assert info["macs_after"] <= 0.5 * info["macs_before"]
    md = (tmp_path / "art" / "report.md").read_text()
    assert "after prune" in md and "after distill" in md


def test_a_recipe_ending_in_a_float_model_names_its_stages_by_step(trained, digits, tmp_path):
    """prune-distill ends in a smaller fp32 model: its stages are "after distill" and
    "prune-distill onnxruntime", not a second "fp32 onnxruntime"."""
    recipe = load_recipe("prune-distill")
    prune, distill = recipe.steps
    recipe.steps = [prune.replace(round_to=None), distill.replace(epochs=None, steps=3,
                                                                   train_size=128)]
    opts = OptimizeOptions(recipe=recipe, eval_limit=100, batch=4, latency_repeats=2,
                           progress=False)
    report = optimize(trained, digits, out=tmp_path / "art", options=opts, log=lambda m: None)
    assert [s.name for s in report.stages] == [
        "fp32 pytorch", "after prune", "after distill", "fp32 onnxruntime",
        "prune-distill onnxruntime"]
    assert all(s.precision == "fp32" for s in report.stages)
    assert report.stages[-1].size_bytes < 0.7 * report.stages[-2].size_bytes
    assert load(tmp_path / "art").manifest["precision"] == "fp32"
    md = (tmp_path / "art" / "report.md").read_text()
    # Each step says what it did, once: the distill record does not repeat the pruning.
    assert md.count("MACs ") == 1 and "distilled from the original model" in md
    steps = report.meta["compression"]["steps"]
    assert [s["step"] for s in steps] == ["prune", "distill"]
    assert "macs_after" in steps[0] and "macs_after" not in steps[1]


def test_sparse_recipe_reports_sparsity_and_compressed_size(trained, digits, tmp_path):
    recipe = load_recipe("sparse")
    (step,) = recipe.steps
    recipe.steps = [step.replace(finetune=step.finetune.replace(epochs=None, steps=6,
                                                                train_size=256), frequency=2)]
    opts = OptimizeOptions(recipe=recipe, eval_limit=100, batch=4, latency_repeats=2,
                           progress=False)
    report = optimize(trained, digits, out=tmp_path / "art", options=opts, log=lambda m: None)
    info = report.meta["compression"]["steps"][0]
    assert info["sparsity"] == pytest.approx(0.7, abs=0.01)
    art = info["artifact_bytes"]
    assert art["raw"] == (tmp_path / "art" / "model.onnx").stat().st_size > art["compressed"]
    assert "70.0% of prunable weights are zero" in (tmp_path / "art" / "report.md").read_text()
