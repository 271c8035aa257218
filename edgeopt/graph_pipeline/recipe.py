"""Which recipes the ONNX-graph path carries, and the graph quantizer's config for one."""

from __future__ import annotations

import os
from pathlib import Path

from edgeopt.compress.quantize.onnx_config import ActType, CalibMethod, OnnxQuantConfig
from edgeopt.compress.quantize.spec import Observer, QuantConfig, Scheme


def graph_quant_step(recipe):
    """The recipe's one quantize step when the ONNX-graph path can carry the whole
    recipe (8-bit uniform PTQ, no learned rounding), else None (the torch path)."""
    steps = list(recipe.steps)
    if len(steps) != 1 or type(steps[0]) is not QuantConfig:
        return None
    q = steps[0]
    if q.adaround is not None or q.weights.bits != 8 or q.activations.bits != 8:
        return None
    if q.weights.scheme is not Scheme.UNIFORM or q.layers:
        return None
    return q


def wants_graph_path(model, recipe, weights=None) -> bool:
    """An ONNX file whose recipe the graph path carries (int8, or no steps at all)."""
    if not isinstance(model, str | os.PathLike) or Path(model).suffix.lower() != ".onnx":
        return False
    if weights is not None or not os.path.isfile(model):
        return False  # load_model gives the one-line error
    return not recipe.steps or graph_quant_step(recipe) is not None


def onnx_config(q):
    """The ONNX-graph quantizer's config for a recipe's QuantConfig: the same observer
    (MSE has no ORT calibrator: percentile is its nearest), activation signedness and
    per-channel weights."""
    obs = q.activations.observer
    method = {Observer.MINMAX: CalibMethod.MINMAX, Observer.ENTROPY: CalibMethod.ENTROPY
              }.get(obs, CalibMethod.PERCENTILE)
    return OnnxQuantConfig(
        calibration=method,
        percentile=float(q.activations.percentile),
        activations=ActType.INT8 if q.activations.symmetric else ActType.UINT8,
        per_channel=q.weights.per_channel)
