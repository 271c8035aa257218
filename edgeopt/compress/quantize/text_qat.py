"""The ``text_qat`` step: quantization-aware distillation of a transformers encoder, before
export, for the int8 that follows (``text_int8``).

Every ``nn.Linear`` of the model computes, while it trains, what ONNX Runtime's dynamic int8
MatMul computes: the input quantized per tensor to uint8 on its own range (including 0, as
DynamicQuantizeLinear does) and the weight to int8 per output channel, symmetric (as
``text_int8_ops`` writes it), both rounded straight through (the gradient passes the rounding
as if it were not there). The fake-quantized copy is distilled to the float original on the
training texts (``text_distill``: 1 - cos of the pooled output, and the per-layer hidden
states), so the weights, biases and LayerNorm gains move to where the int8 model's output
is closest to the float one's; LayerNorm gains are what set the outlier channels that
per-tensor activations lose most on. The weights that come out are float; the int8 step
after it quantizes them on the same grid. No labels are needed: the float model is the
target (distillation-aware QAT; for a classifier the target is its logits).

Measured on MiniLM and fortunes (docs/text.md): it does not beat post-training int8 there.
The simulated int8 cosine rises (0.9989 -> 0.9992 in 300 steps) by less than the float
model drifts, and the int8 built from it lands where post-training int8 does (0.9981). No
recipe runs it; it is a step for models whose int8 loss the weights can absorb.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.compress.distill.text_distill import TextDistillConfig, distill, tensors
from edgeopt.compress.distill.text_student import check_hf_model, encoder_layers
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import register
from edgeopt.core.step import StepContext, StepRecord, StepResult


@dataclass(frozen=True, kw_only=True)
class TextQATConfig(TextDistillConfig):
    steps: int = 300
    # Fine-tuning size steps, the model starts at the answer; with the hidden states as an
    # anchor. On MiniLM: lr 1e-5 and hidden weight 1 kept the float model at cos 0.9996 to
    # the original, lr 3e-5 and 0 at 0.9994 (int8 after it 0.9981 and 0.9978).
    lr: float = 1e-5
    hidden_weight: float = 1.0
    # Input channels of each Linear kept float in training, the ``k`` largest on the
    # first batches, as text_int8's outlier split deploys them (0: all int8). Without it
    # (MiniLM, fortunes) the all-int8 simulation starts at cos 0.993 and no lr moves it
    # far: 2e-5 gains 0.0005 in 210 steps, 3e-4 falls to 0.967. The outlier channels are
    # LayerNorm outputs that also feed the residual stream, so no weight change removes them.
    outlier_channels: int = 16
    range_batches: int = 8  # batches the channel ranges are measured on

    label = "qat"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.outlier_channels < 0 or self.range_batches < 1:
            raise ConfigError("text_qat: outlier_channels must be >= 0, range_batches >= 1")


def fake_dynamic_uint8(x: torch.Tensor) -> torch.Tensor:
    """``x`` through DynamicQuantizeLinear and back: uint8 on [min(x, 0), max(x, 0)]."""
    lo = x.detach().min().clamp(max=0)
    hi = x.detach().max().clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-12)
    zero = torch.round(-lo / scale).clamp(0, 255)
    q = (torch.round(x / scale) + zero).clamp(0, 255)
    return x + ((q - zero) * scale - x).detach()


def fake_int8_rows(w: torch.Tensor) -> torch.Tensor:
    """``w`` (out x in) rounded to int8 with a symmetric scale per output channel."""
    scale = (w.detach().abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
    q = torch.round(w / scale).clamp(-127, 127)
    return w + (q * scale - w).detach()


class FakeQuantLinear(nn.Module):
    """A Linear whose forward is the dynamic int8 MatMul's (plus the float bias); the input
    channels of ``float_channels`` stay float (text_int8_outliers' split)."""

    def __init__(self, linear: nn.Linear, float_channels: torch.Tensor | None = None):
        super().__init__()
        self.linear = linear
        mask = torch.ones(linear.in_features)
        if float_channels is not None:
            mask[float_channels] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        x = fake_dynamic_uint8(x * self.mask) + x * (1 - self.mask)
        return nn.functional.linear(x, fake_int8_rows(lin.weight), lin.bias)


def channel_ranges(model: nn.Module, feeds: list[dict]) -> dict[str, torch.Tensor]:
    """max |x| per input channel of every Linear, over ``feeds``."""
    amax, hooks = {}, []

    def hook(name):
        def record(_, args):
            a = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
            amax[name] = torch.maximum(amax[name], a) if name in amax else a
        return record

    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_pre_hook(hook(name)))
    try:
        with torch.no_grad():
            for feed in feeds:
                model(**feed)
    finally:
        for h in hooks:
            h.remove()
    return amax


def _swap(model: nn.Module, to_fake: bool, ranges: dict | None = None, k: int = 0) -> int:
    """Wraps every Linear (or unwraps them), the ``k`` largest-range input channels of each
    kept float; returns how many."""
    count = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if to_fake and isinstance(child, nn.Linear):
                full = f"{parent_name}.{name}" if parent_name else name
                keep = (torch.topk(ranges[full], min(k, child.in_features)).indices
                        if k and ranges and full in ranges else None)
                setattr(parent, name, FakeQuantLinear(child, keep))
                count += 1
            elif not to_fake and isinstance(child, FakeQuantLinear):
                setattr(parent, name, child.linear)
                count += 1
    return count


class TextQATRecord(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        return [f"QAT: {d['linears']} Linears trained as dynamic int8, {d['steps']} steps, "
                f"training cos of the int8 simulation to float {d['cos_first']:.5f} -> "
                f"{d['cos_last']:.5f}"]


@register(TextQATConfig, step="text_qat")
def text_qat(model, config: TextQATConfig, ctx: StepContext) -> StepResult:
    check_hf_model(model, "text_qat")
    feeds = tensors(ctx.calibration)
    teacher = model.eval()
    student = copy.deepcopy(teacher)
    # The classifier head and pooler are Linears too and are quantized by text_int8 alike.
    ranges = (channel_ranges(teacher, feeds[:config.range_batches])
              if config.outlier_channels else None)
    linears = _swap(student, to_fake=True, ranges=ranges, k=config.outlier_channels)
    depth = len(encoder_layers(student))
    fit = distill(student, teacher, list(range(depth)), feeds, config, ctx.log)
    _swap(student, to_fake=False)
    details = {"linears": linears, "layers": depth, "outlier_channels": config.outlier_channels,
               **fit, "config": config.to_dict()}
    return StepResult(student.eval(), TextQATRecord("quantization-aware distillation", details))
