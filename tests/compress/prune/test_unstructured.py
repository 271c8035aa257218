"""Magnitude sparsity: exact zero counts, the polynomial schedule, masks that hold, sizes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from torch import nn

import edgeopt
import edgeopt.compress.prune  # noqa: F401  (registers the handlers)
from edgeopt.compress import apply
from edgeopt.compress.distill.finetune import FinetuneOptions, finetune
from edgeopt.compress.prune import MagnitudePruneConfig, compressed_size, polynomial_sparsity
from edgeopt.compress.prune.unstructured import GradualMasks, Scope, magnitude_masks
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.train import TrainData

pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = ("features.0", "head.0", "head.2")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    pre = Preprocess()
    return TrainData(x=pre(ds.train.x), y=ds.train.y), torch.as_tensor(pre(ds.test.x))


@pytest.fixture
def model(make_cnn, digits, train_tiny):
    data = digits[0]
    return train_tiny(make_cnn(width=8, hidden=32), data.x, data.y, epochs=2)


def _zeros(model, name):
    return int((model.get_submodule(name).weight == 0).sum())


def test_polynomial_schedule_values():
    assert polynomial_sparsity(0.0, 0.0, 0.8) == 0.0
    assert polynomial_sparsity(1.0, 0.0, 0.8) == pytest.approx(0.8)
    assert polynomial_sparsity(0.5, 0.1, 0.9) == pytest.approx(0.9 - 0.8 * 0.125)
    assert polynomial_sparsity(0.25, 0.0, 0.5) == pytest.approx(0.5 * (1 - 0.75 ** 3))
    assert polynomial_sparsity(2.0, 0.0, 0.5) == pytest.approx(0.5)  # clamped past the end
    values = [polynomial_sparsity(t / 10, 0.0, 0.9) for t in range(11)]
    steps = np.diff(values)
    assert (steps > 0).all() and (np.diff(steps) < 0).all()  # rising, ever more slowly


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_one_shot_sparsity_is_exact(model, digits, scope):
    sparse = apply(model, MagnitudePruneConfig(sparsity=0.7, scope=scope), data=digits[1],
                   progress=False)
    meta = sparse.meta["edgeopt"]["sparsify"]
    sizes = {n: model.get_submodule(n).weight.numel() for n in LAYERS}
    zeros = {n: _zeros(sparse, n) for n in LAYERS}
    if scope == "layer":
        assert zeros == {n: round(0.7 * s) for n, s in sizes.items()}
    else:
        assert sum(zeros.values()) == round(0.7 * sum(sizes.values()))
        assert len(set(meta["layers"].values())) > 1  # one threshold, unequal layers
    assert meta["zero_weights"] == sum(zeros.values())
    assert meta["sparsity"] == pytest.approx(0.7, abs=1e-4)
    # The smallest weights went: every survivor is at least as large as every pruned one.
    w, w0 = sparse.head[0].weight, model.head[0].weight
    assert w0[w == 0].abs().max() <= w0[w != 0].abs().min() or scope == "global"
    assert _zeros(model, "head.0") == 0  # the caller's model is untouched


def test_masks_keep_zeros_during_finetuning(model, digits):
    data = digits[0]
    cfg = MagnitudePruneConfig(sparsity=0.8, frequency=3, end=0.5)
    opts = FinetuneOptions(steps=30, lr=1e-2, batch_size=64)
    masks = GradualMasks(model, list(LAYERS), cfg, total=30, seconds=None)
    seen = []

    def after_step(m: nn.Module) -> None:
        masks(m)
        for name in LAYERS:
            w = m.get_submodule(name).weight
            assert torch.equal(w[~masks.masks[name]], torch.zeros_like(w[~masks.masks[name]]))
        seen.append(masks.sparsity)

    finetune(model, data, opts, after_step=after_step, progress=False)
    assert len(seen) == 30
    assert seen[0] == 0.0 and seen == sorted(seen)  # sparsity only grows
    assert seen[-1] == pytest.approx(0.8)  # the schedule ends at half the run (end=0.5)
    assert seen[2] == pytest.approx(polynomial_sparsity(3 / 15, 0.0, 0.8))
    total = sum(model.get_submodule(n).weight.numel() for n in LAYERS)
    assert sum(_zeros(model, n) for n in LAYERS) == round(0.8 * total)


def test_gradual_handler_leaves_plain_modules(model, digits, tmp_path):
    data, x = digits
    cfg = MagnitudePruneConfig(sparsity=0.6, frequency=4,
                               finetune=FinetuneOptions(steps=20, lr=3e-3))
    sparse = apply(model, cfg, data=data, progress=False)
    meta = sparse.meta["edgeopt"]["sparsify"]
    assert meta["sparsity"] == pytest.approx(0.6, abs=1e-4)
    assert meta["finetune"]["steps"] == 20
    assert "none" in meta["speedup"]
    assert all(not hasattr(m, "weight_orig") and not hasattr(m, "parametrizations")
               for m in sparse.modules())
    assert set(dict(sparse.named_parameters())) == set(dict(model.named_parameters()))
    art = edgeopt.compile(sparse, out=tmp_path / "sparse", input_shape=[1, 8, 8])
    with torch.no_grad():
        want = sparse(x[:8]).numpy()
    assert np.abs(art.load().run(x[:8].numpy()) - want).max() < 1e-4
    dense = edgeopt.compile(model, out=tmp_path / "dense", input_shape=[1, 8, 8])
    s_size = compressed_size(art.path / art.manifest["model_file"])
    d_size = compressed_size(dense.path / dense.manifest["model_file"])
    assert s_size["raw"] == pytest.approx(d_size["raw"], rel=0.01)  # zeros are still stored
    assert s_size["compressed"] < 0.8 * d_size["compressed"]


def test_compressed_size_is_zlib_level_9(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(1000) + np.random.default_rng(0).bytes(1000)
    path.write_bytes(data)
    assert compressed_size(path) == {"raw": 2000, "compressed": len(zlib.compress(data, 9))}


def test_ignore_leaves_layers_dense(model, digits):
    sparse = apply(model, MagnitudePruneConfig(sparsity=0.5, scope="layer", ignore=("head.2",)),
                   data=digits[1], progress=False)
    assert _zeros(sparse, "head.2") == 0
    assert "head.2" not in sparse.meta["edgeopt"]["sparsify"]["layers"]


def test_masks_helper_counts():
    w = {"a": torch.tensor([3.0, -1.0, 2.0, 0.5]), "b": torch.tensor([[4.0, -0.1]])}
    keep = magnitude_masks(w, 0.5, Scope.GLOBAL)
    assert keep["a"].tolist() == [True, False, True, False] and keep["b"].tolist() == [[True,
                                                                                        False]]


def test_bad_inputs_fail_with_one_line(model):
    cases = [
        (lambda: MagnitudePruneConfig(sparsity=1.0), ConfigError,
         "sparsify.sparsity must be in (0, 1), got 1.0"),
        (lambda: MagnitudePruneConfig(sparsity=0.0), ConfigError, "got 0.0"),
        (lambda: MagnitudePruneConfig(), ConfigError, "sparsify needs sparsity"),
        (lambda: MagnitudePruneConfig(sparsity=0.5, scope="channel"), ConfigError,
         "unknown value 'channel'"),
        (lambda: MagnitudePruneConfig(sparsity=0.5, frequency=0), ConfigError, "frequency"),
        (lambda: MagnitudePruneConfig(sparsity=0.5, initial_sparsity=0.6), ConfigError,
         "initial_sparsity"),
        (lambda: apply(model, MagnitudePruneConfig(sparsity=0.5, ignore=("*",))), ConfigError,
         "no convolution or linear layer"),
        (lambda: apply(model, MagnitudePruneConfig(
            sparsity=0.5, finetune=FinetuneOptions(steps=1)), data=None), DataError,
         "finetune needs training data"),
    ]
    for make, error, text in cases:
        with pytest.raises(error) as info:
            make()
        assert text in str(info.value) and "\n" not in str(info.value)
