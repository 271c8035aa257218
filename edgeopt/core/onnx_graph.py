"""Intake of an ONNX file as third-party exporters write it, for the ONNX-graph path.

Exporters leave shape arithmetic (Shape->Gather->Concat->Reshape), control flow on
values the user always passes the same (silero-vad's ``If`` on ``sr``) and IR versions
newer than the installed runtime reads. ``load_graph`` folds what is constant, so the
quantizer sees the ops that actually run, and leaves every remaining op as it was.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeopt.core.errors import DataError, ModelLoadError
from edgeopt.core.onnx_external import check_external_data


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: ``shape`` holds ints for fixed dims and names for
    dynamic ones ("N" for an unnamed leading dim, "dim<i>" for other unnamed ones)."""

    name: str
    dtype: str  # numpy dtype name: "float32", "int64", ...
    shape: list[int | str]


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _info(value: onnx.ValueInfoProto) -> TensorInfo:
    tt = value.type.tensor_type
    shape: list[int | str] = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param not in ("", "?"):
            shape.append(d.dim_param)
        else:
            # 0, -1, '' and '?' all mean "not known": give it a name so that callers
            # can tell dims apart without special-casing every exporter's spelling.
            shape.append("N" if i == 0 else f"dim{i}")
    return TensorInfo(value.name, _dtype_name(tt.elem_type), shape)


def describe(model: onnx.ModelProto) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of the graph; inputs exclude initializers, which IR < 4 files
    (Paddle, old Caffe2 exports) also list as graph inputs."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [_info(v) for v in model.graph.input if v.name not in inits]
    return inputs, [_info(v) for v in model.graph.output]


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If/Loop/Scan node (its GRAPH and GRAPHS attributes)."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> node count of the top-level graph, most frequent first."""
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


@functools.cache
def max_ir_version() -> int:
    """The newest IR version the installed onnxruntime loads, probed once on a
    one-node model: ORT lags onnx by a release or two and refuses newer files outright."""
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    for ir in range(onnx.IR_VERSION, 3, -1):
        probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        probe.ir_version = ir
        try:
            ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
            return ir
        except Exception:  # noqa: BLE001 - any refusal means "too new"
            continue
    return 7


def _bind(model: onnx.ModelProto, fixed: dict[str, np.ndarray]) -> None:
    """Turn graph inputs into initializers holding the given values, in place."""
    inputs = {v.name: v for v in model.graph.input}
    for name, value in fixed.items():
        if name not in inputs:
            raise DataError(f"cannot bind input {name!r}: the model's inputs are "
                            f"{', '.join(i.name for i in describe(model)[0])}")
        want = _info(inputs[name]).dtype
        value = np.asarray(value)
        if value.dtype.name != want:
            raise DataError(f"cannot bind input {name!r}: the model takes {want}, "
                            f"got {value.dtype.name}")
        model.graph.input.remove(inputs[name])
        for init in list(model.graph.initializer):
            if init.name == name:
                model.graph.initializer.remove(init)
        model.graph.initializer.append(numpy_helper.from_array(value, name))


def _slim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    # onnxslim: shape inference, constant folding (shape chains, If on a constant
    # condition is inlined), dead-code removal. It never changes what an op computes.
    model = onnxslim.slim(model)
    fuse_hardswish(model)
    return _deterministic_shapes(model)


def _scalar(inits: dict[str, np.ndarray], name: str, value: float) -> bool:
    a = inits.get(name)
    return a is not None and a.size == 1 and float(a.reshape(-1)[0]) == value


def fuse_hardswish(model: onnx.ModelProto) -> int:
    """Fold exporters' decomposed hard-swish, ``x * Clip(x + 3, 0, 6) / 6`` (Paddle's
    MobileNetV3: ppocr-cls has 18), into one HardSwish (opset >= 14) or HardSigmoid(x,
    alpha=1/6, beta=1/2) * x, in place; returns how many. Four elementwise passes
    become one or two (ppocr-cls: 1.2x faster in fp32); the values agree to float
    rounding (1e-7)."""
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:
        for t in node.input:
            consumers[t].append(node)
    outputs = {o.name for o in graph.output}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def only(t: str, op: str) -> onnx.NodeProto | None:
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and c[0].op_type == op and t not in outputs else None

    drop: set[int] = set()
    replace: dict[int, list[onnx.NodeProto]] = {}
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        three = [t for t in add.input if _scalar(inits, t, 3.0)]
        if len(three) != 1:
            continue
        x = add.input[1] if add.input[0] == three[0] else add.input[0]
        clip = only(add.output[0], "Clip")
        if clip is None or len(clip.input) != 3 or clip.input[0] != add.output[0] or not (
                _scalar(inits, clip.input[1], 0.0) and _scalar(inits, clip.input[2], 6.0)):
            continue
        mul = only(clip.output[0], "Mul")
        if mul is None or sorted(mul.input) != sorted([x, clip.output[0]]):
            continue
        div = only(mul.output[0], "Div")
        if div is None or div.input[0] != mul.output[0] or not _scalar(inits, div.input[1], 6.0):
            continue
        y = div.output[0]
        if opset >= 14:
            new = [helper.make_node("HardSwish", [x], [y], name=f"{div.name}_HardSwish")]
        else:
            new = [helper.make_node("HardSigmoid", [x], [f"{y}_hsig"], name=f"{div.name}_HSig",
                                    alpha=1.0 / 6, beta=0.5),
                   helper.make_node("Mul", [x, f"{y}_hsig"], [y], name=div.name)]
        drop |= {id(add), id(clip), id(mul), id(div)}
        replace[id(add)] = new
    if replace:
        nodes = []
        for node in graph.node:
            if id(node) in replace:
                nodes += replace[id(node)]
            elif id(node) not in drop:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        used = {t for n in graph.node for t in n.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
    return len(replace)


def _deterministic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace onnxslim's value_info by onnx's own shape inference. onnxslim's symbolic
    inference writes each tensor up to 9 times, with dim expressions that sympy spells
    differently from run to run ("floor(2.0*(h - 1)//2 + 1)" or "(h - 1)//2 + 1"): the
    same file gave files ~130 KB apart. onnx's inference is deterministic; nothing
    downstream needs the symbolic spellings (the quantizer and the runtime infer again)."""
    del model.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - without annotations the model is still valid
        return model
    seen: set[str] = set()
    unique = []
    for v in inferred.graph.value_info:
        if v.name not in seen:
            seen.add(v.name)
            unique.append(v)
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(unique)
    return inferred


def load_graph(path: str | Path, *, fixed: dict[str, np.ndarray] | None = None,
               slim: bool = True) -> onnx.ModelProto:
    """Load, check and simplify an ONNX file so that the installed onnxruntime runs it.

    ``fixed`` binds inputs to constants (e.g. silero-vad's ``sr=16000``) so that the
    branches they select fold away. The result computes the same outputs as the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such ONNX file")
    check_external_data(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors vary
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first})") from None
    if model.ir_version < 4:
        # Old IR lists initializers as inputs; binding and slimming need them apart.
        inits = {i.name for i in model.graph.initializer}
        for v in [v for v in model.graph.input if v.name in inits]:
            model.graph.input.remove(v)
        model.ir_version = 4
    if fixed:
        _bind(model, fixed)
    if slim:
        model = _slim(model)
    if model.ir_version > max_ir_version():
        # The newer IR adds nothing the graph uses (the opset decides the ops).
        model.ir_version = max_ir_version()
    return model
