"""Fine-tuning with or without a teacher: the loop every technique recovers accuracy with.

Pruning, clustering and low-rank factorisation each change a trained model and
then train it briefly. ``finetune`` runs ``core.train.fit`` with cross-entropy
on the labels, or, given a teacher (usually the model as it was before the
technique), with the distillation loss ``kd_loss`` and optional hint losses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeopt.compress.distill.loss import HintLoss, check_outputs_match, kd_loss
from edgeopt.core.errors import ConfigError
from edgeopt.core.train import TrainData, TrainOptions, TrainResult, fit


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions(TrainOptions):
    """How a technique fine-tunes after changing the model.

    ``distill``: learn from the model as it was before the technique (soft
    targets at ``temperature``, weight ``alpha``; the rest is cross-entropy on
    labels) instead of from the labels alone. ``hints`` maps student layer
    names to teacher layer names for feature hint losses (weight ``hint_weight``).
    ``train_size`` limits the training set (a seeded subset).
    """

    distill: bool = True
    temperature: float = 4.0
    alpha: float = 0.7
    hints: dict[str, str] = field(default_factory=dict)
    hint_weight: float = 1.0
    train_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.hint_weight < 0:
            raise ConfigError(f"hint_weight must be >= 0, got {self.hint_weight}")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"train_size must be >= 1, got {self.train_size}")


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off: the teacher never changes."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def subset(data: TrainData, size: int | None, seed: int) -> TrainData:
    if size is None or size >= len(data):
        return data
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size]
    return TrainData(x=data.x[idx], y=None if data.y is None else data.labels()[idx])


def finetune(model: nn.Module, data: TrainData, options: TrainOptions, *,
             teacher: nn.Module | None = None,
             after_step: Callable[[nn.Module], None] | None = None,
             params=None, progress: bool = True, desc: str = "finetune",
             log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` in place; with a ``teacher`` (and ``options.distill`` when the
    options are ``FinetuneOptions``) the loss is ``kd_loss`` plus hint losses.

    Without labels and without a teacher there is nothing to learn from: a
    one-line ``DataError`` from the loss says so.
    """
    distill = teacher is not None and getattr(options, "distill", True)
    data = subset(data, getattr(options, "train_size", None), options.seed)
    if not distill:
        return fit(model, data, options, params=params, after_step=after_step,
                   progress=progress, desc=desc, log=log)
    teacher = teacher.eval()
    example = data.x[:2]
    check_outputs_match(model, teacher, example)
    temperature = getattr(options, "temperature", 4.0)
    alpha = getattr(options, "alpha", 0.7) if data.has_labels else 1.0
    pairs = getattr(options, "hints", None) or {}
    hints = HintLoss(model, teacher, pairs) if pairs else None
    hint_weight = getattr(options, "hint_weight", 1.0)
    if hints is not None:
        hints.build(model, teacher, example)
        if params is None:
            params = [p for p in model.parameters() if p.requires_grad]
        params = list(params) + list(hints.adapters.parameters())

    def loss_fn(student: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        logits = student(x)
        with torch.no_grad():
            target = teacher(x)
        loss = kd_loss(logits, target, y, temperature=temperature, alpha=alpha)
        if hints is not None:
            loss = loss + hint_weight * hints.loss()
        return loss

    try:
        return fit(model, data, options, loss_fn=loss_fn, params=params, after_step=after_step,
                   progress=progress, desc=desc, log=log)
    finally:
        if hints is not None:
            hints.remove()


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` on preprocessed ``x`` (eval mode, restored)."""
    was = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    finally:
        model.train(was)
    return 100.0 * correct / max(1, len(x))


def finetune_phrase(tuned: dict | None) -> str:
    """", then N fine-tuning steps in S s" for a technique's report line, or ""."""
    if not isinstance(tuned, dict) or not tuned.get("steps"):
        return ""
    return f", then {tuned['steps']} fine-tuning steps in {tuned.get('seconds', 0):.0f} s"
