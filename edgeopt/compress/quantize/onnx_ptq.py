"""int8 post-training quantization of an ONNX graph as it is, with onnxruntime's quantizer.

onnxruntime.quantization does the rewriting (QDQ, per-channel symmetric int8 weights);
what this module adds is the choice of nodes: only ops ORT runs as integer kernels, none
that run slower in int8 on this CPU (onnx_hw), and none whose float output buys more
fidelity than it costs (the layers that feed the graph outputs, and, below the SQNR
target, the nodes a sensitivity search finds hurt the output most). Every other op is
left untouched in float, so a third-party graph keeps its pre/post-processing intact;
the weights of the float weight ops (and of LSTM/GRU, which ORT's QDQ leaves float) are
still stored int8 ("weight-only int8"), with float compute.
"""

from __future__ import annotations

import collections
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgeopt.compress.quantize import onnx_hw
from edgeopt.compress.quantize.onnx_accuracy import fidelity, head_levels, sensitivity_search
from edgeopt.compress.quantize.onnx_compact import compact_qdq
from edgeopt.compress.quantize.onnx_config import (
    ACTIVATION_OPS,
    WEIGHT_OPS,
    ActType,
    CalibMethod,
    OnnxQuantConfig,
)
from edgeopt.compress.quantize.onnx_prepare import (
    captures,
    check_calib,
    explicit_captures,
    name_nodes,
    opset_version,
    per_channel_opset,
)
from edgeopt.compress.quantize.onnx_qdq import QdqBuilder
from edgeopt.core.config import first_match
from edgeopt.core.errors import ExportError
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
    float kernel, which onnxruntime constant-folds at session creation. Per output channel (per gate row for W/R) where the axis is clear
    and the caller asks per-channel, per tensor otherwise. Returns one
    entry per rewritten node."""
    from onnx import numpy_helper

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
    per_axis = per_channel
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
        axis = axes.pop() if len(axes) == 1 and per_axis else None
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


def short_names(q: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Rename, in place, the tensors and nodes the quantizer added ("<tensor>_DequantizeLinear
    _Output", ...): on small models those names weigh as much as the int8 weights."""
    keep = {n.name for n in original.graph.node}
    keep |= {t for n in original.graph.node for t in (*n.input, *n.output)}
    keep |= {i.name for i in original.graph.initializer}
    keep |= {v.name for v in (*q.graph.input, *q.graph.output)}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return new.setdefault(name, f"q{len(new)}")

    for i, node in enumerate(q.graph.node):
        # The node's position makes its new name unique (a tensor count need not move).
        node.name = node.name if node.name in keep else f"qn{i}_{node.op_type}"
        node.input[:] = [short(t) for t in node.input]
        node.output[:] = [short(t) for t in node.output]
    for init in q.graph.initializer:
        init.name = short(init.name)
    for vi in q.graph.value_info:
        vi.name = short(vi.name)


def _weight_only_step(current, score, q_ms, fp_ms, kept, cfg, score_of, fp_sess, feed1,
                      threads, decisions, log):
    """weight_only_int8 on the final graph, op type by op type, kept where it costs
    neither speed nor the accuracy target. (onnxruntime does fold Cast * scale of an
    initializer at session creation; it never folds a DequantizeLinear, which then runs
    on every call and leaves a Conv or LSTM unable to pre-pack its weights: ppocr-cls
    ran 1.6x slower, hence Cast * scale.)"""
    def variant(skip):
        trial = onnx.ModelProto.FromString(current.SerializeToString())
        return trial, weight_only_int8(trial, per_channel=cfg.per_channel, skip_nodes=skip)

    by_type = collections.defaultdict(set)
    for n in current.graph.node:
        if n.op_type in WEIGHT_ONLY_SLOTS:
            by_type[n.op_type].add(n.name)
    everything = set().union(*by_type.values()) if by_type else set()
    ok: set[str] = set()
    saved = {op: sum(e["bytes_saved"] for e in variant(frozenset(everything - names))[1])
             for op, names in by_type.items()}
    base = onnx_hw.session(current, threads)
    # Biggest size win first. An op type's int8 weights stay if the model runs no slower
    # than without them (they fold back to float at load), or, if it does, while it is
    # still clearly faster than fp32 (WEIGHT_ONLY_SPEED of its time).
    for op in sorted(by_type, key=lambda o: -saved[o]):
        if saved[op] <= 0:
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
            cand = variant_w(current, cfg, everything - allowed, frozenset(order[:mid + 1]))
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


def variant_w(current, cfg, skip, weights):
    trial = onnx.ModelProto.FromString(current.SerializeToString())
    return trial, weight_only_int8(trial, per_channel=cfg.per_channel,
                                   skip_nodes=frozenset(skip), weights=weights)


def quantize_graph(model: onnx.ModelProto, calib: list[dict[str, np.ndarray]],
                   cfg: OnnxQuantConfig, *, threads: int = 1,
                   log=print) -> tuple[onnx.ModelProto, dict]:
    """int8 QDQ version of ``model`` and a record of what was quantized and why not."""
    check_calib(model, calib)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # callers keep theirs
    name_nodes(model)
    decisions: list[str] = []
    if explicit_captures(model):
        decisions.append("tensors read by If/Loop bodies routed through an Identity")
    if cfg.per_channel:
        model, note = per_channel_opset(model, log)
        if note:
            decisions.append(note)
        elif opset_version(model) < 13:
            cfg = cfg.replace(per_channel=False)
            decisions.append(f"opset {opset_version(model)}: per-tensor weight scales")
    op_of = {n.name: n.op_type for n in model.graph.node}
    kept: dict[str, str] = {}  # node -> why it stays float
    candidates: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in cfg.op_types:
            continue
        pattern = first_match(node.name, cfg.exclude)
        if pattern is not None:
            kept[node.name] = f"user: matches exclude pattern {pattern!r}"
        else:
            candidates[node.name] = node.op_type
    if not any(op in WEIGHT_OPS for op in candidates.values()):
        ops = collections.Counter(n.op_type for n in model.graph.node)
        first = next((n for n in model.graph.node), None)
        where = f"node {first.name!r} ({first.op_type})" if first else "an empty graph"
        raise ExportError(f"int8 (onnx_ptq): no Conv/MatMul/Gemm/ConvTranspose to quantize; "
                          f"first is {where}, ops: {dict(ops.most_common(5))}")

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer warns per tensor
    eval_feeds = calib[: cfg.eval_samples]
    fp_sess = onnx_hw.session(model, threads)
    refs = [fp_sess.run(None, f) for f in eval_feeds]
    nodes = set(candidates)
    score_of = lambda q: fidelity(onnx_hw.session(q, threads), eval_feeds, refs)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="edgeopt-onnx-ptq-") as tmp:
        builder = QdqBuilder(model, calib, cfg, candidates, Path(tmp))
        current = builder.build(nodes)
        score = score_of(current)
        log(f"  int8 {len(nodes)} nodes: SQNR {score:.1f} dB")
        if cfg.accuracy_aware:
            for depth, level in enumerate(head_levels(model, cfg.head_levels), 1):
                level = [n for n in level if n in nodes]
                if score >= cfg.target_db:
                    log(f"  accuracy: SQNR {score:.1f} dB >= {cfg.target_db:g} dB; head stays int8")
                    break
                if not level:
                    continue
                trial = builder.build(nodes - set(level))
                trial_score = score_of(trial)
                gain = trial_score - score
                if gain < cfg.min_gain_db:
                    log(f"  accuracy: head level {depth} float gains {gain:+.1f} dB; quantized")
                    break
                why = f"accuracy: output-side layer (level {depth}), float gains {gain:+.1f} dB"
                kept.update({n: why for n in level})
                nodes -= set(level)
                current, score = trial, trial_score
                decisions.append(f"head level {depth} ({len(level)} nodes) float: "
                                 f"SQNR {score:.1f} dB")
                log(f"  {decisions[-1]}")
        feed1 = onnx_hw.batch_one(calib[0], model)
        if cfg.hardware_aware:
            types = frozenset(candidates[n] for n in nodes)
            counts = collections.Counter(candidates[n] for n in nodes)
            optional = [t for t, _ in counts.most_common() if t not in WEIGHT_OPS]
            optional += [t for t, _ in counts.most_common() if t in WEIGHT_OPS]
            types, dropped = onnx_hw.prune_op_types(
                lambda ts: builder.for_types(nodes, ts), types, optional, feed1,
                threads=threads, log=log)
            for n in list(nodes):
                if candidates[n] in dropped:
                    kept[n] = f"hardware: {dropped[candidates[n]]}"
                    nodes.discard(n)
            current = builder.build(nodes)
            score = fidelity(onnx_hw.session(current, threads), eval_feeds, refs)
        fp_ms, q_ms = onnx_hw.latencies(
            [fp_sess, onnx_hw.session(current, threads)], feed1, repeats=40)
        if q_ms >= fp_ms and q_ms - fp_ms > onnx_hw.NOISE_S and nodes:
            weights_only = {n for n in nodes if candidates[n] in WEIGHT_OPS}
            trial = builder.build(weights_only)
            fp2, t_ms = onnx_hw.latencies([fp_sess, onnx_hw.session(trial, threads)], feed1,
                                          repeats=40)
            decisions.append(f"int8 not faster than fp32 ({q_ms * 1e3:.2f} vs "
                             f"{fp_ms * 1e3:.2f} ms); weight ops only: {t_ms * 1e3:.2f} ms")
            log(f"  {decisions[-1]}")
            if t_ms < q_ms:
                for n in nodes - weights_only:
                    kept[n] = "hardware: fallback to weight ops only (int8 was slower)"
                nodes, current, q_ms, fp_ms = weights_only, trial, t_ms, fp2
                score = fidelity(onnx_hw.session(current, threads), eval_feeds, refs)

        if cfg.accuracy_aware and score < cfg.target_db and cfg.search_budget_s > 0:
            nodes, current, score, found = sensitivity_search(
                builder, nodes, current, score, score_of, cfg.target_db,
                cfg.search_budget_s, log=log)
            for n, alone, gain in found:
                kept[n] = (f"accuracy: quantized alone the output falls to {alone:.1f} dB; "
                           f"float gains {gain:+.1f} dB")
            if found:
                fp_ms, q_ms = onnx_hw.latencies(
                    [fp_sess, onnx_hw.session(current, threads)], feed1, repeats=40)
                decisions.append(f"sensitivity search: {len(found)} nodes float: "
                                 f"SQNR {score:.1f} dB")
                log(f"  {decisions[-1]}")

    short_names(current, model)
    weight_only: list[dict] = []
    if cfg.weight_only_fallback:
        current, score, q_ms, fp_ms, weight_only = _weight_only_step(
            current, score, q_ms, fp_ms, kept, cfg, score_of, fp_sess, feed1, threads,
            decisions, log)
    compacted = compact_qdq(current, keep_names=set(op_of))
    # Shape annotations: the runtime infers them again, and on a 0.5 MB model they weigh
    # 5% of the int8 file.
    del current.graph.value_info[:]
    quantized = collections.Counter(candidates[n] for n in nodes)
    weight_only_names = {e["node"] for e in weight_only}
    record = {
        "technique": "int8 (onnx_ptq, QDQ via onnxruntime.quantization)",
        "calibration": cfg.calibration.value,
        "activations": cfg.activations.value,
        "weights": "int8 symmetric " + ("per-channel" if cfg.per_channel else "per-tensor"),
        "quantized": dict(quantized.most_common()),
        "float_kept": [{"node": n, "op": op_of[n], "reason": r,
                        **({"weights": "weight-only int8"} if n in weight_only_names else {})}
                       for n, r in kept.items()],
        "weight_only_int8": weight_only,
        "float_ops": dict(collections.Counter(
            n.op_type for n in model.graph.node if n.op_type not in cfg.op_types).most_common()),
        "sqnr_db": round(score, 2),
        "latency_ms_batch1": {"fp32": round(fp_ms * 1e3, 3), "int8": round(q_ms * 1e3, 3)},
        "size_bytes": {"fp32": model.ByteSize(), "int8": current.ByteSize()},
        "size_ratio": round(current.ByteSize() / max(model.ByteSize(), 1), 4),
        "decisions": decisions,
        "compacted": compacted,
    }
    log(f"  int8: {sum(quantized.values())} nodes quantized {dict(quantized)}"
        + (f" (+{len(weight_only)} weight-only int8)" if weight_only else "")
        + f", SQNR {score:.1f} dB, {record['size_ratio']:.2f}x size, "
        f"{q_ms * 1e3:.2f} ms vs {fp_ms * 1e3:.2f} ms fp32 at batch 1")
    return current, record


# The module the graph path and users import from; each name is defined where its job is.
__all__ = ["ACTIVATION_OPS", "WEIGHT_OPS", "ActType", "CalibMethod", "OnnxQuantConfig",
           "explicit_captures", "head_levels", "quantize_graph", "sensitivity_search"]
