"""int8 post-training quantization of an ONNX graph as it is, with onnxruntime's quantizer.

onnxruntime.quantization does the rewriting (QDQ, per-channel symmetric int8 weights);
what this module adds is the choice of nodes: only ops ORT runs as integer kernels, none
that run slower in int8 on this CPU (onnx_hw), and none whose float output buys more
fidelity than it costs (the layers that feed the graph outputs). Every other op is left
untouched in float, so a third-party graph keeps its pre/post-processing intact.
"""

from __future__ import annotations

import collections
import logging
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import onnx

from edgeopt.compress.quantize import onnx_hw
from edgeopt.core.config import Config, enum_field, first_match
from edgeopt.core.errors import ConfigError, DataError, ExportError

# Ops whose weights ORT stores as int8 (the size win) and runs as QLinear/Integer kernels.
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Activation-only ops with an ORT int8 kernel or a QDQ rule that keeps tensors int8
# between integer kernels; onnx_hw drops those that do not pay on this CPU.
ACTIVATION_OPS = ("Add", "Mul", "Sigmoid", "Concat", "MaxPool", "GlobalAveragePool",
                  "AveragePool", "Resize", "Split", "Softmax", "Relu", "Clip", "LeakyRelu",
                  "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


class CalibMethod(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


class ActType(str, Enum):
    """Activation integer type. uint8 is what ORT's x86 QLinearConv kernels take."""

    UINT8 = "uint8"
    INT8 = "int8"


@dataclass(frozen=True, kw_only=True)
class OnnxQuantConfig(Config):
    """int8 QDQ quantization of an ONNX graph: calibration, which ops, and the searches."""

    calibration: CalibMethod = CalibMethod.MINMAX
    percentile: float = 99.999  # for calibration: percentile
    activations: ActType = ActType.UINT8
    per_channel: bool = True
    op_types: tuple[str, ...] = WEIGHT_OPS + ACTIVATION_OPS
    exclude: tuple[str, ...] = ()  # node-name globs kept float
    hardware_aware: bool = True  # time int8 vs float per op type, keep what pays
    accuracy_aware: bool = True  # keep output-feeding layers float when that buys SQNR
    head_levels: int = 2  # how many weight layers back from the outputs to try in float
    min_gain_db: float = 1.0  # SQNR gain that justifies keeping a head level float
    # Head levels are tried in float only while the output SQNR is below this: at 30 dB a
    # classifier's argmax already agrees ~99.9%, and the head often holds the most weights.
    target_db: float = 30.0
    eval_samples: int = 8  # calibration samples used for SQNR

    def __post_init__(self) -> None:
        enum_field(self, "calibration", CalibMethod, "calibration")
        enum_field(self, "activations", ActType, "activations")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile!r}")
        if self.head_levels < 0:
            raise ConfigError(f"head_levels must be >= 0, got {self.head_levels}")
        if self.eval_samples < 1:
            raise ConfigError(f"eval_samples must be >= 1, got {self.eval_samples}")
        unknown = [t for t in self.op_types if t not in WEIGHT_OPS + ACTIVATION_OPS]
        if unknown:
            raise ConfigError(f"op_types: {unknown[0]!r} has no int8 kernel in onnxruntime "
                              f"(valid: {', '.join(WEIGHT_OPS + ACTIVATION_OPS)})")


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


def _name_nodes(model: onnx.ModelProto) -> None:
    """ORT selects nodes by name; exporters leave some unnamed or named twice."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


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


class _Reader:
    """ORT's calibration protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


class _Builder:
    """Quantizes the same graph for different node sets, calibrating once (ORT's
    calibration cache) so that each trial costs a rewrite, not a calibration run."""

    def __init__(self, model: onnx.ModelProto, calib: list[dict], cfg: OnnxQuantConfig,
                 candidates: dict[str, str], work: Path) -> None:
        self.cfg, self.calib, self.candidates, self.work = cfg, calib, candidates, work
        self.fp_path = work / "fp32.onnx"
        onnx.save(model, self.fp_path)
        self.cache = work / "calibration.json"
        self.count = 0
        self.all_types = sorted(set(candidates.values()))

    def build(self, nodes: set[str]) -> onnx.ModelProto:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        if not nodes:
            return onnx.load(self.fp_path)
        cfg = self.cfg
        method = {CalibMethod.MINMAX: CalibrationMethod.MinMax,
                  CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
                  CalibMethod.ENTROPY: CalibrationMethod.Entropy}[cfg.calibration]
        act = QuantType.QUInt8 if cfg.activations is ActType.UINT8 else QuantType.QInt8
        self.count += 1
        out = self.work / f"int8_{self.count}.onnx"
        quantize_static(
            str(self.fp_path), str(out), _Reader(self.calib),
            quant_format=QuantFormat.QDQ,
            # All candidate types on every call: the calibration cache written by the
            # first call then holds every tensor a later, smaller node set needs.
            op_types_to_quantize=self.all_types,
            nodes_to_quantize=sorted(nodes),
            per_channel=cfg.per_channel,
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_cache_path=str(self.cache),
            extra_options={"WeightSymmetric": True,
                           "ActivationSymmetric": cfg.activations is ActType.INT8,
                           "CalibPercentile": cfg.percentile},
        )
        return onnx.load(out)

    def for_types(self, nodes: set[str], types: frozenset[str]) -> onnx.ModelProto:
        return self.build({n for n in nodes if self.candidates[n] in types})


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


def _check_calib(model: onnx.ModelProto, calib: list[dict]) -> None:
    inits = {i.name for i in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in inits]
    if not calib:
        raise DataError("int8 calibration needs at least one sample, got none")
    missing = [n for n in names if n not in calib[0]]
    if missing:
        raise DataError(f"calibration samples lack input {missing[0]!r} "
                        f"(the model's inputs are {', '.join(names)})")


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _per_channel_opset(model: onnx.ModelProto, log) -> tuple[onnx.ModelProto, str | None]:
    """Per-channel DequantizeLinear (its ``axis``) needs opset 13; Paddle and older torch
    exports are 11/12. Convert the graph up, or say why weights go per-tensor."""
    if _opset(model) >= 13:
        return model, None
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, 13)
        onnx.checker.check_model(converted)
        return converted, f"opset {_opset(model)} -> 13 for per-channel weight scales"
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
        log(f"  opset {_opset(model)} does not convert to 13 ({str(exc).splitlines()[0]})")
        return model, None


def quantize_graph(model: onnx.ModelProto, calib: list[dict[str, np.ndarray]],
                   cfg: OnnxQuantConfig, *, threads: int = 1,
                   log=print) -> tuple[onnx.ModelProto, dict]:
    """int8 QDQ version of ``model`` and a record of what was quantized and why not."""
    _check_calib(model, calib)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # callers keep theirs
    _name_nodes(model)
    decisions: list[str] = []
    if cfg.per_channel:
        model, note = _per_channel_opset(model, log)
        if note:
            decisions.append(note)
        elif _opset(model) < 13:
            cfg = cfg.replace(per_channel=False)
            decisions.append(f"opset {_opset(model)}: per-tensor weight scales")
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
    with tempfile.TemporaryDirectory(prefix="edgeopt-onnx-ptq-") as tmp:
        builder = _Builder(model, calib, cfg, candidates, Path(tmp))
        current = builder.build(nodes)
        score = fidelity(onnx_hw.session(current, threads), eval_feeds, refs)
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
                trial_score = fidelity(onnx_hw.session(trial, threads), eval_feeds, refs)
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

    short_names(current, model)
    quantized = collections.Counter(candidates[n] for n in nodes)
    record = {
        "technique": "int8 (onnx_ptq, QDQ via onnxruntime.quantization)",
        "calibration": cfg.calibration.value,
        "activations": cfg.activations.value,
        "weights": "int8 symmetric " + ("per-channel" if cfg.per_channel else "per-tensor"),
        "quantized": dict(quantized.most_common()),
        "float_kept": [{"node": n, "op": op_of[n], "reason": r}
                       for n, r in kept.items()],
        "float_ops": dict(collections.Counter(
            n.op_type for n in model.graph.node if n.op_type not in cfg.op_types).most_common()),
        "sqnr_db": round(score, 2),
        "latency_ms_batch1": {"fp32": round(fp_ms * 1e3, 3), "int8": round(q_ms * 1e3, 3)},
        "size_bytes": {"fp32": model.ByteSize(), "int8": current.ByteSize()},
        "size_ratio": round(current.ByteSize() / max(model.ByteSize(), 1), 4),
        "decisions": decisions,
    }
    log(f"  int8: {sum(quantized.values())} nodes quantized {dict(quantized)}, "
        f"SQNR {score:.1f} dB, {record['size_ratio']:.2f}x size, "
        f"{q_ms * 1e3:.2f} ms vs {fp_ms * 1e3:.2f} ms fp32 at batch 1")
    return current, record
