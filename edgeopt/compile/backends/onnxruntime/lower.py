"""Canonical (optionally simulated-quantized) GraphModule -> ONNX.

Quantized layers become ``DequantizeLinear(int8 weights) -> Conv/Gemm`` with
int32 biases, and activation quantizers become ``QuantizeLinear ->
DequantizeLinear`` pairs: the QDQ form that ONNX Runtime fuses into
QLinearConv / QLinearAdd / QGemm integer kernels. Weights below 8 bits are
stored at their width (INT4, or packed codes; see ``WeightStorage``) and widened
to int8 by constant ops that ONNX Runtime folds when it loads the model.

What a layer stores comes from its form (``core.forms``), never from its class: any
layer that reports an ``IntWeight``, a ``CodebookWeight`` or an ``ActQDQ`` is lowered.
"""

from __future__ import annotations

from enum import Enum

import ml_dtypes
import numpy as np
import onnx
import torch
import torch.fx as fx
from onnx import TensorProto
from torch import nn

from edgeopt.compile.backends.onnxruntime.builder import GraphBuilder, value_info
from edgeopt.compile.backends.onnxruntime.ops import CONVERTERS
from edgeopt.compile.backends.onnxruntime.packing import (
    emit_codebook_tensor,
    emit_int4_tensor,
    encode,
    int4_size,
    packed_size,
)
from edgeopt.core.config import enum_value
from edgeopt.core.errors import ExportError
from edgeopt.core.forms import (
    ActQDQ,
    CodebookWeight,
    IntWeight,
    stored_activation,
    stored_weight,
)
from edgeopt.core.graph import layer_name

aten = torch.ops.aten
_IGNORED = {aten.sym_size.int}


def _np(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)


def _int_dtype(form: IntWeight | ActQDQ) -> type:
    return np.int8 if form.signed else np.uint8


class WeightStorage(str, Enum):
    """How weights below 8 bits are stored (8-bit weights are always int8).

    Packed codes cost ceil(log2(levels)) bits per weight plus an unpack chain of
    ~310 bytes per layer; INT4 costs 4 bits. ONNX Runtime folds both back to int8
    initializers when it creates the session and runs its integer kernels, except
    ``INT4``: ORT 1.31 does not fuse ``DequantizeLinear(int4) -> Conv/Gemm``, so it
    dequantizes the weights on every call and runs a float Conv/Gemm, 4-10x slower
    on its CPU provider (a 4-layer conv net, 1 thread: 0.55 vs 0.11 ms at batch 1).
    That is the canonical int4 QDQ form for runtimes with int4 kernels; ``AUTO`` puts
    a Cast to int8 between, stores the same INT4 bytes and keeps the integer kernels.
    """

    AUTO = "auto"  # per layer, the smallest of int8, INT4 (+ folded Cast) and packed
    INT4 = "int4"  # uniform <= 4 bits -> INT4/UINT4 straight into DequantizeLinear
    PACKED = "packed"  # every sub-8-bit weight as packed codes
    INT8 = "int8"  # int8 containers, an opset 17 graph: no size saving


def _encoding(form: IntWeight, n: int, storage: WeightStorage) -> str:
    """"int8", "int4" (widened by a Cast), "int4_dq" (into DequantizeLinear) or "packed"."""
    uniform = form.uniform
    if storage is WeightStorage.INT8 or (uniform and form.bits == 8):
        return "int8"
    if storage is WeightStorage.INT4 and uniform and form.bits <= 4:
        return "int4_dq"
    if storage is not WeightStorage.AUTO:  # PACKED, or INT4 for a width INT4 cannot hold
        return "packed"
    # The smallest file, estimated: a small layer (a depthwise 3x3) stays int8 where the
    # unpack chain would cost more than it saves. A tie goes to the first listed, so a
    # 4-bit layer stays INT4.
    sizes = {"int4": int4_size(n)} if uniform and form.bits <= 4 else {}
    sizes |= {"packed": packed_size(n, len(form.levels)), "int8": n}
    return min(sizes, key=sizes.get)


def _stored_int_weight(b: GraphBuilder, form: IntWeight,
                       storage: WeightStorage) -> tuple[str, type]:
    """The weight's integers as an ONNX tensor, and the dtype its zero point must have."""
    q = _np(form.q, np.int64)
    container = _int_dtype(form)
    encoding = _encoding(form, q.size, storage)
    if encoding == "int8":
        return b.const(q.astype(container), dedupe=False), container
    if encoding in ("int4", "int4_dq"):
        direct = encoding == "int4_dq"
        name = emit_int4_tensor(b, q, signed=form.signed, widen=not direct)
        if direct:
            return name, ml_dtypes.int4 if form.signed else ml_dtypes.uint4
        return name, container
    table = np.asarray(form.levels, container)
    return emit_codebook_tensor(b, encode(q, table), table), container


def _dq_weight(b: GraphBuilder, layer: nn.Module, form: IntWeight,
               storage: WeightStorage) -> str:
    weight, zp_dtype = _stored_int_weight(b, form, storage)
    per_channel = form.per_channel
    scale = _np(form.scale.reshape(-1) if per_channel else form.scale.reshape(()))
    inputs = [weight, b.const(scale, dedupe=False)]
    # A symmetric conv weight needs no zero-point input (it defaults to 0 and ORT
    # still fuses QLinearConv); ORT's Gemm fusion insists on one.
    if isinstance(layer, nn.Linear) or not form.signed:
        zp = form.zero_point.reshape(-1) if per_channel else form.zero_point.reshape(())
        inputs.append(b.const(_np(zp, np.int64).astype(zp_dtype), dedupe=False))
    return b.op("DequantizeLinear", inputs, **({"axis": 0} if per_channel else {}))


def _bias(b: GraphBuilder, layer: nn.Module, form: IntWeight | CodebookWeight | None) -> list[str]:
    if layer.bias is None:
        return []
    if isinstance(form, IntWeight) and form.bias_q is not None:
        q, scale = form.bias_q, form.bias_scale
        if isinstance(layer, nn.Conv2d):
            # Stored as float32 values already on the int32 grid: ORT quantizes a QDQ
            # conv's float bias with exactly this scale (input x weight), so the result
            # is the same integer bias without storing a per-channel bias scale.
            return [b.const(_np(q * scale), dedupe=False)]
        # No zero-point input: it defaults to 0, and would cost 4 bytes per channel.
        return [b.op("DequantizeLinear", [b.const(_np(q, np.int32), dedupe=False),
                                          b.const(_np(scale), dedupe=False)], axis=0)]
    return [_float_tensor(b, layer.bias)]


def _float_tensor(b: GraphBuilder, t: torch.Tensor) -> str:
    """A float parameter as the layer stores it: an fp16 one stays fp16 in the file, with
    a Cast to float32 that ONNX Runtime folds when it loads the model (the graph computes
    in fp32, as the layer's forward does); anything else is a float32 initializer."""
    if t.dtype == torch.float16:
        return b.op("Cast", [b.const(_np(t, np.float16), dedupe=False)], to=TensorProto.FLOAT)
    return b.const(_np(t), dedupe=False)


def _codebook_weight(b: GraphBuilder, form: CodebookWeight, storage: WeightStorage) -> str:
    """Packed codes into the ascending float32 table (ORT folds the gather once at load);
    a plain float initializer where that would not be smaller, or for INT8 storage (an
    opset 17 graph)."""
    table, codes = form.table, form.codes
    n = codes.numel()
    if storage is WeightStorage.INT8 or packed_size(n, table.numel()) + 4 * table.numel() >= 4 * n:
        return b.const(_np(form.decoded()), dedupe=False)
    return emit_codebook_tensor(b, _np(codes, np.int64), _np(table))


def _weight(b: GraphBuilder, layer: nn.Module, form: IntWeight | CodebookWeight | None,
            storage: WeightStorage) -> str:
    if isinstance(form, IntWeight):
        return _dq_weight(b, layer, form, storage)
    if isinstance(form, CodebookWeight):
        return _codebook_weight(b, form, storage)
    return _float_tensor(b, layer.weight)


def _conv(b: GraphBuilder, layer: nn.Conv2d, x: str, storage: WeightStorage) -> str:
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise NotImplementedError(f"conv padding {layer.padding!r}/{layer.padding_mode}")
    pads = list(layer.padding) * 2
    form = stored_weight(layer)
    return b.op("Conv", [x, _weight(b, layer, form, storage), *_bias(b, layer, form)],
                kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=pads,
                dilations=list(layer.dilation), group=layer.groups)


def _linear(b: GraphBuilder, layer: nn.Linear, x: str, storage: WeightStorage) -> str:
    form = stored_weight(layer)
    return b.op("Gemm", [x, _weight(b, layer, form, storage), *_bias(b, layer, form)],
                transB=1)


def _batchnorm(b: GraphBuilder, bn: nn.BatchNorm2d, x: str) -> str:
    c = bn.num_features
    scale = _np(bn.weight) if bn.weight is not None else np.ones(c, np.float32)
    shift = _np(bn.bias) if bn.bias is not None else np.zeros(c, np.float32)
    return b.op("BatchNormalization", [x, b.const(scale, dedupe=False),
                                       b.const(shift, dedupe=False),
                                       b.const(_np(bn.running_mean), dedupe=False),
                                       b.const(_np(bn.running_var), dedupe=False)],
                epsilon=bn.eps)


def _act_quant(b: GraphBuilder, form: ActQDQ, x: str) -> str:
    scale = b.const(_np(form.scale))
    zp = b.const(_np(form.zero_point, _int_dtype(form)))
    return b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zp]), scale, zp])


def _module(b: GraphBuilder, mod: nn.Module, x: str, storage: WeightStorage) -> str:
    act = stored_activation(mod)
    if act is not None:
        return _act_quant(b, act, x)
    if isinstance(mod, nn.Conv2d):
        return _conv(b, mod, x, storage)
    if isinstance(mod, nn.Linear):
        return _linear(b, mod, x, storage)
    if isinstance(mod, nn.BatchNorm2d):
        return _batchnorm(b, mod, x)
    raise NotImplementedError(type(mod).__name__)


def _op_name(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


def export_onnx(gm: fx.GraphModule, input_shape: list[int], *,
                weight_storage: WeightStorage | str = WeightStorage.AUTO) -> onnx.ModelProto:
    """Lower a canonical model to ONNX with a dynamic batch dimension ``N``.

    ``weight_storage`` picks the encoding of sub-8-bit weights (see ``WeightStorage``).
    """
    storage = enum_value(WeightStorage, weight_storage, "weight_storage")
    b = GraphBuilder()
    names: dict[fx.Node, str] = {}
    inputs, out_nodes = [], []

    def name_of(node: fx.Node) -> str:
        return names[node]

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            names[node] = f"input{len(inputs)}" if inputs else "input"
            inputs.append(value_info(names[node], ["N", *input_shape]))
            continue
        if node.op == "output":
            out = node.args[0]
            out_nodes = list(out) if isinstance(out, (tuple, list)) else [out]
            continue
        if node.op == "call_function" and node.target in _IGNORED:
            continue
        try:
            if node.op == "call_module":
                result = _module(b, gm.get_submodule(node.target), names[node.args[0]],
                                 storage)
            elif node.op == "call_function" and node.target in CONVERTERS:
                result = CONVERTERS[node.target](b, node, name_of)
            else:
                raise NotImplementedError("no ONNX conversion")
        except (NotImplementedError, KeyError) as exc:
            detail = f" ({exc})" if isinstance(exc, NotImplementedError) and str(exc) else ""
            raise ExportError(
                f"cannot export operator {_op_name(node, gm)} at layer "
                f"'{layer_name(node)}' to ONNX{detail}"
            ) from None
        names[node] = result if result is not None else names[node.args[0]]

    with torch.no_grad():
        sample = gm(torch.zeros(2, *input_shape))
    samples = list(sample) if isinstance(sample, (tuple, list)) else [sample]
    out_names = ["logits"] if len(out_nodes) == 1 else [f"output{i}" for i in range(len(out_nodes))]
    outputs = [
        value_info(n, ["N", *list(s.shape[1:])], TensorProto.FLOAT)
        for n, s in zip(out_names, samples)
    ]
    model = b.model(inputs, outputs, [names[n] for n in out_nodes])
    onnx.checker.check_model(model)
    return model
