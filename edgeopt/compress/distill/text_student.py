"""The ``text_student`` step: a half-depth transformer encoder, DistilBERT-style.

The student is the teacher with evenly spaced encoder layers kept, the first and the last
among them (Sanh et al. 2019 initialise DistilBERT from every other BERT layer, 0, 2, ...,
11 of 12, which starts the student far closer to the teacher than a fresh init). Measured
on all-MiniLM-L6-v2 and fortunes texts, the undistilled 3-layer student's cosine to the
teacher is 0.35 with layers 0, 2, 4, 0.48 with 1, 3, 5 and 0.65 with 0, 3, 5: keeping the
last layer matters most, so ``kept_layers`` picks ceil(j * (depth - 1) / (layers - 1)).
It is then distilled on the run's training texts (``text_distill.distill``: pooled cosine
and per-layer hidden states, each student layer against the teacher layer it was copied
from).

A step of an ``hf:`` model's recipe (``student-text``, ``student-int8-text``): its handler
takes the transformers model before export, the ``calibration`` it is given is a list of
tokenized batches of training texts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from edgeopt.compress.distill.text_distill import TextDistillConfig, distill, tensors
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import register
from edgeopt.core.step import StepContext, StepRecord, StepResult


@dataclass(frozen=True, kw_only=True)
class TextStudentConfig(TextDistillConfig):
    layers: int = 0  # encoder layers the student keeps; 0: half the teacher's

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers < 0:
            raise ConfigError("text_student: layers must be >= 0")


class TextStudentRecord(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        return [f"student: {d['layers']} of {d['teacher_layers']} encoder layers "
                f"(teacher layers {d['kept']}), distilled {d['steps']} steps, "
                f"training cos to teacher {d['cos_first']:.4f} -> {d['cos_last']:.4f}"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``encoder.layer`` list of a BERT-family model (base or with a head)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__} has no encoder.layer list "
                          "(BERT-family models only)")
    return layers


def kept_layers(depth: int, layers: int) -> list[int]:
    """Evenly spaced teacher layers, the first and the last kept: 3 of 6 -> 0, 3, 5."""
    if layers == 1:
        return [depth - 1]
    return [-(-j * (depth - 1) // (layers - 1)) for j in range(layers)]


def make_student(teacher: nn.Module, layers: int) -> tuple[nn.Module, list[int]]:
    depth = len(encoder_layers(teacher))
    layers = layers or max(1, depth // 2)
    if not 1 <= layers < depth:
        raise ConfigError(f"text_student: layers must be in 1..{depth - 1}, got {layers}")
    kept = kept_layers(depth, layers)
    student = copy.deepcopy(teacher)
    base = getattr(student, getattr(student, "base_model_prefix", ""), student)
    base.encoder.layer = nn.ModuleList(base.encoder.layer[i] for i in kept)
    student.config.num_hidden_layers = layers
    return student, kept


def check_hf_model(model, step: str) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ConfigError(f"{step} applies to hf: text models (a transformers model); "
                          f"this model is a {type(model).__name__}")


@register(TextStudentConfig, step="text_student")
def text_student(model, config: TextStudentConfig, ctx: StepContext) -> StepResult:
    check_hf_model(model, "text_student")
    feeds = tensors(ctx.calibration)
    teacher = model.eval()
    student, kept = make_student(teacher, config.layers)
    fit = distill(student, teacher, kept, feeds, config, ctx.log)
    details = {"layers": len(kept), "teacher_layers": len(encoder_layers(teacher)),
               "kept": kept, **fit, "config": config.to_dict()}
    return StepResult(student.eval(), TextStudentRecord("DistilBERT-style student", details))
