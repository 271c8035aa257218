"""``optimize`` for a Hugging Face folder (``hf:PATH``): export it to ONNX with its pooling
(core.hf), int8 by measurement (compress.quantize.text_int8), write a text artifact with
its tokenizer (compile.text), then compare the artifact with the fp32 graph on the
evaluation texts: cosine (mean/min) and nearest-neighbour agreement for embeddings, top-1
and argmax agreement for classifiers, and latency at batch 1 and --batch."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgeopt.compile.artifact import check_output_dir
from edgeopt.compile.text import write_text_artifact
from edgeopt.compress.distill.text_distill import TextDistillConfig
from edgeopt.compress.quantize.text_int8 import TextInt8Config, quantize_text
from edgeopt.compress.quantize.text_w4 import TextW4Config
from edgeopt.core.data.text import load_text_dataset
from edgeopt.core.data.text_files import read_text_file
from edgeopt.core.data.text_spans import word_spans
from edgeopt.core.errors import ConfigError
from edgeopt.core.hf import read_folder
from edgeopt.core.hf.export import export_hf, load_torch
from edgeopt.core.registry import handler_for, step_name
from edgeopt.core.step import StepContext
from edgeopt.evaluate.report import Report, StageResult, write_report
from edgeopt.graph_pipeline.recipe import graph_quant_step
from edgeopt.graph_pipeline.runners import predictor_runner, session_runner, time_interleaved
from edgeopt.runtime import load as load_artifact
from edgeopt.runtime.text import TextTokenizer
from edgeopt.version import __version__

TEXT_TASKS = ("embedding", "classification")
GRAPH_STEPS = (TextW4Config, TextInt8Config)  # steps whose handler takes an ONNX graph
TORCH_STEPS = (TextDistillConfig,)  # steps on the transformers model, before export


def nn_agreement(ref: np.ndarray, emb: np.ndarray) -> float:
    """Share of texts whose nearest other text (cosine) is the same under both."""
    def nearest(e):
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(1)
    return float((nearest(ref) == nearest(emb)).mean())


def cosine(ref: np.ndarray, emb: np.ndarray) -> np.ndarray:
    return (ref * emb).sum(1) / np.maximum(
        np.linalg.norm(ref, axis=1) * np.linalg.norm(emb, axis=1), 1e-12)


def split_text_recipe(recipe):
    """(student steps, the int8 QuantConfig or None, a graph step or None) of an hf: recipe:
    steps on the transformers model first, then at most one on the exported graph."""
    steps = list(recipe.steps)
    students = []
    while steps and isinstance(steps[0], TORCH_STEPS):
        students.append(steps.pop(0))
    rest = SimpleNamespace(steps=steps)
    q = graph_quant_step(rest) if steps else None
    graph_step = steps[0] if len(steps) == 1 and q is None and isinstance(
        steps[0], GRAPH_STEPS) else None
    if steps and q is None and graph_step is None:
        raise ConfigError("hf: models take the int8, int8-text-fidelity, int8-text-fast, "
                          "w4-text, student-text, student-int8-text or heads-text recipe (or "
                          f"none) for now; recipe {recipe.name} is not one")
    return students, q, graph_step


def optimize_text(model: str, data, *, out, force: bool, opts, recipe,
                  log: Callable = print, task: str | None = None) -> Report:
    started = time.perf_counter()
    check_output_dir(out, force)
    task = task or "embedding"
    if task not in TEXT_TASKS:
        raise ConfigError(f"--task {task} does not apply to a Hugging Face model "
                          f"(valid: {', '.join(TEXT_TASKS)})")
    students, q, graph_step = split_text_recipe(recipe)
    folder = read_folder(model, task=task)
    dataset = load_text_dataset(str(data), seed=opts.data_seed)
    if task == "classification" and dataset.test.y is None:
        raise ConfigError(f"--task classification needs labelled texts; {dataset.name} has none")
    max_length = opts.max_length
    log(f"hf: {folder.model_type} from {folder.path}, task {task}"
        + (f", {folder.pooling} pooling{', normalised' if folder.normalize else ''}"
           if task == "embedding" else "") + f", max length {max_length}")
    # Loaded once: the export's and, when the recipe has model steps, their first input.
    torch_model = load_torch(folder, task)
    graph, info = export_hf(folder, task=task, model=torch_model)
    tok = TextTokenizer(folder.tokenizer, max_length=max_length, inputs=info["inputs"])
    test = dataset.test.subset(opts.eval_limit, seed=opts.eval_seed)
    # Said once for all the texts used, training and evaluation (each batch's tokenizer
    # call would otherwise warn for its own first cut, once per tokenizer).
    trains = bool(recipe.steps)
    used = list(test.texts) + (list(dataset.train.texts) if trains else [])
    cut = tok.count_cut(used)
    tok.warned = True
    if cut:
        warnings.warn(f"{cut} of {len(used)} {dataset.name} texts ("
                      + ("training and evaluation" if trains else "evaluation")
                      + f") are longer than the maximum length ({max_length} tokens): "
                      "truncated", stacklevel=2)
    feeds = [tok(test.texts[i:i + 32]) for i in range(0, len(test), 32)]
    record, records = None, {}
    model_graph, precision, student_graph = graph, "fp32", None
    label = " ".join(dict.fromkeys(cfg.label for cfg in students))  # student, pruned
    # Padded to each batch's longest text: most fortunes are far shorter than 64 tokens.
    pad = students and TextTokenizer(folder.tokenizer, max_length=max_length,
                                     inputs=info["inputs"], padding="longest")
    if pad:
        pad.warned = True  # the cut is said above, once
    for cfg in students:  # steps on the transformers model, before export, each on the last
        train = dataset.train.subset(min(len(dataset.train), cfg.texts_needed()), seed=cfg.seed)
        # Batched by token length, so each batch pads to little more than its own texts
        # (fortunes: 32 tokens a text on average, where random batches pad to ~60); the
        # handler shuffles the batches each epoch.
        spans = word_spans(list(train.texts), cfg.spans, seed=cfg.seed)
        extra = [r.text for r in read_text_file(Path(cfg.texts).expanduser())] if cfg.texts else []
        if extra and (cut := tok.count_cut(extra)):  # the warning above counts the dataset's
            warnings.warn(f"{cut} of {len(extra)} texts of {cfg.texts} are longer than the "
                          f"maximum length ({max_length} tokens): truncated", stacklevel=2)
        texts = list(train.texts) + spans + extra
        lengths = [len(e.ids) for e in pad.tokenizer.encode_batch(texts)]
        texts = [t for _, t in sorted(zip(lengths, texts), key=lambda lt: lt[0])]
        batches = [pad(texts[i:i + 32]) for i in range(0, len(texts), 32)]
        cfg = cfg.replace(pooling=folder.pooling or "mean", normalize=folder.normalize)
        log(f"compress: {step_name(cfg)} on {len(train)} training texts"
            + (f" and {len(spans)} word spans of them" if spans else "")
            + (f" and {len(extra)} texts of {cfg.texts}" if extra else "")
            + f", {cfg.steps} steps")
        result = handler_for(cfg)(torch_model, cfg,
                                  StepContext(calibration=batches, log=log, seed=cfg.seed))
        records[step_name(cfg)] = result.record.details
        torch_model = result.model
    if students:
        student_graph, _ = export_hf(folder, task=task, model=torch_model)
        model_graph = student_graph
    calib = None
    if q is not None or isinstance(graph_step, TextInt8Config):
        size, seed = (q.calib_size, q.calib_seed) if q is not None else (256, 0)
        calib_texts = dataset.train.subset(min(size, 256), seed=seed).texts
        calib = [tok(calib_texts[i:i + 32]) for i in range(0, len(calib_texts), 32)]
        log(f"compress: text int8 with {len(calib_texts)} calibration texts")
    if q is not None:
        model_graph, record = quantize_text(model_graph, calib, TextInt8Config(),
                                            threads=opts.threads or 1, log=log)
        precision = "int8"
    elif graph_step is not None:  # a step whose handler takes the exported ONNX graph
        # Its handler is called directly: registry.run records into ``model.meta``, which
        # an onnx.ModelProto cannot carry; the record goes into the manifest instead.
        result = handler_for(graph_step)(model_graph, graph_step,
                                         StepContext(calibration=calib, log=log))
        model_graph, record = result.model, result.record.details
        precision = "int8" if isinstance(graph_step, TextInt8Config) else "w4"
    if records:
        record = {**records, **({"quantize": record} if record else {})}
    with tempfile.TemporaryDirectory(prefix="edgeopt-text-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        fp32_path.write_bytes(graph.SerializeToString())
        path = write_text_artifact(out, model_graph, folder, info, max_length=max_length,
                                   precision=precision, target=opts.target, force=force,
                                   extra={"recipe": recipe.to_dict(), "compression": record})
        output = info["output"]
        runners = [session_runner("fp32 onnxruntime", str(fp32_path), [output],
                                  threads=opts.threads, size=len(graph.SerializeToString()),
                                  notes="the exported fp32 graph")]
        if student_graph is not None and model_graph is not student_graph:
            s_path = Path(tmp) / "student.onnx"
            s_path.write_bytes(student_graph.SerializeToString())
            runners.append(session_runner(f"{label} fp32 onnxruntime", str(s_path), [output],
                                          threads=opts.threads, size=s_path.stat().st_size,
                                          notes=f"the {label} model, before quantization"))
        if recipe.steps:
            pred = load_artifact(path, threads=opts.threads)
            name = f"{label + ' ' if students else ''}{precision} onnxruntime"
            runners.append(predictor_runner(name, pred, [output],
                                            precision=precision,
                                            size=(path / "model.onnx").stat().st_size,
                                            notes="the artifact"))
        outs = [np.concatenate([r.run(f)[0] for f in feeds]) for r in runners]
        latency = {b: time_interleaved(runners, tok(test.texts[:b]), batch=b, rounds=5,
                                       repeats=max(2, opts.latency_repeats // (5 if b == 1 else 25)),
                                       threads=opts.threads or 1)
                   for b in sorted({1, opts.batch})}
    results = []
    for r, o in zip(runners, outs):
        cos = cosine(outs[0], o)
        fidelity = {"headline": {"cosine_min": float(cos.min())}, "cosine_mean": float(cos.mean())}
        top1 = agree = None
        if task == "embedding":
            agree = 100 * nn_agreement(outs[0], o)
            fidelity["nn_agreement"] = agree / 100
        else:
            top1 = 100 * float((o.argmax(1) == test.y).mean())
            agree = 100 * float((o.argmax(1) == outs[0].argmax(1)).mean())
        results.append(StageResult(name=r.name, backend=r.backend, precision=r.precision,
                                   accuracy_top1=top1, agreement=agree, size_bytes=r.size,
                                   notes=r.notes, fidelity=fidelity,
                                   latency={b: lat[r.name] for b, lat in latency.items()}))
        log(f"  {r.name}: cos mean {cos.mean():.4f} min {cos.min():.4f}"
            + (f", nearest-neighbour agreement {agree:.1f}%" if task == "embedding"
               else f", top-1 {top1:.2f}%, agreement {agree:.1f}%"))
    report = Report(model=str(model), dataset=dataset.name, n_eval=len(test), stages=results,
                    meta={"recipe": recipe.name, "target": opts.target, "path": "hf-text",
                          "task": task, "max_length": max_length, "threads": opts.threads,
                          "edgeopt_version": __version__, "compression": record,
                          "timings_s": {"total_s": round(time.perf_counter() - started, 2)},
                          "created_at": datetime.now(UTC).isoformat(timespec="seconds")})
    write_report(report, path)
    return report
