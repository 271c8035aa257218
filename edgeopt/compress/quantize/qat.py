"""Quantization-aware training with learned step sizes (LSQ): the handler for ``QATConfig``.

Input: the simulated-quantized GraphModule a ``quantize`` step produced
(``QuantConv2d``/``QuantLinear`` with ``w_scale``, ``ActQuant`` with
``scale``/``zero_point``). Output: the same kind of module, fine-tuned, which
exports exactly as before.

* Weights and biases train through the fake-quant ops' straight-through
  gradient. BN was folded by PTQ, so the folded conv weights are what is
  fine-tuned (no BN statistics drift, and the trained model is the deployed one).
* With ``learn_scales`` every weight scale and every activation scale is a
  trained tensor (LSQ, Esser et al. 2020): ``ops.fake_quant``'s backward gives
  the LSQ scale gradient. Zero-points stay fixed. A quantizer that shares its
  source's grid (after max-pool, flatten) shares the very tensor during
  training, so the two stay equal and ORT can still run the pass-through op on
  integers.
* Power-of-two weights learn their scale too: the grid's levels stay 0 and
  +-2^k times the scale whatever the scale is, so the shift/add property holds,
  and the best scale of that coarse grid is rarely the calibrated one (the MSE
  observer searches the same axis). Rounding is straight-through in the log
  domain (``ops.fake_quant_pow2``).
* Scales are clamped positive after every step; afterwards every int32 bias
  scale is recomputed from the trained scales (input scale x weight scale).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx

from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS, ActQuant, Mode
from edgeopt.compress.quantize.ptq import _set_bias_scales
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import register
from edgeopt.core.step import DataKind, DataNeed, StepConfig, StepContext, StepRecord, StepResult
from edgeopt.core.train import TrainData, TrainOptions, fit

# Smallest scale kept after a step: a scale at zero divides by zero in the op.
MIN_SCALE = 1e-8


@dataclass(frozen=True, kw_only=True)
class QATConfig(TrainOptions, StepConfig):
    """Fine-tune a quantized model on labelled training data (cross-entropy).

    The budget (``steps``/``epochs``/``max_seconds``) defaults to one epoch.
    ``train_size`` limits the training set (a seeded subset of the train split).
    ``scale_lr`` is the peak learning rate of the scales (default: ``lr``).
    """

    needs_training_data: ClassVar[bool] = True
    default_epochs: ClassVar[float | None] = 1.0  # one pass unless the recipe says otherwise

    learn_scales: bool = True
    scale_lr: float | None = None
    train_size: int | None = None

    def data_need(self) -> DataNeed:
        # ``seed`` orders the training; the subset is drawn with the run's data seed.
        return DataNeed(DataKind.TRAINING, size=self.train_size)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_lr is not None and not self.scale_lr > 0:
            raise ConfigError(f"qat.scale_lr must be > 0, got {self.scale_lr}")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"qat.train_size must be >= 1, got {self.train_size}")


def _root(quantizers: dict[str, ActQuant], name: str) -> ActQuant:
    q = quantizers[name]
    while q.shared_from is not None:
        q = quantizers[q.shared_from]
    return q


def _scales(gm: fx.GraphModule) -> tuple[list[torch.Tensor], dict[str, ActQuant]]:
    """Make every scale a trained leaf tensor; tie shared quantizers to their source's."""
    quantizers = {n: m for n, m in gm.named_modules() if isinstance(m, ActQuant)}
    scales = []
    for layer in gm.modules():
        if isinstance(layer, QUANT_LAYERS) and layer.quant_enabled:
            scales.append(layer.w_scale.requires_grad_(True))
    for q in quantizers.values():
        if q.shared_from is None and q.mode is Mode.QUANT:
            scales.append(q.scale.requires_grad_(True))
    for name, q in quantizers.items():
        if q.shared_from is not None:
            q.scale = _root(quantizers, name).scale  # the same tensor: one trained grid
    return scales, quantizers


def _untie(scales: list[torch.Tensor], quantizers: dict[str, ActQuant]) -> None:
    for s in scales:
        s.requires_grad_(False)
    for name, q in quantizers.items():
        if q.shared_from is not None:
            # Separate buffers again, equal in value, as PTQ leaves them (export does not
            # expect aliased buffers).
            q.scale = _root(quantizers, name).scale.detach().clone()


def _check_data(data) -> TrainData:
    if isinstance(data, TrainData) and data.has_labels:
        return data
    got = "no data" if data is None else (
        "training data without labels" if isinstance(data, TrainData)
        else f"{type(data).__name__} (unlabelled calibration inputs)")
    raise ConfigError(f"qat needs labelled training data (a dataset with labels, passed as "
                      f"TrainData(x, y)); got {got}")


class QATRecord(StepRecord):
    def summary(self) -> list[str]:
        return [f"{self.details.get('steps')} training steps in "
                f"{self.details.get('seconds', 0):.0f} s"]


@register(QATConfig, step="qat")
def quantization_aware_training(model, config: QATConfig, ctx: StepContext) -> StepResult:
    data, progress = _check_data(ctx.data), ctx.progress
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    if not layers:
        raise ConfigError("qat needs a quantized model: put a quantize step before qat")
    gm = copy.deepcopy(model)  # the caller's model (and its meta) is not modified
    scales, quantizers = _scales(gm) if config.learn_scales else ([], {})
    weights = [p for p in gm.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in weights if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in weights if p.ndim <= 1], "weight_decay": 0.0},
        # The scales are not weights: decay would pull every range to zero.
        {"params": scales, "weight_decay": 0.0, "lr": config.scale_lr or config.lr},
    ]
    groups = [g for g in groups if g["params"]]

    def keep_positive(_model) -> None:
        for s in scales:
            s.clamp_(min=MIN_SCALE)

    started = time.perf_counter()
    try:
        result = fit(gm, data, config, params=groups, after_step=keep_positive,
                     progress=progress, desc="qat")
    finally:
        if config.learn_scales:
            _untie(scales, quantizers)
    with torch.no_grad():
        _set_bias_scales(gm)
    details = {
        **result.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
        "train_samples": len(data),
        "learn_scales": config.learn_scales,
        "config": config.to_dict(),
    }
    return StepResult(gm.eval(), QATRecord("qat", details))
