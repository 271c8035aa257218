"""fp16 weight storage (recipe step ``fp16_weights``): float artifacts at half the bytes.

Every float convolution and linear layer of the canonical, BN-folded model keeps
its weight as float16 and widens it to float32 in forward. The ONNX exporter
writes such a weight as an fp16 initializer and a Cast, which ONNX Runtime folds
when it loads the model: the file's weights take half the bytes and the graph
still computes in fp32, so any CPU runs it. Biases stay float32 (a few bytes per
channel; rounding them buys nothing). Quantized or clustered layers are left as
they are, so this is a last step on a float model (after pruning, low rank...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.core.calib import calibration_batches
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.config import first_match
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.core.registry import register
from edgeopt.core.step import DataKind, DataNeed, StepConfig, StepContext, StepRecord, StepResult

FP16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True, kw_only=True)
class Fp16WeightsConfig(StepConfig):
    """Store float conv/linear weights as fp16; ``skip`` (globs) and layers with fewer
    than ``min_weights`` weights stay fp32."""

    skip: tuple[str, ...] = ()
    min_weights: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.skip, str):
            object.__setattr__(self, "skip", (self.skip,))
        if self.min_weights < 0:
            raise ConfigError(f"fp16_weights.min_weights must be >= 0, got {self.min_weights}")

    def data_need(self) -> DataNeed:
        # Two inputs: the example a plain module is traced on; nothing is calibrated.
        return DataNeed(DataKind.CALIBRATION, size=2)


class Fp16Conv2d(nn.Conv2d):
    """A Conv2d whose weight is stored fp16 and computed with in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight.float(), self.bias)


class Fp16Linear(nn.Linear):
    """A Linear whose weight is stored fp16 and computed with in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.float(), self.bias)


def _why_kept(name: str, layer: nn.Module, config: Fp16WeightsConfig) -> str | None:
    if type(layer) not in (nn.Conv2d, nn.Linear):
        return f"not a float layer ({type(layer).__name__})"
    if first_match(name, config.skip) is not None:
        return "skip"
    if layer.weight.numel() < config.min_weights:
        return f"{layer.weight.numel()} weights < min_weights {config.min_weights}"
    if float(layer.weight.detach().abs().max()) > FP16_MAX:
        return "weights beyond the fp16 range"
    return None


def _store_half(layer: nn.Module) -> float:
    """Make ``layer`` store its weight as fp16; returns the largest rounding error."""
    w = layer.weight.detach()
    half = w.half()
    layer.weight = nn.Parameter(half, requires_grad=False)
    # Same parameters, same submodule name and graph node: only the forward changes.
    layer.__class__ = Fp16Conv2d if isinstance(layer, nn.Conv2d) else Fp16Linear
    return float((half.float() - w).abs().max())


class Fp16Record(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        text = (f"{len(d['layers'])} layers store fp16 weights ({d['weights']:,} weights, "
                f"{2 * d['weights']:,} B less), computed in fp32")
        if d.get("artifact_bytes") is not None:
            text += f"; artifact {d['artifact_bytes']:,} B"
        return [text]

    def on_artifact(self, model_file: Path) -> None:
        self.details["artifact_bytes"] = Path(model_file).stat().st_size


@register(Fp16WeightsConfig, step="fp16_weights")
def store_fp16_weights(model, config: Fp16WeightsConfig, ctx: StepContext) -> StepResult:
    inputs = ctx.inputs()
    example = None if inputs is None else calibration_batches(inputs, size=2, batch_size=2)[0]
    gm = canonical_copy(model, example)
    folded = fold_batchnorm(gm)  # folding after rounding would undo the fp16 storage
    layers, kept, worst = [], {}, 0.0
    for name, layer in leaf_modules(gm):
        why = _why_kept(name, layer, config)
        if why is not None:
            kept[name] = why
            continue
        worst = max(worst, _store_half(layer))
        layers.append(name)
    if not layers:
        raise ConfigError(f"fp16_weights: no layer left to store in fp16 ({kept})")
    weights = sum(gm.get_submodule(n).weight.numel() for n in layers)
    details = {"layers": layers, "kept_fp32": kept, "weights": weights,
               "max_weight_error": worst, "folded_bn": folded, "config": config.to_dict()}
    return StepResult(gm.eval(), Fp16Record("fp16 weight storage", details))
