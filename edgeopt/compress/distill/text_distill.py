"""Distilling a smaller transformers encoder into its teacher, on tokenized training texts.

Shared by the steps that change an ``hf:`` model's shape before export (``text_student``
drops layers, ``text_heads`` drops attention heads): ``distill`` fits the changed model to
the original one. The loss is ``1 - cos`` between the two pooled embeddings (what a user of
the embedding compares; for a classifier, KL on the logits) plus ``hidden_weight`` x the
MSE between each student layer's output and that of the teacher layer it stands for.

It is made cheap enough for thousands of steps on a laptop CPU: the teacher's targets are
computed once per batch and kept (``TeacherTargets``), the pipeline batches texts of similar
token length, the word-embedding table is frozen, and the lr warms up then decays on a
cosine (``schedule``). On MiniLM and fortunes a step costs about 0.33 s at 2 threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.core.step import StepConfig


@dataclass(frozen=True, kw_only=True)
class TextDistillConfig(StepConfig):
    """The distillation fields of a step on an ``hf:`` model before export."""

    steps: int = 400  # optimizer steps, one batch of training texts each
    lr: float = 1e-3  # peak; 400 steps on MiniLM: held-out cos 0.891 at 1e-3, 0.889 at 5e-4
    warmup: float = 0.06  # fraction of the steps the lr ramps up over, then cosine to 0
    hidden_weight: float = 1.0  # weight of the per-layer hidden-state MSE
    # The word-embedding table is most of a small encoder's weights (11.7M of MiniLM's 22.7M)
    # and is copied from the teacher as it is; not updating it keeps the held-out cos the
    # same (0.889 vs 0.887) and makes each step cheaper.
    freeze_embeddings: bool = True
    cache_mb: int = 4096  # teacher targets kept in memory (fp16); beyond it, recomputed
    spans: int = 0  # random word spans of each training text added (core/data/text_spans)
    # A file of more unlabelled texts (.txt one a line, or .jsonl/.csv/.tsv with a text
    # column) distilled on beside the training texts: a target needs no label. Meant for a
    # user's own texts of the kind they embed; off-domain ones (/usr/share/doc paragraphs)
    # lowered MiniLM's student's held-out cos here (docs/text.md).
    texts: str = ""
    seed: int = 0
    pooling: str = "mean"  # set by the pipeline from the folder
    normalize: bool = True

    label = "student"  # the report's stage name for the model this step makes

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lr <= 0 or self.hidden_weight < 0:
            raise ConfigError(f"{type(self).__name__}: steps must be >= 0, lr > 0, "
                              "hidden_weight >= 0")
        if not 0 <= self.warmup < 1 or self.cache_mb < 0 or self.spans < 0:
            raise ConfigError(f"{type(self).__name__}: warmup must be in [0, 1), cache_mb and "
                              "spans >= 0")

    def texts_needed(self) -> int:
        """Training texts the step uses: one batch of 32 a step."""
        return 32 * self.steps


def pool(out, mask, cfg: TextDistillConfig) -> torch.Tensor:
    """The model's output as the user sees it: logits, or the pooled (normalised) embedding."""
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
    """The teacher's pooled output and chosen layers' hidden states for each batch, computed
    on its first visit and kept (fp16) while they fit in ``budget`` bytes: with the
    pipeline's batches every batch is visited steps x 32 / texts times (8 for 3,000 steps on
    fortunes), and the teacher's forward is a third of a step's time."""

    def __init__(self, teacher: nn.Module, layers: list[int], config: TextDistillConfig,
                 budget: int):
        self.teacher, self.layers, self.config = teacher, layers, config
        self.budget, self.used, self.store = budget, 0, {}

    def __call__(self, index: int, feed: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if index in self.store:
            emb, hidden = self.store[index]
            return emb, [h.float() for h in hidden]
        with torch.no_grad():
            out = self.teacher(**feed, output_hidden_states=True, return_dict=True)
            emb = pool(out, feed["attention_mask"], self.config)
            hidden = [out.hidden_states[k + 1] for k in self.layers]
        size = sum(h.numel() for h in hidden) * 2 + emb.numel() * 4
        if self.used + size <= self.budget:
            self.store[index] = (emb, [h.half() for h in hidden])
            self.used += size
        return emb, hidden


def tensors(batches) -> list[dict[str, torch.Tensor]]:
    feeds = [{k: torch.as_tensor(v) for k, v in b.items()} for b in batches or []]
    if not feeds:
        raise ConfigError("text distillation: no training texts")
    return feeds


def distill(student: nn.Module, teacher: nn.Module, kept: list[int], feeds: list[dict],
            config: TextDistillConfig, log: Callable | None = None) -> dict:
    """Fits ``student`` (its layer j stands for the teacher's ``kept[j]``) to ``teacher`` for
    ``config.steps`` steps, in place; returns the training cosine at the start and the end,
    the seconds and the MB of teacher targets kept."""
    torch.manual_seed(config.seed)
    if config.freeze_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad],
                            lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: schedule(k, config.steps, config.warmup))
    targets = TeacherTargets(teacher.eval(), kept, config, config.cache_mb << 20)
    gen, order = torch.Generator().manual_seed(config.seed), []
    student.eval()  # no dropout: the student is fitted to the teacher's deterministic outputs
    cos_log, started, every = [], time.perf_counter(), max(1, config.steps // 10)
    for step in range(config.steps):
        if not order:  # each batch once per epoch, in a fresh order
            order = torch.randperm(len(feeds), generator=gen).tolist()
        index = order.pop()
        feed = feeds[index]
        t_emb, t_hidden = targets(index, feed)
        s_out = student(**feed, output_hidden_states=True, return_dict=True)
        s_emb = pool(s_out, feed["attention_mask"], config)
        cos = nn.functional.cosine_similarity(s_emb, t_emb, dim=-1).mean()
        if getattr(s_out, "logits", None) is not None:
            out_loss = nn.functional.kl_div(s_emb.log_softmax(-1), t_emb.softmax(-1),
                                            reduction="batchmean")
        else:
            out_loss = 1 - cos
        mask = feed["attention_mask"].unsqueeze(-1).to(s_emb.dtype)
        hidden = sum(_masked_mse(s_out.hidden_states[j + 1], t, mask)
                     for j, t in enumerate(t_hidden)) / len(kept)
        loss = out_loss + config.hidden_weight * hidden
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        cos_log.append(float(cos.detach()))
        if log and (step + 1) % every == 0:
            recent = sum(cos_log[-every:]) / every
            log(f"  {config.label} step {step + 1}/{config.steps}: cos to teacher "
                f"{recent:.4f}, {time.perf_counter() - started:.0f} s")
    student.get_input_embeddings().weight.requires_grad_(True)
    window = max(1, min(20, len(cos_log)))
    return {"steps": config.steps,
            "cos_first": sum(cos_log[:window]) / window if cos_log else 0.0,
            "cos_last": sum(cos_log[-window:]) / window if cos_log else 0.0,
            "cached_mb": round(targets.used / 2**20, 3),
            "seconds": round(time.perf_counter() - started, 1)}
