"""Unstructured magnitude pruning: the handler for ``MagnitudePruneConfig`` (step ``sparsify``).

The smallest-magnitude weights of every convolution and linear layer are set to
exactly zero, per layer (``scope: layer``) or ranked across the model
(``scope: global``). With ``finetune`` the sparsity grows during training on the
polynomial schedule of Zhu & Gupta 2017, ``s_t = s_f + (s_i - s_f)(1 - t/T)^3``,
recomputed every ``frequency`` steps; the masks are re-applied after every step,
so a pruned weight stays zero whatever the optimizer's momentum does. The result
is a plain module whose weights hold the zeros (no masks, no re-parametrisation).

The model is no faster: dense kernels multiply zeros too. What it buys is a model
file that compresses well (``compressed_size``) and a starting point for sparse
kernels; the meta says so rather than claiming speed.
"""

from __future__ import annotations

import copy
import time
import zlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from edgeopt.compress.distill.finetune import (
    FinetuneOptions,
    finetune,
    finetune_phrase,
    frozen_teacher,
)
from edgeopt.compress.prune._common import editable_model, layers, teacher_source
from edgeopt.core.config import enum_field, first_match
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult
from edgeopt.core.train import as_train_data, steps_per_epoch


class Scope(str, Enum):
    LAYER = "layer"  # every layer gets the same sparsity
    GLOBAL = "global"  # one magnitude threshold across all layers


@dataclass(frozen=True, kw_only=True)
class MagnitudePruneConfig(StepConfig):
    """Zero the smallest weights, gradually during fine-tuning or at once without it."""

    needs_training_data: ClassVar[bool] = True

    sparsity: float | None = None  # the final fraction of zero weights, in (0, 1)
    scope: Scope = Scope.GLOBAL
    initial_sparsity: float = 0.0
    frequency: int = 100  # steps between mask updates
    end: float = 0.75  # fraction of the fine-tune the schedule spans; the rest recovers
    ignore: tuple[str, ...] = ()  # globs of layers left dense
    finetune: FinetuneOptions | None = None

    def __post_init__(self) -> None:
        enum_field(self, "scope", Scope, "sparsify.scope")
        if self.sparsity is None:
            raise ConfigError("sparsify needs sparsity (the fraction of zero weights, in (0, 1))")
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"sparsify.sparsity must be in (0, 1), got {self.sparsity}")
        if not 0.0 <= self.initial_sparsity <= self.sparsity:
            raise ConfigError(f"sparsify.initial_sparsity must be in [0, sparsity="
                              f"{self.sparsity}], got {self.initial_sparsity}")
        if self.frequency < 1:
            raise ConfigError(f"sparsify.frequency must be >= 1 (steps), got {self.frequency}")
        if not 0.0 < self.end <= 1.0:
            raise ConfigError(f"sparsify.end must be in (0, 1], got {self.end}")


def polynomial_sparsity(progress: float, initial: float, final: float) -> float:
    """Zhu & Gupta's cubic schedule at ``progress`` = t/T in [0, 1]: fast at first, when
    there are many redundant weights, and slow at the end, when there are few left."""
    p = min(max(progress, 0.0), 1.0)
    return final + (initial - final) * (1.0 - p) ** 3


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float,
                    scope: Scope) -> dict[str, torch.Tensor]:
    """Boolean keep-masks with exactly ``round(sparsity * n)`` zeros per layer (layer
    scope) or in total (global scope). Index selection, not a threshold: ties at the
    threshold would otherwise make the count inexact."""
    if scope is Scope.LAYER:
        return {n: _mask(w.abs().flatten(), sparsity).view_as(w) for n, w in weights.items()}
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = _mask(flat, sparsity)
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return out


def _mask(magnitude: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = torch.ones_like(magnitude, dtype=torch.bool)
    k = round(sparsity * magnitude.numel())
    if k > 0:
        keep[torch.topk(magnitude, k, largest=False, sorted=False).indices] = False
    return keep


class GradualMasks:
    """``after_step`` for the fine-tune: raise the sparsity on schedule, keep zeros zero.

    ``total`` is the run's step budget; with only a time budget (``max_seconds``) the
    schedule follows the wall clock instead.
    """

    def __init__(self, model: nn.Module, names: list[str], config: MagnitudePruneConfig,
                 total: int | None, seconds: float | None) -> None:
        self.modules = {n: model.get_submodule(n) for n in names}
        self.config, self.total, self.seconds = config, total, seconds
        self.step, self.started = 0, time.perf_counter()
        self.sparsity = config.initial_sparsity
        self.masks = self._masks(self.sparsity)
        self.apply()

    def progress(self) -> float:
        if self.total:
            done = self.step / self.total
        else:
            done = (time.perf_counter() - self.started) / (self.seconds or 1.0)
        return done / self.config.end

    def _masks(self, sparsity: float) -> dict[str, torch.Tensor]:
        weights = {n: m.weight.detach() for n, m in self.modules.items()}
        return magnitude_masks(weights, sparsity, self.config.scope)

    @torch.no_grad()
    def apply(self) -> None:
        for name, module in self.modules.items():
            module.weight.mul_(self.masks[name])

    @torch.no_grad()
    def __call__(self, _model: nn.Module) -> None:
        self.step += 1
        if self.step % self.config.frequency == 0:
            self.sparsity = polynomial_sparsity(self.progress(), self.config.initial_sparsity,
                                                self.config.sparsity)
            self.masks = self._masks(self.sparsity)
        self.apply()

    def finish(self) -> None:
        """The final sparsity exactly, even when a time cap ended the schedule early."""
        self.sparsity = self.config.sparsity
        self.masks = self._masks(self.sparsity)
        self.apply()


def sparsity_report(model: nn.Module, names: list[str]) -> dict[str, Any]:
    per_layer, zeros, total = {}, 0, 0
    for name in names:
        w = model.get_submodule(name).weight
        z = int((w == 0).sum())
        per_layer[name] = round(z / w.numel(), 4)
        zeros, total = zeros + z, total + w.numel()
    params = sum(p.numel() for p in model.parameters())
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {"sparsity": round(zeros / total, 4), "layers": per_layer, "zero_weights": zeros,
            "prunable_weights": total, "model_sparsity": round(all_zeros / params, 4)}


def compressed_size(path: str | Path, level: int = 9) -> dict[str, int]:
    """Bytes of a file raw and zlib-compressed: what sparsity buys on disk or on the wire."""
    data = Path(path).read_bytes()
    return {"raw": len(data), "compressed": len(zlib.compress(data, level))}


def _total_steps(options: FinetuneOptions, n: int) -> int | None:
    n = min(n, options.train_size or n)
    limits = [options.steps] if options.steps else []
    if options.epochs:
        limits.append(max(1, round(options.epochs * steps_per_epoch(n, options.batch_size))))
    return min(limits) if limits else None


class SparsifyRecord(StepRecord):
    """Zeros only pay on disk once compressed: ``on_artifact`` measures the real file."""

    def summary(self) -> list[str]:
        text = f"{self.details.get('sparsity', 0):.1%} of prunable weights are zero"
        if isinstance(art := self.details.get("artifact_bytes"), dict):
            text += (f"; artifact {art['raw']:,} B raw, {art['compressed']:,} B "
                     "zlib-compressed (dense kernels: no speed-up)")
        return [text + finetune_phrase(self.details.get("finetune"))]

    def on_artifact(self, model_file: Path) -> None:
        self.details["artifact_bytes"] = compressed_size(model_file)


@register(MagnitudePruneConfig, step="sparsify")
def magnitude_prune(model: nn.Module, config: MagnitudePruneConfig,
                    ctx: StepContext) -> StepResult:
    data, progress = as_train_data(ctx.data, "sparsify"), ctx.progress
    if config.finetune is not None and data is None:
        raise DataError("sparsify: finetune needs training data")
    started = time.perf_counter()
    model = editable_model(model, None if data is None else data.x[:2], "sparsify")
    sparse = copy.deepcopy(model).eval()  # the caller's model is not modified
    names = [n for n in layers(sparse) if first_match(n, config.ignore) is None]
    if not names:
        raise ConfigError("sparsify: no convolution or linear layer left to prune "
                          f"(ignore={list(config.ignore)})")
    tuned = None
    if config.finetune is None:
        masks = GradualMasks(sparse, names, config.replace(initial_sparsity=config.sparsity),
                             total=1, seconds=None)
    else:
        opts = config.finetune
        masks = GradualMasks(sparse, names, config, _total_steps(opts, len(data)),
                             opts.max_seconds)
        teacher_src = teacher_source(ctx, model)
        teacher = frozen_teacher(teacher_src) if opts.distill else None
        tuned = finetune(sparse, data, opts, teacher=teacher,
                         after_step=masks, progress=progress, desc="sparsify").to_dict()
        tuned["schedule_sparsity_at_end"] = round(masks.sparsity, 4)
    masks.finish()
    sparse.eval()
    details = {
        **sparsity_report(sparse, names), "scope": config.scope.value, "finetune": tuned,
        "speedup": "none: dense kernels multiply the zeros; the gain is compressed size",
        "seconds": round(time.perf_counter() - started, 2), "config": config.to_dict(),
    }
    return StepResult(sparse, SparsifyRecord("unstructured pruning", details))
