"""Two optimize runs with the same seed write byte-identical model.onnx files (sha256), for
int8, w4a8-adaround, mixed and cluster16 on a tiny CNN; int8 also at 1 and 2 threads.
Training recipes are byte-identical only at the same thread count, and the report says so."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.registry import step_name
from edgeopt.pipeline import OptimizeOptions, optimize
from edgeopt.recipes import load_recipe


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits, make_cnn):
    model = make_cnn(seed=0, width=8, hidden=32).train()
    x = torch.from_numpy(Preprocess()(digits.train.x))
    y = torch.from_numpy(digits.train.y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def _tiny(name: str):
    """The built-in recipe at tiny budgets; the algorithm is the recipe's own."""
    recipe = load_recipe(name)
    steps = []
    for s in recipe.steps:
        if getattr(s, "calib_size", None):
            s = s.replace(calib_size=128)
        if getattr(s, "adaround", None) is not None:
            s = s.replace(adaround=s.adaround.replace(iters=20))
        if getattr(s, "base", None) is not None:  # a tiny net's scales weigh more: 0.3x
            s = s.replace(base=s.base.replace(calib_size=64), budget=0.3, candidates=(4, 8))
        if getattr(s, "finetune", None) is not None:
            s = s.replace(finetune=s.finetune.replace(epochs=None, steps=5))
        steps.append(s)
    recipe.steps = steps
    return recipe


def _sha(model, digits, name, out, threads=1, recipe=None) -> str:
    opts = OptimizeOptions(recipe=recipe or _tiny(name), eval_limit=64, batch=4, latency_repeats=1,
                           threads=threads, progress=False)
    before = torch.get_num_threads()
    # OptimizeOptions.threads sets only the timing and runtime threads; the compression
    # steps run on torch's, which must therefore be set here too.
    torch.set_num_threads(threads)
    try:
        optimize(model, digits, out=out, options=opts, log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    return hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["int8", "w4a8-adaround", "mixed", "cluster16"])
def test_the_same_seed_writes_the_same_model_bytes(trained, digits, tmp_path, name):
    first = _sha(trained, digits, name, tmp_path / "a")
    assert _sha(trained, digits, name, tmp_path / "b") == first


def test_int8_is_the_same_at_one_and_two_threads(trained, digits, tmp_path):
    """int8 PTQ reduces calibration statistics (min/max, percentiles) that do not depend on
    how the forward passes were split over threads; the report says any count will do."""
    assert (_sha(trained, digits, "int8", tmp_path / "t1", threads=1)
            == _sha(trained, digits, "int8", tmp_path / "t2", threads=2))
    det = json.loads((tmp_path / "t2" / "report.json").read_text())["meta"]["determinism"]
    assert det == {"compress_threads": 2, "training_steps": [],
                   "note": "byte-identical with the same seed at any thread count: no step "
                           "trains, and calibration statistics do not depend on threads"}


def _trained_qat():
    """qat-int8 with a budget that moves the weights: at the recipe's own lr (5e-5) and a
    few steps the drift stays below every rounding edge, and 1 and 2 threads happen to
    agree."""
    recipe = _tiny("qat-int8")
    recipe.steps = [s.replace(epochs=None, steps=20, batch_size=256, lr=1e-2)
                    if step_name(s) == "qat" else s for s in recipe.steps]
    return recipe


def test_a_training_recipe_is_reproducible_at_its_thread_count_and_says_so(trained, digits,
                                                                           tmp_path):
    """Torch sums gradients in an order set by its thread count, so qat-int8 wrote other
    bytes at 1 and at 2 threads here (20 steps at lr 1e-2), and the same bytes at the same
    count. The report records the count the steps ran at and which steps make it matter."""
    recipe = _trained_qat()
    one = _sha(trained, digits, "qat-int8", tmp_path / "a", threads=1, recipe=_trained_qat())
    assert _sha(trained, digits, "qat-int8", tmp_path / "b", threads=1, recipe=recipe) == one
    _sha(trained, digits, "qat-int8", tmp_path / "c", threads=2, recipe=_trained_qat())
    for folder, threads in (("a", 1), ("c", 2)):
        det = json.loads((tmp_path / folder / "report.json").read_text())["meta"]["determinism"]
        assert det["compress_threads"] == threads and det["training_steps"] == ["qat"]
        assert det["note"].startswith("byte-identical with the same seed and the same "
                                      "compress_threads")
