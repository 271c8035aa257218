"""Two optimize runs with the same seed write byte-identical model.onnx files (sha256), for
int8, w4a8-adaround, mixed and cluster16 on a tiny CNN; int8 also at 1 and 2 threads."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from edgeopt.core.data import Preprocess, load_dataset
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


def _sha(model, digits, name, out, threads=1) -> str:
    opts = OptimizeOptions(recipe=_tiny(name), eval_limit=64, batch=4, latency_repeats=1,
                           threads=threads, progress=False)
    before = torch.get_num_threads()
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
    how the forward passes were split over threads."""
    assert (_sha(trained, digits, "int8", tmp_path / "t1", threads=1)
            == _sha(trained, digits, "int8", tmp_path / "t2", threads=2))
