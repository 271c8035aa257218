"""Loading an ``.onnx`` file as a torch module (``core.model.load_model``).

The conversion itself is ``onnx_torch.to_torch`` (onnx2torch after onnxslim);
this module checks the file and reads the input shape it declares.
"""

from __future__ import annotations

import onnx
import torch.fx as fx

from edgeopt.core.errors import ModelLoadError, first_line
from edgeopt.core.onnx_external import check_external_data
from edgeopt.core.onnx_torch import NEEDED_BY, to_torch


def input_shape(model: onnx.ModelProto) -> list[int] | None:
    """(C, H, W) of the first graph input, when the file declares it."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in inp.type.tensor_type.shape.dim]
        return dims[1:] if len(dims) > 1 and all(d for d in dims[1:]) else None
    return None


def read_onnx(path: str) -> onnx.ModelProto:
    """The checked ModelProto of ``path``; one ``ModelLoadError`` line if it is not valid."""
    check_external_data(path)
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"{path} is not a valid ONNX model: {first}") from None
    return model


def load_onnx(path: str, *, needed_by: str = NEEDED_BY) -> tuple[fx.GraphModule, list[int] | None]:
    """(torch module, declared (C, H, W) or None) of the ONNX file ``path``."""
    model = read_onnx(path)
    try:
        return to_torch(model, path, needed_by=needed_by), input_shape(model)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - see below
        # The checker passes graphs that onnxslim, onnx2torch or the renaming after them
        # still trip over (a node's domain read as bytes, an initializer that cannot be
        # decoded): a damaged file, reported as one.
        raise ModelLoadError(f"{path}: the ONNX model cannot be converted to PyTorch "
                             f"({first_line(exc)}); the PyTorch form is needed by "
                             f"{needed_by}") from None
