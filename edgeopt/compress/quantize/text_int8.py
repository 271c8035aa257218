"""int8 for transformer encoders (Hugging Face embedders and classifiers) that keeps their
meaning: which MatMul inputs run dynamic int8 is chosen by measurement.

Measured on all-MiniLM-L6-v2 (bench/compare_peers_text.py): per-channel int8 weights alone
keep cos 0.9995 to fp32; it is the activations' per-tensor int8 that costs, and not evenly.
So the op groups (the same Linear in every layer: query, key, value, attention output,
intermediate, output) are each probed alone with their inputs quantized as ORT's
DynamicQuantizeLinear does, on the calibration texts. A group whose cost (1 - mean cosine
of the outputs to fp32) is within ``group_tolerance`` runs MatMulInteger with dynamic
uint8 activations and per-channel int8 weights; one over it is probed again with its
``outlier_channels`` largest input channels taken out of the int8 path into a small float
MatMul (text_int8_outliers), and takes that if it is then within the tolerance; the rest
keep float compute on weight-only int8 weights. Every int8 MatMul weight is then rounded by
GPTQ on its scale (text_int8_gptq). With ``split_target``, only the fewest MatMuls whose
split gains most are split, until the calibration cosine reaches it, and the rest run plain
dynamic int8 (for speed). With ``target_cos``, the most costly MatMuls then go back
to float compute until the calibration cosine reaches it (text_int8_fallback). The word-embedding table is int8 with a scale per row. LayerNorm,
Softmax, GELU, the residual adds, the mask add and the pooling are never quantized.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edgeopt.compress.quantize.onnx_hw import session as ort_session
from edgeopt.compress.quantize.text_int8_fallback import fall_back
from edgeopt.compress.quantize.text_int8_gptq import gptq_int8
from edgeopt.compress.quantize.text_int8_ops import (
    embedding_gathers,
    int8_embeddings,
    probe_dynamic,
    weight_matmuls,
    weight_only,
)
from edgeopt.compress.quantize.text_int8_outliers import channel_ranges, split_outliers
from edgeopt.core.errors import ConfigError, ExportError
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult

ACTIVATIONS = ("auto", "dynamic", "weight-only")
ROUNDING = ("gptq", "nearest")


@dataclass(frozen=True, kw_only=True)
class TextInt8Config(StepConfig):
    # auto: per op group, by measurement; dynamic: every weight MatMul MatMulInteger;
    # weight-only: int8 weights, float compute everywhere.
    activations: str = "auto"
    group_tolerance: float = 5e-4  # 1 - mean cos a group's int8 activations may cost
    outlier_channels: int = 16  # input channels a split group keeps float (0: no split)
    embeddings: bool = True  # int8 word-embedding table, a scale per row
    eval_batches: int = 4  # calibration batches the probes are scored on
    # gptq: int8 weight codes fitted to the calibration inputs (text_int8_gptq), on the
    # same scales; nearest: round to nearest.
    weight_rounding: str = "gptq"
    # Accuracy-aware fallback (text_int8_fallback): MatMuls ranked by cost go back to float
    # compute until the calibration texts' mean cos to fp32 reaches this; 0: off.
    target_cos: float = 0.0
    # Latency-aware split (the int8-text-fast recipe): each outlier split adds a mask, a
    # pick and a small float MatMul, which on MiniLM put int8 1.1-1.25x over ORT's
    # quantize_dynamic. With this, of the MatMuls the probes would split (or keep float
    # compute), only the fewest whose split gains most are split, until the calibration
    # cos reaches it; the rest run plain dynamic int8. 0: off (every one split).
    split_target: float = 0.0

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATIONS:
            raise ConfigError(f"activations {self.activations!r} unknown "
                              f"(valid: {', '.join(ACTIVATIONS)})")
        if not 0 <= self.group_tolerance < 1:
            raise ConfigError(f"group_tolerance must be in [0, 1), got {self.group_tolerance}")
        if self.outlier_channels < 0:
            raise ConfigError(f"outlier_channels must be >= 0, got {self.outlier_channels}")
        if self.weight_rounding not in ROUNDING:
            raise ConfigError(f"weight_rounding {self.weight_rounding!r} unknown "
                              f"(valid: {', '.join(ROUNDING)})")
        if not 0 <= self.target_cos <= 1:
            raise ConfigError(f"target_cos must be in [0, 1], got {self.target_cos}")
        if not 0 <= self.split_target <= 1:
            raise ConfigError(f"split_target must be in [0, 1], got {self.split_target}")
        if self.split_target and (self.activations != "auto" or not self.outlier_channels):
            raise ConfigError("split_target needs activations 'auto' and outlier_channels > 0")
        if self.eval_batches < 1:
            raise ConfigError(f"eval_batches must be >= 1, got {self.eval_batches}")


def group_of(name: str) -> str:
    """The op group of a node: its name with layer indices as ``*``
    (``/model/encoder/layer.3/attention/self/value/MatMul`` -> ``layer.*/.../value``)."""
    return re.sub(r"(?<=[./])\d+(?=[./]|$)", "*", name)


def cosines(session: ort.InferenceSession, feeds: list[dict], refs: list[np.ndarray]):
    """Per-sample cosine of the first output to the reference outputs."""
    out = []
    for f, r in zip(feeds, refs):
        y = session.run(None, f)[0].reshape(len(r), -1)
        r = r.reshape(len(r), -1)
        out.append((y * r).sum(1) / np.maximum(
            np.linalg.norm(y, axis=1) * np.linalg.norm(r, axis=1), 1e-12))
    return np.concatenate(out)


def activation_cost(model: onnx.ModelProto, nodes: set[str], feeds: list[dict],
                    refs: list[np.ndarray], threads: int) -> float:
    """1 - mean cosine to ``refs`` with only ``nodes``' activations dynamic int8 (the
    probe every choice here is made on)."""
    return float(1 - cosines(ort_session(probe_dynamic(model, nodes), threads), feeds,
                             refs).mean())


def quantize_text(model: onnx.ModelProto, calib: list[dict[str, np.ndarray]],
                  cfg: TextInt8Config | None = None, *, threads: int = 1,
                  log=print) -> tuple[onnx.ModelProto, dict]:
    """The int8 model and a record of each group's measured cost and choice."""
    cfg = cfg or TextInt8Config()
    if not calib:
        raise ExportError("int8 (text): no calibration texts")
    matmuls = weight_matmuls(model)
    if not matmuls:
        raise ExportError("int8 (text): the graph has no MatMul with a weight initializer")
    feeds = calib[: cfg.eval_batches]
    refs = [ort_session(model, threads).run(None, f)[0] for f in feeds]
    groups: dict[str, list[str]] = {}
    for n in matmuls:
        groups.setdefault(group_of(n), []).append(n)
    costs: dict[str, float] = {}
    split: list[str] = []
    amax = None  # per-channel input ranges, measured once a group needs the outlier split
    if cfg.activations == "auto":
        session = lambda m: ort_session(m, threads)  # noqa: E731
        score = lambda m, ns: activation_cost(m, ns, feeds, refs, threads)  # noqa: E731
        dynamic = []
        for g, nodes in groups.items():
            costs[g] = score(model, set(nodes))
            log(f"  probe {g}: dynamic int8 activations cost {costs[g]:.2e} (1 - cos)")
            if costs[g] <= cfg.group_tolerance:
                dynamic += nodes
                continue
            if not cfg.outlier_channels:
                continue
            if amax is None:
                inputs = sorted({n.input[0] for n in model.graph.node if n.name in matmuls})
                amax = channel_ranges(model, inputs, feeds, session)
            trial = split_outliers(model, set(nodes), amax, cfg.outlier_channels)
            costs[g + " +outliers"] = score(trial, set(nodes))
            log(f"  probe {g}, {cfg.outlier_channels} outlier channels float: "
                f"{costs[g + ' +outliers']:.2e}")
            if costs[g + " +outliers"] <= cfg.group_tolerance or cfg.split_target:
                split += nodes
    else:
        dynamic = matmuls if cfg.activations == "dynamic" else []
    split_tried: dict[int, float] = {}
    chosen = None  # split_target's graph, built by its search
    if cfg.split_target and split:
        dynamic, split, split_tried, chosen = _split_budget(
            model, dynamic, split, set(matmuls), amax, cfg, calib, feeds, refs, threads, log)
    build = lambda back: _build(model, [n for n in dynamic if n not in back],  # noqa: E731
                                [n for n in split if n not in back], set(matmuls), amax, cfg,
                                calib, threads, log)
    built = {0: chosen or build(set())}  # by how many MatMuls fell back: each is built once
    fallback, tried = [], {}
    if cfg.target_cos and (dynamic or split):
        ranked = _ranked(model, dynamic, split, amax, cfg, feeds, refs, threads)

        def score(k: int) -> float:
            if k not in built:
                built[k] = build(set(ranked[:k]))
            cos = float(cosines(ort_session(built[k][0], threads), feeds, refs).mean())
            if cos < cfg.target_cos and k < len(ranked):
                del built[k]  # never the answer (fall_back returns a count that met it)
            return cos

        count, tried = fall_back(ranked, score, cfg.target_cos, log)
        fallback = ranked[:count]
        built = {0: built[count]}  # the one kept; the other trials' graphs are dropped
        dynamic = [n for n in dynamic if n not in fallback]
        split = [n for n in split if n not in fallback]
    q, refitted = built[0]
    floating = set(matmuls) - set(dynamic) - set(split)
    gathers = embedding_gathers(model) if cfg.embeddings else []
    cos = cosines(ort_session(q, threads), feeds, refs)
    record = {
        "technique": "int8 (text: dynamic MatMulInteger where measured harmless, else "
                     "weight-only int8; int8 embeddings, a scale per row)",
        "activations": cfg.activations,
        "group_cost": {g: round(c, 7) for g, c in costs.items()},
        "group_tolerance": cfg.group_tolerance,
        "dynamic_int8": sorted({group_of(n) for n in dynamic}),
        "dynamic_int8_outliers_float": sorted({group_of(n) for n in split}),
        "outlier_channels": cfg.outlier_channels,
        "dynamic_int8_outliers_split": sorted(split),
        "target_cos": cfg.target_cos,
        "fallback_float": fallback,
        "fallback_tried": {str(k): round(v, 6) for k, v in tried.items()},
        "split_target": cfg.split_target,
        "split_tried": {str(k): round(v, 6) for k, v in split_tried.items()},
        "weight_rounding": cfg.weight_rounding,
        "gptq_weights": refitted,
        "weight_only_int8": sorted({group_of(n) for n in floating}),
        "embeddings_int8": gathers,
        "calib_cos": {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)},
        "size_bytes": {"fp32": model.ByteSize(), "int8": q.ByteSize()},
    }
    log(f"  int8 (text): {len(dynamic) + len(split)} MatMuls dynamic int8, {len(split)} of them with "
        f"outlier channels float, {len(floating)} weight-only, "
        f"{len(gathers)} embedding tables; calibration cos {cos.mean():.5f} / {cos.min():.5f}, "
        f"{q.ByteSize() / model.ByteSize():.3f}x size")
    return q, record


def _build(model, dynamic: list[str], split: list[str], matmuls: set[str], amax, cfg,
           calib, threads: int, log) -> tuple[onnx.ModelProto, int]:
    """The int8 graph for one choice: ``split`` with outlier channels float, ``dynamic``
    and ``split`` on MatMulInteger, the rest weight-only; GPTQ codes where configured; the
    embedding tables int8 (so a fallback is scored on the whole int8 model)."""
    floating = matmuls - set(dynamic) - set(split)
    q = split_outliers(model, set(split), amax, cfg.outlier_channels) if split else model
    floats = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer
              if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT}
    q = _dynamic_int8(q, dynamic + split) if dynamic or split else q
    # The outlier rows' small float MatMuls store int8 weights too (else 0.01x of the size).
    q = weight_only(q, floating | {n + "_outliers" for n in split})
    refitted = 0
    if cfg.weight_rounding == "gptq":
        q, refitted = gptq_int8(q, floats, calib, lambda m: ort_session(m, threads))
        log(f"  int8 (text): {refitted} MatMul weights rounded by GPTQ on "
            f"{sum(len(next(iter(f.values()))) for f in calib)} calibration texts")
    if cfg.embeddings:
        q = int8_embeddings(q, set(embedding_gathers(q)))
    return q, refitted


def _ranked(model, dynamic: list[str], split: list[str], amax, cfg, feeds, refs,
            threads: int) -> list[str]:
    """The int8 MatMuls, most costly first: each one's activations probed alone, in the
    form it runs (outlier channels split off for ``split``)."""
    base = split_outliers(model, set(split), amax, cfg.outlier_channels) if split else model
    cost = {n: activation_cost(base, {n}, feeds, refs, threads) for n in dynamic + split}
    return sorted(cost, key=lambda n: -cost[n])


def _split_budget(model, dynamic: list[str], split: list[str], matmuls: set[str], amax, cfg,
                  calib, feeds, refs, threads: int, log) -> tuple[list, list, dict, tuple]:
    """``split_target``: the split candidates ranked by what their split gains (each
    MatMul's dynamic int8 cost probed alone, plain minus split), then the fewest leading
    ones split that bring the whole int8 model's calibration cos to the target (searched as
    the fallback is: doubling, then bisection); the others join ``dynamic`` unsplit."""
    gain = {n: activation_cost(model, {n}, feeds, refs, threads) - activation_cost(
        split_outliers(model, {n}, amax, cfg.outlier_channels), {n}, feeds, refs, threads)
        for n in split}
    ranked = sorted(split, key=lambda n: -gain[n])

    built = {}  # the trials' graphs by split count: the one chosen is not built again

    def score(k: int) -> float:
        built[k] = _build(model, dynamic + ranked[k:], ranked[:k], matmuls, amax, cfg, calib,
                          threads, lambda *_: None)
        return float(cosines(ort_session(built[k][0], threads), feeds, refs).mean())

    count, tried = fall_back(ranked, score, cfg.split_target, log, what="outlier-split")
    log(f"  int8 (text): {count} of {len(ranked)} MatMuls outlier-split for calibration cos "
        f"{cfg.split_target}, the rest plain dynamic int8")
    return dynamic + ranked[count:], ranked[:count], tried, built[count]


def _dynamic_int8(model: onnx.ModelProto, nodes: list[str]) -> onnx.ModelProto:
    """ORT's quantize_dynamic on ``nodes`` only: per-channel int8 weights, uint8 dynamic
    activations (DynamicQuantizeLinear -> MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing", per call
    with tempfile.TemporaryDirectory(prefix="edgeopt-text-int8-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=list(nodes),
                         extra_options={"MatMulConstBOnly": True})
        return onnx.load(str(dst))


class TextInt8Record(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        back = f", {len(d['fallback_float'])} back to float for cos {d['target_cos']}" \
            if d["target_cos"] else ""
        if d.get("split_target"):
            back += (f", outlier split only where needed for cos {d['split_target']} "
                     f"({len(d['dynamic_int8_outliers_split'])} MatMuls)")
        return [f"text int8: {d['gptq_weights']} GPTQ-rounded int8 MatMul weights{back}; "
                f"calibration cos {d['calib_cos']['mean']:.5f}; "
                f"{d['size_bytes']['int8'] / d['size_bytes']['fp32']:.3f}x size"]


@register(TextInt8Config, step="text_int8")
def text_int8(model, config: TextInt8Config, ctx: StepContext) -> StepResult:
    """The recipe step (``text_int8: {target_cos: 0.9995}``): its options, where the
    ``int8`` recipe takes the defaults. The calibration inputs are tokenized feeds."""
    if not isinstance(model, onnx.ModelProto):
        raise ConfigError("text_int8 applies to hf: text models (their exported ONNX graph); "
                          f"this model is a {type(model).__name__}")
    feeds = list(ctx.calibration or [])
    q, record = quantize_text(model, feeds, config, log=ctx.log)
    return StepResult(q, TextInt8Record(record["technique"], record))
