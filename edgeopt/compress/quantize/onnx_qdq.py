"""onnxruntime's QDQ quantizer (``quantize_static``) run on any subset of a graph's nodes."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeopt.compress.quantize.onnx_config import ActType, CalibMethod, OnnxQuantConfig


class _Reader:
    """ORT's calibration protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


class QdqBuilder:
    """Quantizes the same graph for different node sets, calibrating once (ORT's
    calibration cache) so that each trial costs a rewrite, not a calibration run."""

    def __init__(self, model: onnx.ModelProto, calib: list[dict], cfg: OnnxQuantConfig,
                 candidates: dict[str, str], work: Path) -> None:
        self.cfg, self.calib, self.candidates, self.work = cfg, calib, candidates, work
        self.fp_path = work / "fp32.onnx"
        onnx.save(model, self.fp_path)
        self.cache = work / "calibration.json"
        self.count = 0
        self.all_types = sorted(set(candidates.values()))

    def build(self, nodes: set[str]) -> onnx.ModelProto:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        if not nodes:
            return onnx.load(self.fp_path)
        cfg = self.cfg
        method = {CalibMethod.MINMAX: CalibrationMethod.MinMax,
                  CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
                  CalibMethod.ENTROPY: CalibrationMethod.Entropy}[cfg.calibration]
        act = QuantType.QUInt8 if cfg.activations is ActType.UINT8 else QuantType.QInt8
        self.count += 1
        out = self.work / f"int8_{self.count}.onnx"
        quantize_static(
            str(self.fp_path), str(out), _Reader(self.calib),
            quant_format=QuantFormat.QDQ,
            # All candidate types on every call: the calibration cache written by the
            # first call then holds every tensor a later, smaller node set needs.
            op_types_to_quantize=self.all_types,
            nodes_to_quantize=sorted(nodes),
            per_channel=cfg.per_channel,
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_cache_path=str(self.cache),
            extra_options={"WeightSymmetric": True,
                           "ActivationSymmetric": cfg.activations is ActType.INT8,
                           "CalibPercentile": cfg.percentile},
        )
        return onnx.load(out)

    def for_types(self, nodes: set[str], types: frozenset[str]) -> onnx.ModelProto:
        return self.build({n for n in nodes if self.candidates[n] in types})
