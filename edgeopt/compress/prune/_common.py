"""What both pruning styles share: data coercion, name patterns, the teacher."""

from __future__ import annotations

import torch
from torch import nn

from edgeopt.core.canonical import editable, is_program
from edgeopt.core.errors import DataError
from edgeopt.core.step import StepContext
from edgeopt.core.train import TrainData

LAYERS = (nn.Conv2d, nn.Linear)


def split(data: TrainData, val_size: int, seed: int) -> tuple[TrainData, TrainData | None]:
    """(train, val): ``val_size`` seeded held-out samples that fine-tuning never sees."""
    if val_size <= 0 or not data.has_labels:
        return data, None
    if val_size >= len(data):
        raise DataError(f"prune: val_size {val_size} leaves no training samples "
                        f"(the data has {len(data)})")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    y = data.labels()
    return TrainData(x=data.x[train], y=y[train]), TrainData(x=data.x[val], y=y[val])


def layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LAYERS)}


def teacher_source(ctx: StepContext, model: nn.Module) -> nn.Module:
    """The model to distil from: the pipeline's recipe-start model when the context
    carries one (``StepContext.teacher``), else the model as it was before this step.
    (Not ``a or b``: an empty ``nn.Sequential`` is falsy.)"""
    return model if ctx.teacher is None else ctx.teacher


def editable_model(model: nn.Module, example: torch.Tensor | None, what: str) -> nn.Module:
    """``model``, or for a loaded TorchScript / torch.export program its canonical copy
    (traced on ``example``): a program's layers are not modules pruning could find or cut."""
    if not is_program(model):
        return model
    if example is None:
        kind = "TorchScript" if isinstance(model, torch.jit.ScriptModule) else "torch.export"
        raise DataError(f"{what}: a loaded {kind} model is traced into editable layers on "
                        f"example inputs; pass data")
    return editable(model, example, what)
