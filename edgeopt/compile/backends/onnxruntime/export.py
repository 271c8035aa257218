"""Lower a canonical model to an ONNX Runtime artifact (model.onnx)."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from edgeopt.compile.artifact import ArtifactWriter
from edgeopt.compile.backends.onnxruntime.lower import export_onnx
from edgeopt.compile.targets import Target

MODEL_FILE = "model.onnx"


def export(gm: fx.GraphModule, writer: ArtifactWriter, *, input_shape: list[int],
           target: Target, precision: str | None = None, tune: None = None) -> dict[str, Any]:
    """Write model.onnx into the staged artifact; returns the manifest fields it owns.

    One ONNX file serves every target (ONNX Runtime picks its kernels on the device),
    and this backend converts nothing and tunes nothing: compile.api refuses those
    (``BACKEND.conversions``, ``BACKEND.tunable``) before it gets here."""
    model = export_onnx(gm, input_shape)
    writer.write_bytes(MODEL_FILE, model.SerializeToString())
    return {
        "backend": "onnxruntime",
        "model_file": MODEL_FILE,
        "opset": model.opset_import[0].version,
        "inputs": [
            {"name": i.name, "shape": ["N", *input_shape], "dtype": "float32"}
            for i in model.graph.input
        ],
        "outputs": [
            {
                "name": o.name,
                "shape": [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim],
                "dtype": "float32",
            }
            for o in model.graph.output
        ],
    }
