"""Refusing ONNX external-data paths that leave the model's folder (issue 14).

An ONNX file may keep its weights in side files named by a relative ``location``;
``../../etc/passwd`` or ``/etc/shadow`` would make loading read any file. Checked at
intake, before ``onnx.load`` follows them.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx.external_data_helper import _get_all_tensors

from edgeopt.core.errors import ModelLoadError


def check_external_data(path: str | os.PathLike) -> None:
    """One ``ModelLoadError`` line if a tensor's external data lies outside ``path``'s folder."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the full load
        return
    folder = Path(path).resolve().parent
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(folder):
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} keeps its data at {location!r}, outside the "
                "model's folder (refused)"
            )
