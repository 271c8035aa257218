"""The learning-rate schedule and the optimizer a ``TrainOptions`` names."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.core.train.options import OptimizerKind, Schedule, TrainOptions


def lr_factor(schedule: Schedule, progress: float, warmup: float) -> float:
    """The learning rate as a fraction of the peak at ``progress`` in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    if schedule is Schedule.ONECYCLE:
        # torch OneCycleLR's shape: cosine from peak/25 up to the peak, then down to ~0.
        up = max(warmup, 1e-9)
        if p < up:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * p / up)) / 2
        return (1 + math.cos(math.pi * (p - up) / max(1 - up, 1e-9))) / 2
    if warmup > 0 and p < warmup:
        # Start above zero so the first step is not wasted.
        return (p + 1 / 1000) / (warmup + 1 / 1000)
    if schedule is Schedule.CONSTANT:
        return 1.0
    return (1 + math.cos(math.pi * (p - warmup) / max(1 - warmup, 1e-9))) / 2


def _param_groups(model: nn.Module, params, weight_decay: float) -> list[dict[str, Any]]:
    if params is not None:
        groups = list(params)
        if groups and isinstance(groups[0], dict):
            return groups
        return [{"params": groups, "weight_decay": 0.0}]
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Weight decay on biases and norm scales only hurts; decay the weight matrices.
    decay = [p for p in trainable if p.ndim > 1]
    rest = [p for p in trainable if p.ndim <= 1]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": rest, "weight_decay": 0.0}) if g["params"]]


def make_optimizer(model: nn.Module, options: TrainOptions, params=None) -> torch.optim.Optimizer:
    groups = _param_groups(model, params, options.weight_decay)
    if not any(g["params"] for g in groups):
        raise ConfigError("nothing to train: the model has no trainable parameters")
    if options.optimizer is OptimizerKind.SGD:
        return torch.optim.SGD(groups, lr=options.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=options.lr)
