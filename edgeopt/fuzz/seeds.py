"""Valid files for the mutating strategies to start from, each built once per process.

Mutations of a valid file get past the first checks (magic numbers, zip directories,
protobuf decoding) far more often than random bytes do, so they reach the parsers behind.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import zlib

import numpy as np

INPUT = "input"
OUTPUT = "logits"


@functools.cache
def onnx_model() -> bytes:
    """Conv-Relu-Flatten-Gemm on N,1,4,4: the ops every exporter writes, in 800 bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", [INPUT, "w", "b"], ["c"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], [OUTPUT], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 3])],
        [init("w", (2, 1, 3, 3)), init("b", (2,)), init("fw", (3, 32)), init("fb", (3,))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tiny_module():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval(), torch.zeros(2, 4)


@functools.cache
def pt2_archive() -> bytes:
    import torch

    module, example = _tiny_module()
    buf = io.BytesIO()
    torch.export.save(torch.export.export(module, (example,)), buf)
    return buf.getvalue()


@functools.cache
def torchscript_archive() -> bytes:
    import torch

    module, example = _tiny_module()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(module, example), buf)
    return buf.getvalue()


def manifest_for(model: bytes) -> dict:
    """An onnxruntime artifact's manifest, as ``compile`` writes it for the seed model."""
    return {
        "format_version": 1,
        "edgeopt_version": "0.1.0",
        "target": "x86_64",
        "backend": "onnxruntime",
        "model_file": "model.onnx",
        "opset": 17,
        "inputs": [{"name": INPUT, "shape": ["N", 1, 4, 4], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT, "shape": ["N", 3], "dtype": "float32"}],
        "precision": "fp32",
        "layer_precision": {"conv": "fp32", "fc": "fp32"},
        "preprocessing": {"scale": 1.0, "mean": None, "std": None, "layout": "NCHW"},
        "recipe": None,
        "files": {"model.onnx": {"sha256": hashlib.sha256(model).hexdigest(),
                                 "size": len(model)}},
        "created_at": "2026-01-01T00:00:00+00:00",
    }


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """``array`` as an IDX file with type ``code`` (0x08 uint8 ... 0x0E float64)."""
    dtype = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.asarray(array).astype(dtype).tobytes()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # mtime 0: the same case gives the same bytes


def image_bytes(pixels: np.ndarray, mode: str, fmt: str) -> bytes:
    """A PNG or JPEG of ``pixels`` (H,W uint8) converted to ``mode``."""
    from PIL import Image

    img = Image.fromarray(pixels, "L").convert(mode)
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        img = img.convert("RGB")
    if fmt == "PNG" and img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        img = img.convert("RGB")  # modes this PIL cannot write as PNG
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` over a few bytes of data: PIL
    refuses one over its pixel limit before decoding (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def builtin_recipes() -> list[dict]:
    """Every built-in recipe as plain data: the shapes a user's recipe starts from."""
    import yaml

    from edgeopt.recipes import builtin_recipes as paths

    return [yaml.safe_load(p.read_text()) for p in paths().values()]


def dumps(value) -> bytes:
    return json.dumps(value, indent=2).encode()
