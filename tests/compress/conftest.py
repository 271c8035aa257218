import pytest
import torch
from torch import nn

from edgeopt.testing import tiny_cnn as make_tiny_cnn


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return make_tiny_cnn()


@pytest.fixture
def calib() -> torch.Tensor:
    return torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))
