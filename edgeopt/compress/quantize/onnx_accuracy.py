"""The accuracy side of choosing what stays float: the output's SQNR against fp32, the
layers nearest the outputs, and the nodes that hurt the output most by themselves."""

from __future__ import annotations

import collections
import time

import numpy as np
import onnx

from edgeopt.compress.quantize.onnx_config import WEIGHT_OPS
from edgeopt.compress.quantize.onnx_qdq import QdqBuilder


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio. Rank >= 2 outputs are scored per channel
    (axis 1) and averaged, so that small-valued channels (YOLO's class scores beside
    pixel-sized boxes) count as much as large ones."""
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    if ref.ndim >= 2 and ref.shape[1] > 1:
        axes = tuple(i for i in range(ref.ndim) if i != 1)
        sig = (ref**2).sum(axis=axes)
        noise = ((ref - out) ** 2).sum(axis=axes)
    else:
        sig, noise = np.array([(ref**2).sum()]), np.array([((ref - out) ** 2).sum()])
    db = 10 * np.log10(np.maximum(sig, 1e-30) / np.maximum(noise, 1e-30))
    return float(np.mean(np.minimum(db, 120.0)))


def fidelity(sess, feeds: list[dict], refs: list[list[np.ndarray]]) -> float:
    """Worst output's mean SQNR (dB) against the fp32 outputs ``refs``."""
    per_output = collections.defaultdict(list)
    for feed, ref in zip(feeds, refs):
        for i, (r, o) in enumerate(zip(ref, sess.run(None, feed))):
            if np.issubdtype(np.asarray(r).dtype, np.floating):
                per_output[i].append(sqnr_db(r, o))
    return min(float(np.mean(v)) for v in per_output.values()) if per_output else 120.0


def head_levels(model: onnx.ModelProto, levels: int) -> list[list[str]]:
    """Node names by distance from the graph outputs, counted in weight layers: level 1
    holds everything between the outputs and the last weight layer on each path (those
    layers included), level 2 the next weight layers back, and so on."""
    producer = {o: n for n in model.graph.node for o in n.output}
    frontier = [o.name for o in model.graph.output]
    seen: set[str] = set()
    result = []
    for _ in range(levels):
        level, nxt = [], []
        stack = list(frontier)
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            level.append(node.name)
            (nxt if node.op_type in WEIGHT_OPS else stack).extend(node.input)
        result.append(level)
        frontier = nxt
    return result


def sensitivity_search(builder: QdqBuilder, nodes: set[str], current: onnx.ModelProto,
                       score: float, score_of, target_db: float, budget_s: float, *,
                       min_gain_db: float = 0.1, log=print):
    """Keep float, one at a time, the nodes that hurt the output most, until the SQNR
    reaches ``target_db``. Each node is scored quantized alone (the rest float: the
    damage it does by itself), then tried float worst first; a node stays float only
    if that gains ``min_gain_db``. Half the budget goes to scoring, the rest to trials.
    Returns (nodes, graph, score, [(node, its alone score, gain)])."""
    t0 = time.perf_counter()
    alone: dict[str, float] = {}
    for n in [n for n in builder.candidates if n in nodes]:  # graph order
        if time.perf_counter() - t0 > budget_s / 2:
            log(f"  accuracy: sensitivity budget spent after {len(alone)} of {len(nodes)} nodes")
            break
        alone[n] = score_of(builder.build({n}))
        each = time.perf_counter() - t0
        if len(alone) == 1 and each * len(nodes) > budget_s:
            # Scoring a few nodes of a large graph (yolov8n: 9 of 207 in a minute) finds
            # nothing worth the time: leave it to the head levels.
            log(f"  accuracy: no sensitivity search ({len(nodes)} nodes at {each:.1f} s each "
                f"exceed the {budget_s:g} s budget)")
            return nodes, current, score, []
    found = []
    for n in sorted(alone, key=alone.get):
        if score >= target_db or time.perf_counter() - t0 > budget_s:
            break
        if alone[n] >= 119.0:  # not measurably lossy by itself: nothing to gain
            break
        trial = builder.build(nodes - {n})
        trial_score = score_of(trial)
        if trial_score - score >= min_gain_db:
            found.append((n, alone[n], trial_score - score))
            nodes = nodes - {n}
            current, score = trial, trial_score
            log(f"  accuracy: {n} float (alone {alone[n]:.1f} dB): SQNR {score:.1f} dB")
    return nodes, current, score, found
