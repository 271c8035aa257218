"""The size model of ONNX Runtime artifacts: the bytes of the model.onnx export writes.

Exact, container overhead included (packed sub-8-bit codes, their unpack chains, the
graph itself): a size budget is checked against the file the artifact will hold.
"""

from __future__ import annotations

import torch.fx as fx

from edgeopt.compile.backends.onnxruntime.lower import export_onnx


def artifact_bytes(gm: fx.GraphModule) -> int:
    return export_onnx(gm, gm.meta["input_shape"]).ByteSize()
