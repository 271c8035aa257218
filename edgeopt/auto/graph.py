"""``compile --precision auto`` for an ONNX file on the graph path.

Builds the int8 artifact with ``optimize_graph`` (which also builds and times the
fp32 graph, interleaved with it on the same feeds), and keeps int8 only when it is
faster than fp32 at every batch measured *and* close enough to it: within
``tolerance`` top-1 points when the data has labels, within ``tolerance`` points of
argmax agreement for a classifier without labels, else at least ``min_sqnr_db`` on
every output. Otherwise the fp32 graph is the artifact: auto never ships an int8
artifact slower or worse than fp32.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeopt.compile.artifact import check_output_dir, replace_dir
from edgeopt.graph_pipeline import optimize_graph
from edgeopt.recipes import load_recipe


@dataclass
class GraphAutoResult:
    path: Path
    precision: str
    why: str
    report: object  # the int8 candidate's Report (fp32 and int8 stages side by side)


def _decide(report, tolerance: float, min_sqnr_db: float) -> tuple[bool, str]:
    by = {s.name: s for s in report.stages}
    fp32, int8 = by["fp32 onnxruntime"], by["int8 onnxruntime"]
    slower = [b for b in sorted(fp32.latency) if b in int8.latency
              and int8.latency[b].p50_ms >= fp32.latency[b].p50_ms]
    speed = ", ".join(f"b{b} {int8.latency[b].p50_ms:.3f} vs {fp32.latency[b].p50_ms:.3f} ms"
                      for b in sorted(fp32.latency) if b in int8.latency)
    if slower:
        return False, f"int8 is not faster than fp32 ({speed})"
    if int8.accuracy_top1 is not None and fp32.accuracy_top1 is not None:
        drop = fp32.accuracy_top1 - int8.accuracy_top1
        ok, what = drop <= tolerance, f"top-1 {drop:+.2f} points below fp32 (tolerance {tolerance})"
    elif int8.agreement is not None:
        ok = int8.agreement >= 100 - tolerance
        what = f"argmax agreement {int8.agreement:.2f}% (needs >= {100 - tolerance:g})"
    else:
        sqnr = (int8.fidelity or {}).get("headline", {}).get("sqnr_db_min")
        ok = sqnr is not None and sqnr >= min_sqnr_db
        what = f"worst output SQNR {sqnr:.1f} dB (needs >= {min_sqnr_db:g})"
    return ok, f"{what}; {speed}"


def auto_compile_graph(model, data, *, out, force: bool, opts, tolerance: float = 0.5,
                       min_sqnr_db: float = 25.0, log: Callable = print) -> GraphAutoResult:
    out = Path(out)
    check_output_dir(out, force)
    # The candidate is built beside --out, so that keeping it is a rename, not a copy.
    tmp = out.parent / f".{out.name}.auto-int8"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        report = optimize_graph(model, data, out=tmp, force=True, opts=opts,
                                recipe=load_recipe("int8"), log=log, task=opts.task)
        keep, why = _decide(report, tolerance, min_sqnr_db)
        if keep:
            replace_dir(tmp, out)
            return GraphAutoResult(out, "int8", f"int8 picked: {why}", report)
        log(f"auto: fp32 picked: {why}")
        optimize_graph(model, data, out=out, force=force, opts=opts,
                       recipe=load_recipe("fp32"), log=log, task=opts.task)
        return GraphAutoResult(out, "fp32", f"fp32 picked: {why}", report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
