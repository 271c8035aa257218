"""What each recipe step is given: data from its declared need, seeded by the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.compile.backends.registry import get_backend
from edgeopt.compress.cluster import ClusterConfig
from edgeopt.compress.distill.finetune import FinetuneOptions
from edgeopt.compress.lowrank import LowRankConfig
from edgeopt.compress.quantize.qat import QATConfig
from edgeopt.compress.quantize.spec import QuantConfig
from edgeopt.core.data import Dataset, Preprocess, Split
from edgeopt.core.train import TrainData
from edgeopt.recipes import parse_recipe
from edgeopt.recipes import run as recipe_run
from edgeopt.recipes.run import run_recipe, step_context


@pytest.fixture
def toy() -> Dataset:
    rng = np.random.default_rng(0)
    # Each sample's first pixel is its index: a subset is read back from the data itself.
    x = rng.integers(0, 255, (50, 1, 8, 8), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(50)
    split = Split(x, rng.integers(0, 5, 50))
    return Dataset(name="toy", train=split, test=split, num_classes=5)


def _ids(x) -> list[int]:
    return [round(float(v) * 255) for v in np.asarray(x)[:, 0, 0, 0]]


def test_training_steps_get_labelled_data_and_the_teacher(toy, tiny_cnn):
    ctx, what = step_context(QATConfig(train_size=30), toy, Preprocess(), teacher=tiny_cnn)
    assert isinstance(ctx.train, TrainData) and len(ctx.train) == 30 and what.startswith("30 ")
    assert ctx.train.y.dtype == torch.int64 and ctx.calibration is None
    assert ctx.teacher is tiny_cnn
    ctx, _ = step_context(QATConfig(), toy, Preprocess())
    assert len(ctx.train) == 50


def test_calibration_steps_get_preprocessed_inputs_of_their_size(toy):
    ctx, what = step_context(QuantConfig(calib_size=20), toy, Preprocess())
    calib = ctx.calibration
    assert ctx.train is None and what == "20 calibration"
    assert isinstance(calib, np.ndarray) and calib.shape == (20, 1, 8, 8)
    assert calib.dtype == np.float32 and calib.max() <= 1.0


def test_the_run_seed_draws_the_subset(toy):
    def ids(seed):
        return _ids(step_context(QATConfig(train_size=20), toy, Preprocess(),
                                 seed=seed)[0].train.x)

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    # The context's own generator is seeded the same way.
    a, _ = step_context(QATConfig(), toy, Preprocess(), seed=5)
    b, _ = step_context(QATConfig(), toy, Preprocess(), seed=5)
    assert a.rng.integers(1 << 30) == b.rng.integers(1 << 30)
    assert torch.equal(torch.rand(3, generator=a.torch_generator()),
                       torch.rand(3, generator=b.torch_generator()))


def test_a_techniques_own_seed_does_not_move_the_subset(toy):
    """The seed of training order, k-means++ or a fine-tune is not the data seed: it
    used to be (getattr(cfg, "seed")), so changing it changed the training set."""
    def ids(cfg):
        return _ids(step_context(cfg, toy, Preprocess(), seed=1)[0].train.x)

    assert ids(QATConfig(train_size=20, seed=0)) == ids(QATConfig(train_size=20, seed=9))
    tuned = FinetuneOptions(steps=1, train_size=20)
    assert (ids(LowRankConfig(energy=0.9, finetune=tuned))
            == ids(LowRankConfig(energy=0.9, finetune=tuned.replace(seed=9))))
    assert ids(ClusterConfig(seed=0)) == ids(ClusterConfig(seed=9))


def test_a_calibration_seed_of_the_config_wins_over_the_run_seed(toy):
    def ids(cfg, seed):
        return _ids(step_context(cfg, toy, Preprocess(), seed=seed)[0].calibration)

    assert ids(QuantConfig(calib_size=10, calib_seed=2), 0) == ids(
        QuantConfig(calib_size=10, calib_seed=2), 7)
    assert ids(QuantConfig(calib_size=10, calib_seed=2), 0) != ids(
        QuantConfig(calib_size=10, calib_seed=3), 0)


@pytest.mark.parametrize(("recipe_backend", "override", "used"), [
    ("onnxruntime", None, "onnxruntime"),
    ("tvm", None, "tvm"),
    ("onnxruntime", "tvm", "tvm"),  # optimize --backend tvm over an onnxruntime recipe
])
def test_a_step_measures_sizes_with_the_compile_backends_size_model(
        toy, tiny_cnn, monkeypatch, recipe_backend, override, used):
    seen = []

    def spy(model, cfg, ctx):
        seen.append(ctx.size_model)
        return real(model, cfg, ctx)

    real = recipe_run.run_step
    monkeypatch.setattr(recipe_run, "run_step", spy)
    recipe = parse_recipe({"name": "r", "steps": [{"quantize": {"calib_size": 8}}],
                           "compile": {"backend": recipe_backend}}, "r.yaml")
    run_recipe(tiny_cnn, recipe, toy, Preprocess(), backend=override, progress=False,
               log=lambda m: None)
    assert seen == [get_backend(used).size_model]
