"""Small models for tests and examples: every operator PTQ places, in a few hundred weights."""

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv-BN-ReLU, a residual add, ReLU6, max-pool, global pool, linear: the ops PTQ places."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = y + nn.functional.relu6(self.bn2(self.conv2(y)))
        y = self.pool(y)
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
        return self.fc(y)


def tiny_cnn(seed: int = 0) -> TinyCNN:
    """A TinyCNN in eval mode with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    model = TinyCNN()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model.eval()
