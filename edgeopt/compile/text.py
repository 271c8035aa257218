"""Text artifacts: the ONNX graph of a Hugging Face model, its ``tokenizer.json``, and a
manifest whose ``text`` section tells ``Predictor.predict`` how to tokenize (runtime.text).
The tokenizer is a listed file like the model, so its sha256 is checked at load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from edgeopt.compile.artifact import ArtifactWriter
from edgeopt.core.hf.folder import TOKENIZER_FILE, HfFolder

MODEL_FILE = "model.onnx"


def io_specs(graph: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """The manifest's inputs and outputs, dynamic dims by name."""
    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": dims}
    return [spec(v) for v in graph.graph.input], [spec(v) for v in graph.graph.output]


def text_section(info: dict, *, max_length: int, padding: str = "max_length") -> dict:
    return {"tokenizer": TOKENIZER_FILE, "max_length": int(max_length), "padding": padding,
            **{k: info.get(k) for k in ("task", "pooling", "normalize", "model_type", "labels")
               if k in info}}


def write_text_artifact(out: str | os.PathLike, graph: onnx.ModelProto, folder: HfFolder,
                        info: dict, *, max_length: int, precision: str = "fp32",
                        target: str = "x86_64", force: bool = False,
                        extra: dict | None = None) -> Path:
    """Write (atomically) a text artifact folder; returns its path."""
    inputs, outputs = io_specs(graph)
    with ArtifactWriter(out, force=force) as writer:
        writer.write_bytes(MODEL_FILE, graph.SerializeToString())
        shutil.copyfile(folder.tokenizer, writer.path(TOKENIZER_FILE))
        writer.write_manifest({
            "target": target,
            "backend": "onnxruntime",
            "model_file": MODEL_FILE,
            "inputs": inputs,
            "outputs": outputs,
            "task": info.get("task"),
            "precision": precision,
            "text": text_section(info, max_length=max_length),
            **(extra or {}),
        })
        return writer.commit()
