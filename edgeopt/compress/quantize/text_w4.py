"""Weight-only 4-bit for transformer encoders: ONNX Runtime's MatMulNBits and
GatherBlockQuantized, through ORT's own quantizer (``MatMulNBitsQuantizer``).

Every MatMul with a weight initializer stores its weight in 4 bits, a scale (and, when
asymmetric, a 4-bit zero point) per ``block_size`` input rows; the word-embedding table too
(GatherBlockQuantized: rows are gathered, then scaled), with its own block size, because a
30,522-row table's fp32 scales at block 32 alone are 1.5 MB. Activations stay float;
``accuracy_level`` 4 lets ORT compute the MatMuls in int8 on blocks of the activations.

Measured on all-MiniLM-L6-v2 (bench/compare_peers_text.py): size 0.15x the fp32 ONNX, where
int8 reaches 0.25x. The fidelity is well below int8's: a weight-only 4-bit encoder is a
size option, and the report gives its cosine and neighbour agreement as they are.

A step of an ``hf:`` model's recipe only (recipe ``w4-text``): its handler takes the
exported ONNX graph, not a torch model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

from edgeopt.compress.quantize.text_int8_ops import copy, weight_matmuls
from edgeopt.core.errors import ConfigError, ExportError
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult


@dataclass(frozen=True, kw_only=True)
class TextW4Config(StepConfig):
    block_size: int = 32  # input rows per scale of the MatMul weights
    symmetric: bool = False  # asymmetric: a 4-bit zero point per block (measured better)
    embeddings: bool = True  # 4-bit word-embedding table (GatherBlockQuantized)
    embedding_block_size: int = 128  # columns per scale of the table
    accuracy_level: int = 4  # ORT's MatMulNBits compute type: 4 = int8 on activation blocks

    def __post_init__(self) -> None:
        for name in ("block_size", "embedding_block_size"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ConfigError(f"text_w4 {name} must be a power of two >= 16, got {value}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(f"text_w4 accuracy_level must be 0-4, got {self.accuracy_level}")


class TextW4Record(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        return [f"{d['matmuls_4bit']} MatMuls 4-bit (block {d['config']['block_size']}), "
                f"{d['embeddings_4bit']} embedding tables 4-bit; "
                f"{d['size_bytes']['w4'] / d['size_bytes']['fp32']:.3f}x size"]


def _quantize(model: onnx.ModelProto, ops: tuple[str, ...], block: int, cfg: TextW4Config):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    before = {o.domain: o.version for o in model.opset_import}
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    # The table is symmetric whatever ``symmetric`` says: the measured 0.148x (MiniLM) is
    # with a symmetric table; an asymmetric one adds its zero points.
    quantizer = MatMulNBitsQuantizer(
        model, bits=4, block_size=block, is_symmetric=cfg.symmetric or ops == ("Gather",),
        accuracy_level=cfg.accuracy_level, op_types_to_quantize=ops,
        quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    out = quantizer.model.model
    # For a 4-bit Gather the quantizer sets the default opset to 21 (int4 tensors) but
    # leaves the ops as the export wrote them (ReduceL2's `axes` attribute, gone in 18):
    # the int4 initializers need IR 10 only, so the graph keeps its own opset.
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx") and "" in before:
            o.version = before[""]
    return out


def quantize_text_w4(model: onnx.ModelProto, cfg: TextW4Config | None = None,
                     log=print) -> tuple[onnx.ModelProto, dict]:
    cfg = cfg or TextW4Config()
    fp32_bytes = model.ByteSize()
    matmuls = len(weight_matmuls(model))
    if not matmuls:
        raise ExportError("text_w4: the graph has no MatMul with a weight initializer")
    q = copy(model)
    if cfg.embeddings:
        q = _quantize(q, ("Gather",), cfg.embedding_block_size, cfg)
    q = _quantize(q, ("MatMul",), cfg.block_size, cfg)
    ops = [n.op_type for n in q.graph.node]
    record = {"technique": "weight-only 4-bit (ORT MatMulNBits, GatherBlockQuantized)",
              "config": cfg.to_dict(), "matmuls_4bit": ops.count("MatMulNBits"),
              "embeddings_4bit": ops.count("GatherBlockQuantized"),
              "size_bytes": {"fp32": fp32_bytes, "w4": q.ByteSize()}}
    log(f"  w4 (text): {record['matmuls_4bit']} of {matmuls} MatMuls and "
        f"{record['embeddings_4bit']} embedding tables 4-bit, "
        f"{q.ByteSize() / fp32_bytes:.3f}x size")
    return q, record


@register(TextW4Config, step="text_w4")
def text_w4(model, config: TextW4Config, ctx: StepContext) -> StepResult:
    if not isinstance(model, onnx.ModelProto):
        raise ConfigError("text_w4 applies to hf: text models (their exported ONNX graph); "
                          f"this model is a {type(model).__name__}")
    q, record = quantize_text_w4(model, config, log=ctx.log)
    return StepResult(q, TextW4Record(record["technique"], record))
