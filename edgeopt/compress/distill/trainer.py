"""The ``distill`` step: train a student from a teacher's soft targets (and hints).

Two uses, one handler:

* **recover accuracy** after pruning, clustering, low-rank or quantization: the
  student is the incoming (already compressed) model and the teacher, by
  default, the model as it was before the recipe's first step (``teacher:
  original``);
* **train a smaller architecture**: ``student: pkg.module:factory`` with
  ``student_kwargs`` builds a fresh student (e.g. a half-width ResNet), which
  learns from the incoming model as teacher.

The loss is ``alpha * T^2 * KL_T + (1 - alpha) * CE`` plus ``hint_weight`` x the
hint losses (``distill/loss.py``); the loop is ``core.train.fit`` (budget,
progress, checkpoints, exact resume).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from edgeopt.compress.distill.finetune import FinetuneOptions, finetune, frozen_teacher
from edgeopt.compress.train_bn import batchnorm_for_training
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.model import build_from_factory, load_model
from edgeopt.core.registry import register
from edgeopt.core.step import DataKind, DataNeed, StepConfig, StepContext, StepRecord, StepResult
from edgeopt.core.train import as_train_data


@dataclass(frozen=True, kw_only=True)
class DistillConfig(FinetuneOptions, StepConfig):
    """Knowledge distillation (Hinton et al. 2015; FitNets hints).

    ``teacher``: ``original`` (the model before the recipe's first step; the
    incoming model when there is no recipe), ``input`` (the incoming model), or
    a MODEL spec (``.pt2``, ``.onnx``, ``pkg.module:factory`` with
    ``teacher_weights``). ``student``: None to fine-tune the incoming model, or
    ``pkg.module:factory`` (``student_kwargs`` passed to it) for a new student
    trained from its initialisation. The budget defaults to one epoch.
    """

    needs_training_data: ClassVar[bool] = True
    default_epochs: ClassVar[float | None] = 1.0  # one pass unless the recipe says otherwise

    teacher: str = "original"
    teacher_weights: str | None = None
    student: str | None = None
    student_kwargs: dict[str, Any] = field(default_factory=dict)

    def data_need(self) -> DataNeed:
        return DataNeed(DataKind.TRAINING, size=self.train_size)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.distill:
            raise ConfigError("distill.distill must be true (use the qat step or a technique's "
                              "finetune with distill: false to train on labels alone)")
        if self.student is not None and ":" not in self.student:
            raise ConfigError(f"distill.student must be pkg.module:factory, got {self.student!r}")


def _teacher(model: nn.Module, config: DistillConfig,
             ctx: StepContext) -> tuple[nn.Module, str]:
    if config.teacher == "input":
        return model, "incoming model"
    if config.teacher == "original":
        if ctx.teacher is not None:
            return ctx.teacher, "original model"
        return model, "incoming model"
    handle = load_model(config.teacher, weights=config.teacher_weights)
    return handle.module, handle.source


class DistillRecord(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        return [f"distilled from the {d.get('teacher')} into the {d.get('student')} "
                f"(T={d.get('temperature')}, alpha={d.get('alpha')}): {d.get('steps')} "
                f"steps in {d.get('seconds', 0):.0f} s"]


@register(DistillConfig, step="distill")
def distill(model: nn.Module, config: DistillConfig, ctx: StepContext) -> StepResult:
    # Unlabelled inputs train on soft targets alone (alpha = 1).
    data, progress = as_train_data(ctx.data, "distill"), ctx.progress
    if data is None:
        raise DataError("distillation needs training inputs (TrainData, or an array of inputs)")
    teacher, teacher_name = _teacher(model, config, ctx)
    if config.student is None:
        student, student_name = copy.deepcopy(model), "incoming model"
    else:
        # Seeded so that a label-only baseline built with the same seed starts from the
        # very same weights (the comparison distillation is judged by).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            student = build_from_factory(config.student, config.student_kwargs)
        student_name = config.student
    student.train()
    # A student whose BatchNorms were folded (an ONNX export) trains with them put back.
    with batchnorm_for_training(student, data.x) as train_bn:
        result = finetune(student, data, config, teacher=frozen_teacher(teacher),
                          progress=progress, desc="distill")
    student.eval()
    details = {
        "teacher": teacher_name, "student": student_name,
        "student_params": sum(p.numel() for p in student.parameters()),
        "temperature": config.temperature, "alpha": config.alpha if data.has_labels else 1.0,
        "hints": dict(config.hints), "train_samples": len(data), **result.to_dict(),
        **({"batchnorm_for_training": len(train_bn)} if train_bn else {}),
    }
    return StepResult(student, DistillRecord("distillation", details))
