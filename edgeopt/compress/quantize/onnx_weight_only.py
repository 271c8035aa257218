"""Weight-only int8: float weights stored as int8 * scale for the weight ops that compute
in float (left float for speed or accuracy, and LSTM/GRU/RNN, which ORT's static QDQ does
not quantize), and the choice of which op types and tensors keep it."""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.compress.quantize import onnx_hw
from edgeopt.compress.quantize.onnx_prepare import captures
from edgeopt.core.onnx_graph import subgraphs

# Weight-only int8 storage: op type -> (weight input slots, channel axis or None for
# "decided per node").
WEIGHT_ONLY_SLOTS = {"Conv": ((1,), 0), "ConvTranspose": ((1,), 1), "Gemm": ((1,), None),
                     "MatMul": ((1,), None), "LSTM": ((1, 2), 1), "GRU": ((1, 2), 1),
                     "RNN": ((1, 2), 1)}
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
WEIGHT_ONLY_SPEED = 0.9  # a slower weight-only int8 is kept while <= 0.9x fp32 time


def _weight_axis(node: onnx.NodeProto, w: np.ndarray) -> int | None:
    """Output-channel axis of a weight (per gate row for recurrent W/R)."""
    axis = WEIGHT_ONLY_SLOTS[node.op_type][1]
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        axis = 0 if trans_b else 1
    elif node.op_type == "MatMul":
        axis = w.ndim - 1
    if w.ndim < 2 or axis is None or axis >= w.ndim or w.shape[axis] == 1:
        return None
    return axis


def weight_only_int8(q: onnx.ModelProto, *, per_channel: bool = True, min_elems: int = 64,
                     skip_nodes: frozenset[str] = frozenset(),
                     weights: frozenset[str] | None = None) -> list[dict]:
    """Store, in place, each float weight initializer of a float-computing weight op
    (Conv/ConvTranspose/Gemm/MatMul left float, LSTM/GRU/RNN W and R) as symmetric int8
    with a Cast * scale that gives the op its float weights back: 4x smaller, the same
    float kernel, which onnxruntime constant-folds at session creation. Per output channel
    (per gate row for W/R) where the axis is clear and the caller asks per-channel, per
    tensor otherwise. Returns one entry per rewritten node."""
    graph = q.graph
    inits = {i.name: i for i in graph.initializer}
    graph_inputs = {v.name for v in graph.input}
    slots: dict[str, list[tuple[onnx.NodeProto, int]]] = collections.defaultdict(list)
    other: set[str] = set()  # read anywhere else: left alone
    for node in graph.node:
        weight_slots = WEIGHT_ONLY_SLOTS.get(node.op_type, ((), None))[0]
        for k, t in enumerate(node.input):
            if k in weight_slots and node.name not in skip_nodes:
                slots[t].append((node, k))
            else:
                other.add(t)
        for g in subgraphs(node):
            other |= captures(g)
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {n.name for n in graph.node}
    new_nodes, entries = [], {}
    count = 0
    for name in sorted(slots, key=lambda t: [n.name for n, _ in slots[t]]):
        init = inits.get(name)
        if init is None or name in other or name in graph_inputs:
            continue
        if weights is not None and name not in weights:
            continue
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        if w.size < min_elems or not np.all(np.isfinite(w)):
            continue
        axes = {_weight_axis(n, w) for n, _ in slots[name]}
        axis = axes.pop() if len(axes) == 1 and per_channel else None
        if axis is None:
            amax = np.array(np.abs(w).max(), np.float32)
        else:
            amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis))
        scale = (np.where(amax > 0, amax, 1.0) / 127.0).astype(np.float32)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis] = -1
        wq = np.clip(np.rint(w / scale.reshape(shape) if axis is not None else w / scale),
                     -127, 127).astype(np.int8)
        while {f"wo{count}{x}" for x in ("", "s", "f", "c", "sf", "sc")} & taken:
            count += 1
        qname, sname = f"wo{count}", f"wo{count}s"
        taken |= {f"{qname}{x}" for x in ("", "s", "f", "c", "sf", "sc")}
        count += 1
        graph.initializer.remove(init)
        # Cast * scale, not DequantizeLinear: onnxruntime constant-folds these at session
        # creation (it never folds DequantizeLinear, keeping it for its QDQ fusions), so
        # the op gets a constant float weight it can pre-pack, and runs as fast as fp32.
        # Per-channel scales are stored float16 (half their bytes; the rounding rescales
        # a channel by < 0.05%, a tenth of the int8 step) and their exact float16 value
        # is what the weights were divided by.
        if axis is not None:
            scale = scale.astype(np.float16).astype(np.float32)
            scale = np.where(scale > 0, scale, np.float32(1.0))
            wq = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            stored = scale.reshape(shape).astype(np.float16)
        else:
            stored = scale
        graph.initializer.extend([numpy_helper.from_array(wq, qname),
                                  numpy_helper.from_array(stored, sname)])
        new_nodes.append(onnx.helper.make_node("Cast", [qname], [f"{qname}f"],
                                               name=f"{qname}c", to=onnx.TensorProto.FLOAT))
        if axis is not None:
            new_nodes.append(onnx.helper.make_node("Cast", [sname], [f"{sname}f"],
                                                   name=f"{sname}c", to=onnx.TensorProto.FLOAT))
            sname = f"{sname}f"
        new_nodes.append(onnx.helper.make_node("Mul", [f"{qname}f", sname], [name], name=qname))
        for node, _ in slots[name]:
            e = entries.setdefault(node.name, {"node": node.name, "op": node.op_type,
                                               "weights": [], "bytes_saved": 0})
            e["weights"].append(name)
            e["bytes_saved"] += int(w.nbytes - wq.nbytes - stored.nbytes)
            e["per"] = "tensor" if axis is None else f"channel (axis {axis})"
    if new_nodes:
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + rest)
    return list(entries.values())


def weight_only_step(current, score, q_ms, fp_ms, kept, cfg, score_of, fp_sess, feed1,
                     threads, decisions, log):
    """weight_only_int8 on the final graph, op type by op type, kept where it costs
    neither speed nor the accuracy target. (onnxruntime does fold Cast * scale of an
    initializer at session creation; it never folds a DequantizeLinear, which then runs
    on every call and leaves a Conv or LSTM unable to pre-pack its weights: ppocr-cls
    ran 1.6x slower, hence Cast * scale.)"""
    def variant(skip, weights=None):
        trial = onnx.ModelProto.FromString(current.SerializeToString())
        return trial, weight_only_int8(trial, per_channel=cfg.per_channel, skip_nodes=skip,
                                       weights=weights)

    by_type = collections.defaultdict(set)
    for n in current.graph.node:
        if n.op_type in WEIGHT_ONLY_SLOTS:
            by_type[n.op_type].add(n.name)
    everything = set().union(*by_type.values()) if by_type else set()
    ok: set[str] = set()
    saved = {op: sum(e["bytes_saved"] for e in variant(frozenset(everything - names))[1])
             for op, names in by_type.items()}
    base = onnx_hw.session(current, threads) if cfg.hardware_aware else None  # timing only
    # Biggest size win first. An op type's int8 weights stay if the model runs no slower
    # than without them (they fold back to float at load), or, if it does, while it is
    # still clearly faster than fp32 (WEIGHT_ONLY_SPEED of its time).
    for op in sorted(by_type, key=lambda o: -saved[o]):
        if saved[op] <= 0:
            continue
        if not cfg.hardware_aware:  # no timing decisions: the accuracy check below decides
            ok |= by_type[op]
            continue
        trial, entries = variant(frozenset(everything - ok - by_type[op]))
        fp2, q2, t_ms = onnx_hw.latencies(
            [fp_sess, base, onnx_hw.session(trial, threads)], feed1, repeats=30)
        fits = (t_ms <= q2 * 1.10 or t_ms - q2 <= onnx_hw.NOISE_S
                or t_ms <= fp2 * WEIGHT_ONLY_SPEED)
        log(f"  weight-only int8 {op}: {t_ms * 1e3:.3f} ms vs {q2 * 1e3:.3f} ms without, "
            f"{fp2 * 1e3:.3f} ms fp32" + ("" if fits else "; stays float"))
        if fits:
            ok |= by_type[op]
            base = onnx_hw.session(trial, threads)
        else:
            decisions.append(f"weight-only int8 {op} not kept: {t_ms * 1e3:.3f} ms vs "
                             f"{q2 * 1e3:.3f} ms without, {fp2 * 1e3:.3f} ms fp32")
    allowed = frozenset(ok)  # layers kept float for accuracy too: the check below decides
    trial, entries = variant(frozenset(everything - allowed))
    if not entries:
        return current, score, q_ms, fp_ms, []

    def fine(t_score):
        return t_score >= cfg.target_db or t_score >= score - cfg.min_gain_db

    # The most weights first: when all of them cost the accuracy target, bisect for the
    # longest run of the largest tensors that does not (small layers - depthwise 3x3,
    # first convs - have the fewest weights per scale and lose the most).
    sizes: dict[str, int] = {}
    for e in entries:
        for w in e["weights"]:
            sizes[w] = sizes.get(w, 0) + e["bytes_saved"] // len(e["weights"])
    order = sorted(sizes, key=lambda w: -sizes[w])
    t_score = score_of(trial)
    if not fine(t_score):
        lo, hi, best = 0, len(order) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            cand = variant(frozenset(everything - allowed), frozenset(order[:mid + 1]))
            cs = score_of(cand[0])
            if fine(cs):
                best, lo = (cand, cs), mid + 1
            else:
                hi = mid - 1
        if best is None:
            log(f"  weight-only int8: SQNR {t_score:.1f} dB even for the largest tensor; "
                "not kept")
            return current, score, q_ms, fp_ms, []
        (trial, entries), t_score = best
        log(f"  weight-only int8: {len(sizes) - sum(len(e['weights']) for e in entries)} "
            f"small weight tensors stay float for accuracy")
    fp2, t_ms = onnx_hw.latencies([fp_sess, onnx_hw.session(trial, threads)], feed1,
                                  repeats=40)
    for e in entries:
        e["reason"] = kept.get(e["node"]) or (
            "LSTM/GRU/RNN: onnxruntime's static QDQ has no int8 kernel for it"
            if e["op"] in RECURRENT_OPS else "not in op_types")
    decisions.append(f"weight-only int8 ({len(entries)} nodes): SQNR {t_score:.1f} dB, "
                     f"{t_ms * 1e3:.3f} ms")
    log(f"  {decisions[-1]}")
    return trial, t_score, t_ms, fp2, entries
