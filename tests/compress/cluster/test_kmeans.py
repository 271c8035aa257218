"""Weight clustering: k-means, clustered layers, the handler, fine-tuning, bad input."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import edgeopt.compress.cluster  # noqa: F401  (registers the handler)
from edgeopt import QuantConfig, apply
from edgeopt.compress.cluster import (
    ClusterConfig,
    ClusteredConv2d,
    ClusteredLinear,
    ClusterInit,
    kmeans_1d,
)
from edgeopt.compress.cluster.kmeans import assign, init_centroids, squared_error
from edgeopt.compress.distill.finetune import FinetuneOptions
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.core.train import TrainData


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def model(make_cnn, x, one_thread):
    # Canonical already (conv 72 weights, fc 4096 and 320): apply() then deep-copies it
    # instead of tracing it again, which dominates the run time of these tests.
    return canonical_copy(make_cnn(width=8, hidden=32), x[:2])


def _clustered_layers(gm) -> dict[str, nn.Module]:
    return {n: m for n, m in leaf_modules(gm) if isinstance(m, (ClusteredConv2d,
                                                                 ClusteredLinear))}


# -- 1-D k-means ---------------------------------------------------------------------------

def test_assign_is_nearest_centroid():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([-1.5, -0.2, 0.1, 0.9, 2.0])
    brute = (x[:, None] - c[None, :]).abs().argmin(1)
    assert torch.equal(assign(x, c), brute)


@pytest.mark.parametrize("init", list(ClusterInit))
def test_kmeans_shares_k_values_and_beats_linear_levels(init):
    w = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    c, codes = kmeans_1d(w, 16, init=init)
    assert c.shape == (16,) and codes.shape == w.shape and codes.dtype == torch.int64
    assert torch.all(c[1:] >= c[:-1])  # ascending
    assert c[codes].unique().numel() <= 16
    # Nearest-level rounding to the evenly spaced linear-init levels is the baseline
    # Lloyd's iterations start from: they must lower its squared error, by a lot on
    # bell-shaped weights (the levels sit where few weights are).
    levels = init_centroids(w.reshape(-1).double(), 16, ClusterInit.LINEAR).float()
    linear_err = squared_error(w, levels, assign(w.reshape(-1), levels).reshape(w.shape))
    assert squared_error(w, c, codes) < 0.7 * linear_err


def test_kmeans_is_exact_on_k_distinct_values():
    values = torch.tensor([-0.5, -0.1, 0.0, 0.3])
    w = values[torch.randint(4, (200,), generator=torch.Generator().manual_seed(1))]
    c, codes = kmeans_1d(w, 4, init=ClusterInit.KMEANS_PP)
    assert torch.equal(c[codes], w)


# -- clustered layers ----------------------------------------------------------------------

def test_centroid_gradient_is_the_sum_over_its_weights():
    lin = nn.Linear(6, 4)
    c, codes = kmeans_1d(lin.weight, 3)
    layer = ClusteredLinear.from_float(lin, c, codes)
    assert layer.weight.requires_grad is False
    assert torch.equal(layer.weight, c[codes])
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    layer(x).pow(2).sum().backward()
    # The same loss through a plain weight: its gradient summed per cluster.
    plain = nn.Linear(6, 4)
    plain.load_state_dict({"weight": c[codes], "bias": lin.bias.detach()})
    plain(x).pow(2).sum().backward()
    expected = torch.zeros(3).index_add_(0, codes.reshape(-1), plain.weight.grad.reshape(-1))
    torch.testing.assert_close(layer.centroids.grad, expected)


def test_table_and_codes_reindex_to_ascending_order():
    conv = nn.Conv2d(2, 3, 3)
    layer = ClusteredConv2d.from_float(conv, *kmeans_1d(conv.weight, 4))
    with torch.no_grad():
        layer.centroids.copy_(layer.centroids.flip(0))  # descending now
    table, codes = layer.table_and_codes()
    assert torch.all(table[1:] >= table[:-1])
    assert torch.equal(table[codes], layer.clustered_weight())


# -- the handler ---------------------------------------------------------------------------

def test_every_layer_has_at_most_k_values_and_bn_is_folded(model, x):
    before = copy.deepcopy(model.state_dict())
    gm = apply(model, ClusterConfig(clusters=8, min_weights=0), data=x, progress=False)
    layers = _clustered_layers(gm)
    assert set(layers) == {"features.0", "head.0", "head.2"}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    for mod in layers.values():
        assert mod.weight.unique().numel() <= 8
        assert torch.equal(mod.weight, mod.centroids[mod.codes])
    info = gm.meta["edgeopt"]["cluster"]
    assert info["weights_clustered"] == info["weights_total"] == 72 + 4096 + 320
    assert info["layers"]["head.0"]["clusters"] == 8 and info["folded_bn"] == ["features.1"]
    assert gm.meta["edgeopt"]["precision"] == {n: "fp32" for n in layers}
    # Close to the float model (8 levels of uniform random weights: ~10% of the logits),
    # and closer with more clusters.
    fine = apply(model, ClusterConfig(clusters=64, min_weights=0), data=x, progress=False)
    with torch.no_grad():
        ref = model(x)
        err8, err64 = ((gm(x) - ref).norm() / ref.norm(), (fine(x) - ref).norm() / ref.norm())
    assert err8 < 0.2 and err64 < err8 / 3
    for k, v in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k])


def test_overrides_min_weights_and_deepcopy(model, x):
    config = ClusterConfig.from_dict({"clusters": 16, "min_weights": 100,
                                      "layers": {"head.2": 4, "head.0": None}})
    gm = apply(model, config, data=x, progress=False)
    layers = _clustered_layers(gm)
    assert set(layers) == {"head.2"} and layers["head.2"].clusters == 4
    skipped = gm.meta["edgeopt"]["cluster"]["skipped"]
    assert skipped["head.0"] == "skipped by pattern" and "min_weights" in skipped["features.0"]
    copied = copy.deepcopy(gm)
    mod = dict(copied.named_modules())["head.2"]
    assert isinstance(mod, ClusteredLinear) and torch.equal(mod.codes, layers["head.2"].codes)
    with torch.no_grad():
        torch.testing.assert_close(copied(x), gm(x))


def test_finetune_keeps_sharing_and_moves_centroids(model, x):
    config = ClusterConfig(clusters=4, min_weights=0,
                           finetune=FinetuneOptions(steps=15, lr=3e-3, batch_size=32))
    plain = apply(model, config.replace(finetune=None), data=x, progress=False)
    tuned = apply(model, config, data=x.numpy(), progress=False)  # unlabelled: distillation
    info = tuned.meta["edgeopt"]["cluster"]["finetune"]
    assert info["steps"] == 15 and info["distill"] and info["train_samples"] == 128
    p_layers, t_layers = _clustered_layers(plain), _clustered_layers(tuned)
    for name, mod in t_layers.items():
        assert mod.weight.unique().numel() <= 4
        assert torch.equal(mod.codes, p_layers[name].codes)  # codes never change
        assert not torch.allclose(mod.centroids, p_layers[name].centroids)
        assert torch.equal(mod.weight, mod.centroids[mod.codes])  # .weight kept in sync
        assert mod.centroids.requires_grad and not mod.weight.requires_grad

    # Distillation pulls the student towards the float teacher (here 5x closer).
    def gap(gm):
        with torch.no_grad():
            return float((gm(x) - model(x)).pow(2).mean())
    assert gap(tuned) < 0.5 * gap(plain)


def test_finetune_with_labels_and_frozen_biases(model, x):
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(0))
    config = ClusterConfig(clusters=4, min_weights=0, train_biases=False,
                           finetune=FinetuneOptions(steps=3, lr=1e-2, distill=False))
    gm = apply(model, config, data=TrainData(x=x, y=y), progress=False)
    plain = apply(model, config.replace(finetune=None), data=x, progress=False)
    for name, mod in _clustered_layers(gm).items():
        assert torch.equal(mod.bias, _clustered_layers(plain)[name].bias)


def test_a_per_layer_count_changes_that_layer_only(model, x):
    config = ClusterConfig(clusters=16, min_weights=100,
                           layers={"head.0": {"clusters": 8}, "head.*": {"skip": True}})
    gm = apply(model, config, data=x, progress=False)
    layers = _clustered_layers(gm)
    # head.0 matches both patterns: the first wins; head.2 falls to the skip.
    assert set(layers) == {"head.0"}
    values = layers["head.0"].centroids[layers["head.0"].codes].unique()
    assert values.numel() == 8
    config = ClusterConfig(clusters=16, min_weights=100, layers={"head.2": {"clusters": 4}})
    layers = _clustered_layers(apply(model, config, data=x, progress=False))
    assert layers["head.2"].centroids[layers["head.2"].codes].unique().numel() == 4
    assert layers["head.0"].centroids[layers["head.0"].codes].unique().numel() > 8


def test_the_old_count_spelling_reads_as_the_new_one():
    with pytest.warns(DeprecationWarning, match=r'write `layers: \{"fc\*": \{clusters: 8\}, '
                                                r'head: \{skip: true\}\}`'):
        old = ClusterConfig(layers={"fc*": 8, "head": None})
    new = ClusterConfig(layers={"fc*": {"clusters": 8}, "head": {"clusters": None}})
    assert [old.for_layer(n) for n in ("fc1", "head", "head.0", "conv")] == [8, None, None, 16]
    assert [new.for_layer(n) for n in ("fc1", "head", "head.0", "conv")] == [8, None, None, 16]


# -- bad input: one clear line each ----------------------------------------------------------

@pytest.mark.parametrize("fields, match", [
    ({"clusters": 1}, r"cluster.clusters must be an integer in 2..256, got 1"),
    ({"clusters": 257}, r"in 2..256, got 257"),
    ({"layers": {"fc": 300}}, r"cluster.layers\['fc'\]: clusters must be an integer in 2..256"),
    ({"layers": {"fc": {"clusters": "8"}}}, r"cluster.layers\['fc'\].clusters: expected int"),
    ({"init": "random"}, r"init: unknown value 'random' \(valid: linear, density"),
    ({"iters": 0}, r"cluster.iters must be >= 1"),
])
def test_bad_config_is_one_line(fields, match):
    with pytest.raises(ConfigError, match=match) as err:
        ClusterConfig.from_dict(fields)
    assert "\n" not in str(err.value)


def test_pattern_matching_no_layer_warns_with_layer_names(model, x):
    with pytest.warns(UserWarning, match=r"pattern 'conv\*' matches no layer; layers are: "
                                         r"features.0, head.0, head.2"):
        apply(model, ClusterConfig(layers={"conv*": 4}), data=x, progress=False)


def test_layer_with_fewer_weights_than_clusters_is_named(model, x):
    with pytest.raises(ConfigError, match=r"layer features.0 has 72 weights, fewer than its "
                                          r"128 clusters") as err:
        apply(model, ClusterConfig(clusters=128, min_weights=0), data=x, progress=False)
    assert "\n" not in str(err.value)


def test_finetune_without_data_and_quantized_models_are_refused(model, x):
    gm = apply(model, ClusterConfig(clusters=4, min_weights=0), data=x, progress=False)
    with pytest.raises(ConfigError, match="cluster.finetune needs training data"):
        apply(gm, ClusterConfig(finetune=FinetuneOptions(steps=1)), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = apply(model, QuantConfig(), data=x, progress=False)
    with pytest.raises(ConfigError, match="put the cluster step before quantize"):
        apply(q, ClusterConfig(), data=x, progress=False)


def test_config_round_trips_through_a_dict():
    config = ClusterConfig(clusters=32, layers={"fc": None, "layer3.*": 64},
                           init=ClusterInit.KMEANS_PP, finetune=FinetuneOptions(epochs=0.5))
    again = ClusterConfig.from_dict(config.to_dict())
    assert again == config and again.for_layer("fc") is None
    assert again.for_layer("layer3.conv1.0") == 64 and again.for_layer("stem.0") == 32
    assert np.isclose(again.finetune.epochs, 0.5)


def test_a_saved_pt2_model_loads_back_clustered(model, x, tmp_path):
    # The `edgeopt compress --out m.pt2` -> `edgeopt compile m.pt2` path: torch.export
    # records edgeopt::clustered_weight, and the lift hooks rebuild the clustered layers.
    from edgeopt.core.model import load_model

    gm = apply(model, ClusterConfig(clusters=4, min_weights=0), data=x, progress=False)
    ep = torch.export.export(gm, (x[:2],),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(ep, tmp_path / "m.pt2")
    back = canonical_copy(load_model(str(tmp_path / "m.pt2")).module, x[:2])
    layers, before = _clustered_layers(back), _clustered_layers(gm)
    assert set(layers) == set(before)
    for name, mod in layers.items():
        assert torch.equal(mod.codes, before[name].codes)
        assert torch.equal(mod.centroids, before[name].centroids)
    assert back.meta["edgeopt"]["cluster"]["layers"]["head.0"] == {"clusters": 4}
    with torch.no_grad():
        torch.testing.assert_close(back(x), gm(x))
