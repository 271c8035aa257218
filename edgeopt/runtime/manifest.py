"""The manifest fields a Predictor reads, checked before one is built (issue 14).

A manifest is JSON anyone can edit, and its checksums cover the other files, not itself:
a missing ``inputs`` list, a shape that is a string or a dtype numpy does not know would
otherwise surface as a KeyError or TypeError inside the Predictor, or at the first call.
Checked here, each is one ``ArtifactError`` line naming the manifest and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.errors import ArtifactError


def check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """One ``ArtifactError`` line for the first field a Predictor could not use."""
    where = f"{path / 'manifest.json'}"

    def refuse(what: str) -> ArtifactError:
        return ArtifactError(f"{where}: {what}")

    if not isinstance(manifest.get("model_file"), str):
        raise refuse(f"model_file must be a file name, got {manifest.get('model_file')!r}")
    if manifest["model_file"] not in (manifest.get("files") or {}):
        raise refuse(f"model_file {manifest['model_file']!r} is not among the checksummed "
                     "files")
    _check_tensors(manifest.get("inputs"), "inputs", refuse, required=True)
    _check_tensors(manifest.get("outputs"), "outputs", refuse, required=False)
    for name in ("bound_inputs", "preprocessing", "text"):
        value = manifest.get(name)
        if value is not None and not isinstance(value, dict):
            raise refuse(f"{name} must be a mapping, got {type(value).__name__}")
    bound = manifest.get("bound_inputs") or {}
    for name, value in bound.items():
        try:
            np.asarray(value)
        except ValueError:  # a ragged list
            raise refuse(f"bound_inputs.{name} is not an array: {value!r}") from None
    if all(i["name"] in bound for i in manifest["inputs"]):
        raise refuse("every input is bound to a constant: nothing left to feed")
    pre = manifest.get("preprocessing") or {}
    for name in ("scale", "mean", "std"):
        value = pre.get(name)
        values = value if isinstance(value, list) else [value]
        if value is not None and not all(_is_number(v) for v in values):
            raise refuse(f"preprocessing.{name} must be a number or a list of numbers, "
                         f"got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_tensors(tensors: Any, field: str, refuse, *, required: bool) -> None:
    if tensors is None and not required:
        return
    if not isinstance(tensors, list) or (required and not tensors):
        raise refuse(f"{field} must be a non-empty list of tensors, got {tensors!r}")
    for i, spec in enumerate(tensors):
        at = f"{field}[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise refuse(f"{at} must be a mapping with a name, got {spec!r}")
        shape = spec.get("shape")
        if field == "inputs" and not (isinstance(shape, list) and all(
                isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool))
                for d in shape)):
            raise refuse(f"{at}.shape must be a list of sizes and names, got {shape!r}")
        dtype = spec.get("dtype", "float32")
        try:
            # A name only: np.dtype would also build a record type from a list or a dict.
            if not isinstance(dtype, str):
                raise TypeError
            np.dtype(dtype)
        except (TypeError, ValueError):
            raise refuse(f"{at}.dtype {dtype!r} is not the name of a numpy dtype") from None
