"""A clustered model builds with TVM: its layers are decoded to plain float weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.compress import apply
from edgeopt.compress.cluster import ClusterConfig

pytest.importorskip("tvm")


def test_clustered_model_compiles_and_matches_torch(make_cnn, one_thread):
    x = torch.randn(16, 1, 8, 8)
    clustered = apply(make_cnn(seed=0, width=8, hidden=64),
                      ClusterConfig(clusters=4, min_weights=16), data=x, progress=False)
    art = edgeopt.compile(clustered, target="x86_64-baseline", backend="tvm", input_shape=[1, 8, 8])
    with torch.no_grad():
        ref = clustered(x).numpy()
    assert np.abs(art.load().run(x.numpy()) - ref).max() <= 1e-5
