"""How a stage compares with the reference (fidelity per output, top-1, argmax agreement,
box agreement for a detector), and ``edgeopt evaluate`` for any ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeopt.core.data import Preprocess
from edgeopt.core.errors import DataError
from edgeopt.core.onnx_graph import TensorInfo, describe
from edgeopt.evaluate.detection import box_agreement, decode_yolo
from edgeopt.evaluate.fidelity import compare, summarise
from edgeopt.evaluate.metrics import topk_accuracy
from edgeopt.evaluate.task import default_task
from edgeopt.graph_pipeline.feeds import load_data, model_feeds, static_batch
from edgeopt.graph_pipeline.runners import GraphRunner, collect, predictor_runner, session_runner
from edgeopt.runtime import load as load_artifact


def score(runner: GraphRunner, reference: dict[str, np.ndarray], y, task: str, outputs):
    """(fidelity, top-1, agreement, task metrics) of a stage against the reference."""
    per_output = compare(reference, runner.outputs)
    fidelity = {"headline": summarise(per_output), "outputs": per_output}
    top1 = agree = None
    task_metrics: dict = {}
    first = runner.outputs[runner.output_names[0]]
    if task == "classification" and first.ndim == 2:
        agree = per_output[runner.output_names[0]].get("argmax_agreement")
        if y is not None:
            top1 = topk_accuracy(first, y, 1)
    if task == "detection":
        ref = decode_yolo(reference[runner.output_names[0]])
        got = decode_yolo(first)
        boxes = box_agreement(ref, got, iou=0.5)
        task_metrics = {f"box_{k}": v for k, v in boxes.items()}
    return fidelity, top1, agree, task_metrics or None


def evaluate_graph(model, data, *, reference=None, task: str | None = None, preprocess=None,
                   limit: int | None = None, threads: int | None = None) -> dict:
    """``edgeopt evaluate`` for any ONNX model or graph artifact: task metrics from labels,
    and, given a ``reference`` (the fp32 file), fidelity per output without labels."""
    def runner(spec, name):
        if Path(spec).is_dir():
            pred = load_artifact(spec, threads=threads)
            names = [o["name"] for o in pred.manifest["outputs"]]
            return predictor_runner(name, pred, names), pred.manifest
        graph = onnx.load(str(spec), load_external_data=False)
        return session_runner(name, str(spec), [o.name for o in describe(graph)[1]],
                              threads=threads), None

    cand, manifest = runner(model, "model")
    if manifest is not None:
        inputs = [TensorInfo(i["name"], i["dtype"], list(i["shape"])) for i in manifest["inputs"]]
        outputs = [TensorInfo(o["name"], o.get("dtype", "float32"), list(o["shape"]))
                   for o in manifest["outputs"]]
        task = task or manifest.get("task")
        pre = manifest.get("preprocessing") or {}
        preprocess = preprocess or Preprocess(scale=pre.get("scale", 1.0), mean=pre.get("mean"),
                                              std=pre.get("std"))
    else:
        inputs, outputs = describe(onnx.load(str(model), load_external_data=False))
    preprocess = preprocess or Preprocess()
    if task is None:
        task = default_task(outputs)
    dataset = load_data(data, inputs)
    test = dataset.test.subset(limit, seed=0)
    fixed = static_batch(inputs)
    feeds = model_feeds(test, fixed or 64, fixed, preprocess, inputs)
    collect(cand, feeds, outputs)
    result: dict = {"n": len(test), "task": task}
    if reference is not None:
        ref, _ = runner(reference, "reference")
        collect(ref, feeds, outputs)
        fidelity, top1, agree, task_metrics = score(cand, ref.outputs, test.y, task, outputs)
        result.update(fidelity=fidelity["headline"], outputs=fidelity["outputs"],
                      agreement=agree, **(task_metrics or {}))
    first = cand.outputs[cand.output_names[0]]
    if test.y is not None and first.ndim == 2:
        result["top1"] = topk_accuracy(first, test.y, 1)
    if reference is None and test.y is None:
        raise DataError("nothing to score: the data has no labels (y) and no --reference model "
                        "was given to compare outputs with")
    return result
