"""ONNX -> torch module, for the common CNN operator set.

The module interprets the ONNX graph node by node with torch functions; its
weights are parameters of per-node submodules named after the ONNX node, so
``torch.export`` + ``lift`` recover real Conv2d/Linear layers with the node
names as layer names. (onnx2torch would do this, but it imports torchvision,
which does not load beside the CPU torch build we use.)
"""

from __future__ import annotations

import re

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from edgeopt.core.errors import ModelLoadError

SUPPORTED = (
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh",
    "HardSwish", "HardSigmoid", "BatchNormalization", "GlobalAveragePool", "AveragePool",
    "MaxPool", "Flatten", "Reshape", "Concat", "Transpose", "Softmax", "Identity", "Dropout",
    "Constant",
)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _safe(name: str, i: int) -> str:
    s = re.sub(r"\W", "_", name).strip("_") or f"node{i}"
    return s if not s[0].isdigit() else f"n_{s}"


def _pads(a: dict) -> tuple[int, int]:
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise NotImplementedError("asymmetric padding")
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("auto_pad")
    return tuple(pads[:2])


class _Params(nn.Module):
    pass


class OnnxModule(nn.Module):
    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        g = model.graph
        self.nodes = list(g.node)
        init_names = {i.name for i in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in init_names]
        self.output_names = [o.name for o in g.output]
        inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}
        self.consts: dict[str, str] = {}
        self.node_mods: list[str] = []
        for i, node in enumerate(self.nodes):
            if node.op_type not in SUPPORTED:
                where = node.name or f"#{i}"
                raise ModelLoadError(
                    f"ONNX operator {node.op_type} (node {where}) is not supported by the importer"
                )
            try:
                _validate(node)
            except NotImplementedError as exc:
                raise NotImplementedError(
                    f"{exc} (node {node.name or f'#{i}'}, {node.op_type})"
                ) from None
            mod = _Params()
            name = _safe(node.name, i)
            while hasattr(self, name):
                name += "_"
            for j, inp in enumerate(node.input):
                if inp in inits:
                    t = inits[inp]
                    attr = "weight" if j == 1 else ("bias" if j == 2 else f"in{j}")
                    if node.op_type == "BatchNormalization":
                        attr = ["x", "weight", "bias", "running_mean", "running_var"][j]
                    if node.op_type in ("Conv", "Gemm", "MatMul") and t.is_floating_point():
                        mod.register_parameter(attr, nn.Parameter(t))
                    else:
                        mod.register_buffer(attr, t)
                    self.consts[f"{i}:{j}"] = attr
            self.add_module(name, mod)
            self.node_mods.append(name)

    def forward(self, *inputs: torch.Tensor):
        env = dict(zip(self.input_names, inputs))
        for i, node in enumerate(self.nodes):
            mod = getattr(self, self.node_mods[i])
            args = []
            for j, inp in enumerate(node.input):
                key = f"{i}:{j}"
                args.append(getattr(mod, self.consts[key]) if key in self.consts
                            else (env[inp] if inp else None))
            outs = _run(node, mod, args)
            outs = outs if isinstance(outs, tuple) else (outs,)
            for name, val in zip(node.output, outs):
                env[name] = val
        res = tuple(env[n] for n in self.output_names)
        return res[0] if len(res) == 1 else res


def _validate(node: onnx.NodeProto) -> None:
    """Refuse attributes the interpreter cannot honour, at load time rather than at run time."""
    a = _attrs(node)
    if node.op_type in ("Conv", "MaxPool", "AveragePool"):
        _pads(a)
    if node.op_type == "Gemm" and (
        a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0
    ):
        raise NotImplementedError("Gemm with transA/alpha/beta")


def _run(node: onnx.NodeProto, mod: nn.Module, x: list):
    a, op = _attrs(node), node.op_type
    if op == "Conv":
        return F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, stride=tuple(a.get("strides", [1, 1])),
                        padding=_pads(a), dilation=tuple(a.get("dilations", [1, 1])),
                        groups=a.get("group", 1))
    if op == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise NotImplementedError("Gemm with transA/alpha/beta")
        w = x[1] if a.get("transB", 0) else x[1].t()
        return F.linear(x[0], w, x[2] if len(x) > 2 else None)
    if op == "MatMul":
        return torch.matmul(x[0], x[1])
    binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
    if op in binary:
        return binary[op](x[0], x[1])
    if op == "Relu":
        return F.relu(x[0])
    if op == "Clip":
        lo = float(x[1]) if len(x) > 1 and x[1] is not None else a.get("min", float("-inf"))
        hi = float(x[2]) if len(x) > 2 and x[2] is not None else a.get("max", float("inf"))
        return F.hardtanh(x[0], lo, hi)
    unary = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "HardSwish": F.hardswish,
             "Identity": lambda t: t, "Dropout": lambda t: t}
    if op in unary:
        return unary[op](x[0])
    if op == "HardSigmoid":
        return torch.clamp(x[0] * a.get("alpha", 0.2) + a.get("beta", 0.5), 0, 1)
    if op == "BatchNormalization":
        return F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5))
    if op == "GlobalAveragePool":
        return F.adaptive_avg_pool2d(x[0], 1)
    if op in ("AveragePool", "MaxPool"):
        k = tuple(a["kernel_shape"])
        s = tuple(a.get("strides", k))
        ceil = bool(a.get("ceil_mode", 0))
        if op == "MaxPool":
            return F.max_pool2d(x[0], k, s, _pads(a), tuple(a.get("dilations", [1, 1])), ceil)
        return F.avg_pool2d(x[0], k, s, _pads(a), ceil, bool(a.get("count_include_pad", 0)))
    if op == "Flatten":
        return torch.flatten(x[0], a.get("axis", 1))
    if op == "Reshape":
        shape = [int(v) for v in x[1].tolist()]
        shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return torch.reshape(x[0], shape)
    if op == "Concat":
        return torch.cat(x, dim=a["axis"])
    if op == "Transpose":
        return x[0].permute(*a["perm"])
    if op == "Softmax":
        return torch.softmax(x[0], dim=a.get("axis", -1))
    if op == "Constant":
        return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
    raise NotImplementedError(op)


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


def load_onnx(path: str) -> tuple[OnnxModule, list[int] | None]:
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"{path} is not a valid ONNX model: {first}") from None
    try:
        module = OnnxModule(model)
    except NotImplementedError as exc:
        raise ModelLoadError(f"{path}: {exc} is not supported by the ONNX importer") from None
    return module.eval(), input_shape(model)

