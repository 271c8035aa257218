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
from edgeopt.compress.quantize.onnx_compact import compact_qdq, short_names
from edgeopt.compress.quantize.onnx_config import (
    ACTIVATION_OPS,
    WEIGHT_OPS,
    ActType,
    CalibMethod,
    OnnxQuantConfig,
)
from edgeopt.compress.quantize.onnx_prepare import (
    check_calib,
    explicit_captures,
    name_nodes,
    opset_version,
    per_channel_opset,
)
from edgeopt.compress.quantize.onnx_qdq import QdqBuilder
from edgeopt.compress.quantize.onnx_weight_only import weight_only_int8, weight_only_step
from edgeopt.core.config import first_match
from edgeopt.core.errors import ExportError


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
        # A timing decision like the per-type pruning above, so the same switch turns it off:
        # with hardware_aware=False what is quantized depends on the config alone.
        if cfg.hardware_aware and q_ms >= fp_ms and q_ms - fp_ms > onnx_hw.NOISE_S and nodes:
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
        current, score, q_ms, fp_ms, weight_only = weight_only_step(
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
           "explicit_captures", "head_levels", "quantize_graph", "sensitivity_search",
           "weight_only_int8"]
