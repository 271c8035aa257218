"""The graph as onnxruntime's quantizer needs it: every node named once, tensors that
If/Loop bodies read made explicit, opset 13 for per-channel scales, and calibration
samples that feed every input."""

from __future__ import annotations

import onnx

from edgeopt.core.errors import DataError
from edgeopt.core.onnx_graph import subgraphs


def name_nodes(model: onnx.ModelProto) -> None:
    """ORT selects nodes by name; exporters leave some unnamed or named twice."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def captures(graph: onnx.GraphProto) -> set[str]:
    """Names a (sub)graph reads from the enclosing scope: used, not defined in it."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    refs: set[str] = set()
    for node in graph.node:
        refs |= {t for t in node.input if t and t not in defined}
        for g in subgraphs(node):
            refs |= {t for t in captures(g) if t not in defined}
        defined.update(node.output)
    return refs


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old in {v.name for v in graph.input} | {i.name for i in graph.initializer}:
        return  # shadowed here
    for node in graph.node:
        node.input[:] = [new if t == old else t for t in node.input]
        for g in subgraphs(node):
            _rename_reads(g, old, new)
        if old in node.output:
            return  # redefined from here on


def explicit_captures(model: onnx.ModelProto) -> int:
    """Route each tensor a subgraph (If/Loop/Scan body) reads from the main graph through
    an Identity, in place; returns how many. ORT's QDQ quantizer rewires only explicit
    inputs: when it folds a Relu into the Conv before it, the Conv takes over the Relu's
    output name and a branch that read that name implicitly gets the pre-Relu values
    (silero-vad's LSTM input went negative). The Identity is an explicit reader."""
    produced = {o for n in model.graph.node for o in n.output}
    taken = produced | {i.name for i in model.graph.initializer} | {
        v.name for v in model.graph.input}
    alias: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        subs = subgraphs(node)
        if subs:
            refs = sorted(set().union(*(captures(g) for g in subs)) & produced)
            for t in refs:
                if t not in alias:
                    name = f"{t}_captured"
                    while name in taken:
                        name += "_"
                    taken.add(name)
                    alias[t] = name
                    nodes.append(onnx.helper.make_node("Identity", [t], [name],
                                                       name=f"{name}_Identity"))
                for g in subs:
                    _rename_reads(g, t, alias[t])
        nodes.append(node)
    if alias:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return len(alias)


def check_calib(model: onnx.ModelProto, calib: list[dict]) -> None:
    inits = {i.name for i in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in inits]
    if not calib:
        raise DataError("int8 calibration needs at least one sample, got none")
    missing = [n for n in names if n not in calib[0]]
    if missing:
        raise DataError(f"calibration samples lack input {missing[0]!r} "
                        f"(the model's inputs are {', '.join(names)})")


def opset_version(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def per_channel_opset(model: onnx.ModelProto, log) -> tuple[onnx.ModelProto, str | None]:
    """Per-channel DequantizeLinear (its ``axis``) needs opset 13; Paddle and older torch
    exports are 11/12. Convert the graph up, or say why weights go per-tensor."""
    if opset_version(model) >= 13:
        return model, None
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, 13)
        onnx.checker.check_model(converted)
        return converted, f"opset {opset_version(model)} -> 13 for per-channel weight scales"
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
        log(f"  opset {opset_version(model)} does not convert to 13 ({str(exc).splitlines()[0]})")
        return model, None
