"""Post-training quantization: the handler for ``QuantConfig``.

fold BN -> quantize weights -> place activation quantizers -> calibrate ->
int32 biases -> empirical bias correction. Returns a simulated-quantized
canonical GraphModule that ``edgeopt.compile`` lowers to a QDQ ONNX graph.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from tqdm import tqdm

from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.compress.quantize.adaround import adaround
from edgeopt.compress.quantize.bias_correction import correct_bias
from edgeopt.compress.quantize.fake_quant import (
    QUANT_LAYERS,
    ActQuant,
    Mode,
    QuantConv2d,
    QuantLinear,
)
from edgeopt.compress.quantize.observers import Observer
from edgeopt.compress.quantize.placement import insert_act_quantizers
from edgeopt.compress.quantize.spec import QuantConfig
from edgeopt.core.calib import calibration_batches
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.graph import leaf_modules
from edgeopt.core.registry import register
from edgeopt.core.step import StepContext, StepRecord, StepResult


def _swap_layers(gm: fx.GraphModule, config: QuantConfig) -> dict[str, str]:
    precision = {}
    for name, mod in leaf_modules(gm):
        specs = config.for_layer(name)
        precision[name] = config.precision_label(name)
        if specs is None:
            continue
        cls = QuantConv2d if isinstance(mod, torch.nn.Conv2d) else QuantLinear
        gm.set_submodule(name, cls.from_float(mod, specs[0]))
    return precision


def _run(gm, batches, desc, progress):
    with torch.no_grad():
        for x in tqdm(batches, desc=desc, disable=not progress, leave=False):
            gm(x)


def calibrate(gm: fx.GraphModule, quantizers: dict[str, ActQuant], batches, *,
              bins: int = 2048, progress: bool = True) -> dict[str, tuple[float, float]]:
    """Collect statistics and set every activation quantizer's range."""
    layers = [m for m in gm.modules() if isinstance(m, QUANT_LAYERS)]
    for layer in layers:
        layer.quant_enabled = False
    owners = {k: q for k, q in quantizers.items() if q.shared_from is None}
    for q in quantizers.values():
        q.mode = Mode.OBSERVE_MINMAX
    _run(gm, batches, "calibrate (ranges)", progress)
    if any(q.spec.observer is not Observer.MINMAX for q in owners.values()):
        for q in owners.values():
            q.stats.start_histogram(bins)
            q.mode = Mode.OBSERVE_HIST
        _run(gm, batches, "calibrate (histograms)", progress)
    ranges = {name: q.finish_calibration() for name, q in owners.items()}
    # Shared quantizers were inserted after their source, so one ordered pass resolves chains.
    for q in quantizers.values():
        if q.shared_from is not None:
            src = quantizers[q.shared_from]
            q.scale.copy_(src.scale)
            q.zero_point.copy_(src.zero_point)
    for q in quantizers.values():
        q.mode = Mode.QUANT
        q.stats = type(q.stats)()  # drop histograms: they are not part of the model
    for layer in layers:
        layer.quant_enabled = True
    return ranges


def _set_bias_scales(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        layer = gm.get_submodule(node.target)
        if not isinstance(layer, QUANT_LAYERS):
            continue
        inp = node.args[0]
        act = gm.get_submodule(inp.target) if inp.op == "call_module" else None
        if isinstance(act, ActQuant):
            layer.bias_scale = (act.scale * layer.w_scale).detach().clone()


class QuantRecord(StepRecord):
    def summary(self) -> list[str]:
        rounding = self.details.get("adaround")
        return [f"learned rounding on {len(rounding)} layers"] if rounding else []


@register(QuantConfig, step="quantize")
def quantize_ptq(model, config: QuantConfig, ctx: StepContext) -> StepResult:
    progress = ctx.progress
    batches = calibration_batches(
        ctx.inputs(), size=config.calib_size, seed=config.calib_seed,
        batch_size=config.calib_batch_size)
    gm = canonical_copy(model, batches[0])
    folded = fold_batchnorm(gm) if config.fold_bn else []
    float_model = copy.deepcopy(gm)
    config.check_patterns([name for name, _ in leaf_modules(gm)])
    precision = _swap_layers(gm, config)

    def act_spec_for(layer: str):
        specs = config.for_layer(layer)
        return None if specs is None else specs[1]

    quantizers = insert_act_quantizers(gm, act_spec_for)
    calibrate(gm, quantizers, batches, bins=config.histogram_bins, progress=progress)
    rounding = None
    if config.adaround is not None:
        # Before bias correction, which must measure the output shift of the
        # weights as finally rounded.
        rounding = adaround(gm, float_model, batches, config.adaround, progress=progress)
    _set_bias_scales(gm)
    corrected = {}
    if config.bias_correction:
        names = [name for name, m in leaf_modules(gm, QUANT_LAYERS)]
        corrected = correct_bias(gm, float_model, names, batches, progress=progress)
    # The per-layer precision is the model's state (compile reads it); the copy keeps
    # the records earlier steps left.
    gm.meta.setdefault("edgeopt", {})["precision"] = precision
    details = {
        "precision": precision,
        "folded_bn": folded,
        "bias_correction": corrected,
        "calib_samples": sum(b.shape[0] for b in batches),
        "config": config.to_dict(),
    }
    if rounding is not None:
        details["adaround"] = rounding
    return StepResult(gm.eval(), QuantRecord("ptq", details))
