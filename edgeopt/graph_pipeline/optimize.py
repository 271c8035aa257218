"""``optimize_graph``: the graph path's artifact (model, manifest, report), each stage
measured against the user's own file (see the package doc)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import onnx

from edgeopt.compile.artifact import ArtifactWriter
from edgeopt.compile.targets import get_target
from edgeopt.compress.quantize.onnx_ptq import quantize_graph
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.inputs import prepare
from edgeopt.core.onnx_graph import describe, load_graph
from edgeopt.evaluate.report import Report, StageResult, write_report
from edgeopt.evaluate.size import size_on_disk
from edgeopt.evaluate.task import default_task
from edgeopt.graph_pipeline.feeds import (
    load_data,
    model_feeds,
    static_batch,
    timing_feed,
    to_model_layout,
)
from edgeopt.graph_pipeline.recipe import graph_quant_step, onnx_config
from edgeopt.graph_pipeline.runners import (
    collect,
    predictor_runner,
    session_runner,
    time_interleaved,
)
from edgeopt.graph_pipeline.scoring import score
from edgeopt.runtime import load as load_artifact
from edgeopt.version import __version__

MODEL_FILE = "model.onnx"
TASKS = ("classification", "detection", "generic")


def optimize_graph(model, data, *, out, force: bool, opts, recipe, log: Callable = print,
                   task: str | None = None) -> Report:
    """optimize() for an ONNX file on the graph path (see the module doc)."""
    started = time.perf_counter()
    target = get_target(opts.target)
    backend = opts.backend or recipe.compile.backend
    if backend != "onnxruntime":
        raise ConfigError(f"the ONNX-graph path compiles for onnxruntime; backend {backend!r} "
                          f"needs the torch path (recipes with torch techniques take it)")
    target.check(backend, "int8" if recipe.steps else "fp32")
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r} (valid: {', '.join(TASKS)})")
    path = str(model)
    source = onnx.load(path, load_external_data=False)
    inputs, outputs = describe(source)
    dataset = load_data(data, inputs)
    constants = set(dataset.train.constants)
    # Scalars the data always gives the same (a sample rate) are bound, so control flow
    # on them folds to the branch that runs; the artifact records the binding.
    bound = {k: np.asarray(v) for k, v in dataset.train.constants.items()
             if np.asarray(v).ndim == 0}
    graph = load_graph(path, fixed=bound or None)
    if task is None:
        task = default_task(outputs)
    fixed_batch = static_batch(inputs)
    batch = fixed_batch or opts.batch
    test = dataset.test.subset(opts.eval_limit, seed=opts.eval_seed)
    y = test.y

    def feeds_of(split, size):
        return model_feeds(split, size, fixed_batch, opts.preprocess, inputs)

    eval_feeds = feeds_of(test, fixed_batch or 64)
    out_names = [o.name for o in outputs]
    log(f"graph path: {len(inputs)} inputs, {len(outputs)} outputs, task {task}"
        + (f", static batch {fixed_batch}" if fixed_batch else "")
        + (f", bound {', '.join(f'{k}={v.tolist()}' for k, v in bound.items())}" if bound else ""))
    reference = session_runner("fp32 source", path, out_names, threads=opts.threads,
                               size=os.path.getsize(path), notes="the user's ONNX file as given")
    ref_outputs = collect(reference, eval_feeds, outputs, progress=opts.progress)

    info = None
    timings: dict = {}
    with ArtifactWriter(out, force=force) as writer:
        fp32_bytes = graph.SerializeToString()
        model_bytes, precision, layer_precision = fp32_bytes, "fp32", {}
        if recipe.steps:
            q = graph_quant_step(recipe)
            calib_split = dataset.train.subset(q.calib_size, seed=q.calib_seed)
            takes = {i.name for i in graph.graph.input}  # bound inputs are gone from it
            calib = [{k: v for k, v in f.items() if k in takes} for f, _, _ in
                     feeds_of(calib_split, fixed_batch or min(q.calib_batch_size, 32))]
            log(f"compress: ONNX-graph int8 with {len(calib_split)} calibration samples")
            t0 = time.perf_counter()
            qmodel, info = _quantize(graph, calib, q, opts, log)
            timings["compress_s"] = round(time.perf_counter() - t0, 2)
            model_bytes, precision = qmodel.SerializeToString(), "int8"
            layer_precision = info.get("layer_precision") or {}
        writer.write_bytes(MODEL_FILE, model_bytes)
        writer.write_manifest({
            "target": target.name,
            "backend": "onnxruntime",
            "model_file": MODEL_FILE,
            "opset": next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")),
                          None),
            "inputs": [_io_dict(i) for i in inputs],
            "outputs": [_io_dict(o) for o in outputs],
            "bound_inputs": {k: v.tolist() for k, v in bound.items()},
            "static_batch": fixed_batch,
            "task": task,
            "precision": precision,
            "layer_precision": layer_precision,
            "preprocessing": {**opts.preprocess.to_dict(), "applies_to": "uint8 image inputs"},
            "recipe": recipe.to_dict(),
        })
        stages = [reference]
        fp32_art = session_runner("fp32 onnxruntime", fp32_bytes, out_names,
                                  threads=opts.threads, size=len(fp32_bytes),
                                  notes="the simplified fp32 graph (onnxslim)")
        stages.append(fp32_art)
        if recipe.steps:
            pred = load_artifact(writer.staging, threads=opts.threads)
            stages.append(predictor_runner(
                f"{precision} onnxruntime", pred, out_names, precision=precision,
                size=size_on_disk(writer.staging / MODEL_FILE), notes="the artifact"))
        for r in stages[1:]:
            collect(r, eval_feeds, outputs, progress=opts.progress)
        lat_feeds = {b: to_model_layout(prepare(timing_feed(test, b), opts.preprocess,
                                                inputs=inputs), inputs, constants) for b in sorted({fixed_batch or 1, batch})}
        latency = {b: time_interleaved(stages, f, batch=b, rounds=5,
                                       repeats=max(2, opts.latency_repeats // (5 if b == 1 else 20)),
                                       threads=opts.threads or 1)
                   for b, f in lat_feeds.items()}
        results = []
        for r in stages:
            fidelity, top1, agree, task_metrics = score(r, ref_outputs, y, task, outputs)
            results.append(StageResult(
                name=r.name, backend=r.backend, precision=r.precision, accuracy_top1=top1,
                agreement=agree, size_bytes=r.size, notes=r.notes, fidelity=fidelity,
                task_metrics=task_metrics,
                latency={b: lat[r.name] for b, lat in latency.items()}))
        timings["total_s"] = round(time.perf_counter() - started, 2)
        report = Report(
            model=path, dataset=dataset.name, n_eval=len(test), stages=results,
            meta={
                "recipe": recipe.name, "target": target.name, "backend": "onnxruntime",
                "path": "onnx-graph", "task": task, "static_batch": fixed_batch,
                "threads": opts.threads, "edgeopt_version": __version__,
                "timings_s": timings, "bound_inputs": {k: v.tolist() for k, v in bound.items()},
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "preprocessing": opts.preprocess.to_dict(),
                "compression": info and {k: v for k, v in info.items()
                                         if k != "layer_precision"},
            },
        )
        write_report(report, writer.staging)
        writer.refresh_manifest()
        writer.commit()
    return report


def _io_dict(info) -> dict:
    return {"name": info.name, "dtype": info.dtype, "shape": list(info.shape)}


def _quantize(graph, calib, q, opts, log):
    cfg = onnx_config(q)
    if not calib:
        raise DataError("no calibration samples: the data's train split is empty")
    return quantize_graph(graph, calib, cfg, threads=opts.threads or 1, log=log)
