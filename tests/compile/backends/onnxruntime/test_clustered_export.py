"""Clustered layers in ONNX: packed codes + a float32 codebook per layer, exact in ORT."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

import edgeopt
import edgeopt.compress.cluster  # noqa: F401  (registers the handler)
from edgeopt import apply
from edgeopt.compile.backends.onnxruntime.lower import export_onnx
from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.compress.cluster import CLUSTERED_LAYERS, ClusterConfig
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.graph import leaf_modules

SHAPE = [1, 12, 12]


class Net(nn.Module):
    """Big enough layers (9K-37K weights) that the per-layer unpack ops are small change."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 6 * 6, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = nn.functional.max_pool2d(torch.relu(self.conv2(y)), 2)
        return self.out(torch.relu(self.fc(torch.flatten(y, 1))))


@pytest.fixture(scope="module")
def canonical():
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
    return canonical_copy(net, torch.zeros(2, *SHAPE))


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(1))


def _cluster(gm, x, k, **kw):
    return apply(gm, ClusterConfig(clusters=k, **kw), data=x, progress=False)


def _run(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    return make_session(model.SerializeToString()).run(None, {"input": x.numpy()})[0]


def _packed(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The packed-code initializers ([nbytes, 1] uint8), in graph order."""
    return [i for i in model.graph.initializer
            if i.data_type == TensorProto.UINT8 and len(i.dims) == 2 and i.dims[1] == 1]


def _floats(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == TensorProto.FLOAT}


@pytest.mark.parametrize("k", [4, 16, 32])
def test_ort_matches_the_clustered_model_and_stores_packed_codes(canonical, x, k):
    gm = _cluster(canonical, x, k, min_weights=0)
    model = export_onnx(gm, SHAPE)
    with torch.no_grad():
        ref = gm(x).numpy()
    np.testing.assert_allclose(_run(model, x), ref, atol=2e-5, rtol=0)
    layers = [m for _, m in leaf_modules(gm) if isinstance(m, CLUSTERED_LAYERS)]
    bits = math.ceil(math.log2(k))
    # conv1's 288 weights stay a float initializer when packing would not pay (k=32:
    # 180 B of codes + a 128 B table + ~310 B of unpack ops > 1,152 B of float32).
    packed_layers = [m for m in layers if m.weight.numel() * 4 > m.weight.numel() * bits / 8
                     + 4 * k + 310]
    sizes = [len(p.raw_data) for p in _packed(model)]
    assert sizes == [math.ceil(m.weight.numel() * bits / 8) for m in packed_layers]
    floats = _floats(model)
    tables = [a for a in floats.values() if a.shape == (k,)]
    for m in packed_layers:  # each layer's table: its centroids, ascending
        assert any(np.array_equal(t, np.sort(m.centroids.detach().numpy())) for t in tables)
    # No float copy of a packed weight in the file.
    big = [a.size for a in floats.values() if a.ndim > 1]
    assert not {m.weight.numel() for m in packed_layers} & set(big)


def test_small_layers_and_int8_storage_fall_back_to_float_weights(canonical, x):
    gm = _cluster(canonical, x, 16, min_weights=0)
    model = export_onnx(gm, SHAPE, weight_storage="int8")
    assert not _packed(model)
    with torch.no_grad():
        np.testing.assert_allclose(_run(model, x), gm(x).numpy(), atol=2e-5, rtol=0)
    conv1 = dict(gm.named_modules())["conv1"]
    stored = [a for a in _floats(model).values() if a.shape == tuple(conv1.weight.shape)]
    assert len(stored) == 1 and np.unique(stored[0]).size <= 16


def test_artifact_shrinks_about_8x_at_16_clusters(canonical, x, tmp_path):
    pre = {"scale": 1.0, "mean": None, "std": None, "layout": "NCHW"}
    fp32 = edgeopt.compile(canonical, out=tmp_path / "fp32", preprocess=pre)
    gm = _cluster(canonical, x, 16)
    art = edgeopt.compile(gm, out=tmp_path / "c16", preprocess=pre)

    def size(a):
        return (a.path / a.manifest["model_file"]).stat().st_size

    ratio = size(art) / size(fp32)
    # 4-bit codes are 1/8 of float32; biases, tables and unpack ops add a little.
    assert 0.12 < ratio < 0.16, ratio
    assert art.manifest["precision"] == "fp32"  # float compute: every target runs it
    # compile deep-copies the canonical model: the loaded artifact is the clustered one.
    with torch.no_grad():
        ref = gm(x).numpy()
    np.testing.assert_allclose(art.load().run(x.numpy()), ref, atol=2e-5, rtol=0)
