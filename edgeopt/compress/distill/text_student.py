"""The ``text_student`` step: a half-depth transformer encoder, DistilBERT-style.

The student is the teacher with evenly spaced encoder layers kept, the first and the last
among them (Sanh et al. 2019 initialise DistilBERT from every other BERT layer, 0, 2, ...,
11 of 12, which starts the student far closer to the teacher than a fresh init). Measured
on all-MiniLM-L6-v2 and fortunes texts, the undistilled 3-layer student's cosine to the
teacher is 0.35 with layers 0, 2, 4, 0.48 with 1, 3, 5 and 0.65 with 0, 3, 5: keeping the
last layer matters most, so ``kept_layers`` picks ceil(j * (depth - 1) / (layers - 1)).
It is then distilled on the run's training texts: ``1 - cos`` between the student's and the
teacher's pooled embeddings (what a user of the embedding compares; for a classifier, KL on
the logits) plus ``hidden_weight`` x the MSE between each student layer's output and that
of the teacher layer it was copied from.

Training is made cheap enough for thousands of steps on a laptop CPU: the teacher's
targets are computed once per batch and kept (``TeacherTargets``), the pipeline batches
texts of similar token length, the word-embedding table is frozen, and the lr warms up
then decays on a cosine (``schedule``). On MiniLM and fortunes a step costs about 0.33 s
at 2 threads.

A step of an ``hf:`` model's recipe (``student-text``, ``student-int8-text``): its handler
takes the transformers model before export, the ``calibration`` it is given is a list of
tokenized batches of training texts.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult


@dataclass(frozen=True, kw_only=True)
class TextStudentConfig(StepConfig):
    layers: int = 0  # encoder layers the student keeps; 0: half the teacher's
    steps: int = 400  # optimizer steps, one batch of training texts each
    lr: float = 1e-3  # peak; 400 steps on MiniLM: held-out cos 0.891 at 1e-3, 0.889 at 5e-4
    warmup: float = 0.06  # fraction of the steps the lr ramps up over, then cosine to 0
    hidden_weight: float = 1.0  # weight of the per-layer hidden-state MSE
    # The word-embedding table is most of a small encoder's weights (11.7M of MiniLM's 22.7M)
    # and is copied from the teacher as it is; not updating it keeps the held-out cos the
    # same (0.889 vs 0.887) and makes each step cheaper.
    freeze_embeddings: bool = True
    cache_mb: int = 2048  # teacher targets kept in memory (fp16); beyond it, recomputed
    seed: int = 0
    pooling: str = "mean"  # set by the pipeline from the folder
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.layers < 0 or self.steps < 0 or self.lr <= 0 or self.hidden_weight < 0:
            raise ConfigError("text_student: layers and steps must be >= 0, lr > 0, "
                              "hidden_weight >= 0")
        if not 0 <= self.warmup < 1 or self.cache_mb < 0:
            raise ConfigError("text_student: warmup must be in [0, 1), cache_mb >= 0")


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
        raise ConfigError(f"text_student: {type(model).__name__} has no encoder.layer list "
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


def _pool(out, mask, cfg: TextStudentConfig):
    if getattr(out, "logits", None) is not None:
        return out.logits
    h = out.last_hidden_state
    if cfg.pooling == "cls":
        e = h[:, 0]
    else:
        m = mask.unsqueeze(-1).to(h.dtype)
        e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(e, dim=-1) if cfg.normalize else e


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the real (unpadded) tokens."""
    return ((a - b) ** 2 * mask).sum() / (mask.sum() * a.shape[-1])


def schedule(step: int, steps: int, warmup: float) -> float:
    """The lr factor at ``step``: a linear ramp over ``warmup`` of the steps, then cosine to 0."""
    ramp = min(1.0, (step + 1) / max(1.0, warmup * steps))
    return ramp * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps)))


class TeacherTargets:
    """The teacher's pooled output and kept-layer hidden states for each batch, computed on
    its first visit and kept (fp16) while they fit in ``budget`` bytes: with the pipeline's
    batches every batch is visited steps x 32 / texts times (8 for 3,000 steps on fortunes),
    and the teacher's forward is a third of a step's time."""

    def __init__(self, teacher: nn.Module, kept: list[int], config: TextStudentConfig,
                 budget: int):
        self.teacher, self.kept, self.config = teacher, kept, config
        self.budget, self.used, self.store = budget, 0, {}

    def __call__(self, index: int, feed: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if index in self.store:
            emb, hidden = self.store[index]
            return emb, [h.float() for h in hidden]
        with torch.no_grad():
            out = self.teacher(**feed, output_hidden_states=True, return_dict=True)
            emb = _pool(out, feed["attention_mask"], self.config)
            hidden = [out.hidden_states[k + 1] for k in self.kept]
        size = sum(h.numel() for h in hidden) * 2 + emb.numel() * 4
        if self.used + size <= self.budget:
            self.store[index] = (emb, [h.half() for h in hidden])
            self.used += size
        return emb, hidden


@register(TextStudentConfig, step="text_student")
def text_student(model, config: TextStudentConfig, ctx: StepContext) -> StepResult:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ConfigError("text_student applies to hf: text models (a transformers model); "
                          f"this model is a {type(model).__name__}")
    feeds = [{k: torch.as_tensor(v) for k, v in b.items()} for b in ctx.calibration or []]
    if not feeds:
        raise ConfigError("text_student: no training texts")
    teacher = model.eval()
    student, kept = make_student(teacher, config.layers)
    depth, layers = len(encoder_layers(teacher)), len(kept)
    torch.manual_seed(config.seed)
    if config.freeze_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad],
                            lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: schedule(k, config.steps, config.warmup))
    targets = TeacherTargets(teacher, kept, config, config.cache_mb << 20)
    gen, order = torch.Generator().manual_seed(config.seed), []
    student.eval()  # no dropout: the student is fitted to the teacher's deterministic outputs
    cos_log, started = [], time.perf_counter()
    for step in range(config.steps):
        if not order:  # each batch once per epoch, in a fresh order
            order = torch.randperm(len(feeds), generator=gen).tolist()
        index = order.pop()
        feed = feeds[index]
        t_emb, t_hidden = targets(index, feed)
        s_out = student(**feed, output_hidden_states=True, return_dict=True)
        s_emb = _pool(s_out, feed["attention_mask"], config)
        cos = nn.functional.cosine_similarity(s_emb, t_emb, dim=-1).mean()
        if getattr(s_out, "logits", None) is not None:
            out_loss = nn.functional.kl_div(s_emb.log_softmax(-1), t_emb.softmax(-1),
                                            reduction="batchmean")
        else:
            out_loss = 1 - cos
        mask = feed["attention_mask"].unsqueeze(-1).to(s_emb.dtype)
        hidden = sum(_masked_mse(s_out.hidden_states[j + 1], t, mask)
                     for j, t in enumerate(t_hidden)) / layers
        loss = out_loss + config.hidden_weight * hidden
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        cos_log.append(float(cos.detach()))
        if ctx.log and (step + 1) % max(1, config.steps // 10) == 0:
            recent = cos_log[-max(1, config.steps // 10):]
            ctx.log(f"  student step {step + 1}/{config.steps}: cos to teacher "
                    f"{sum(recent) / len(recent):.4f}, {time.perf_counter() - started:.0f} s")
    window = max(1, min(20, len(cos_log)))
    details = {"layers": layers, "teacher_layers": depth, "kept": kept, "steps": config.steps,
               "cos_first": sum(cos_log[:window]) / window if cos_log else 0.0,
               "cos_last": sum(cos_log[-window:]) / window if cos_log else 0.0,
               "cached_mb": round(targets.used / 2**20, 3),
               "config": config.to_dict(), "seconds": round(time.perf_counter() - started, 1)}
    return StepResult(student.eval(), TextStudentRecord("DistilBERT-style student", details))
