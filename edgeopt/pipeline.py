"""``optimize``: recipe -> compress -> compile -> evaluate every stage, one report.

Every stage (the user's fp32 PyTorch model, the simulated-compressed model,
the compiled fp32 artifact, the compiled compressed artifact) is evaluated on
the same samples with the same preprocessing, and timed the same way, so the
report's columns can be compared directly.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from edgeopt.compile.api import model_precision, stage
from edgeopt.compile.artifact import ArtifactWriter, check_output_dir
from edgeopt.compile.targets import get_target
from edgeopt.core.canonical import canonical_copy, check_finite, check_input_fits, check_labels_fit
from edgeopt.core.data import Dataset, Preprocess, load_dataset
from edgeopt.core.errors import ConfigError, DataError
from edgeopt.core.hf import is_hf_spec
from edgeopt.core.model import ModelHandle, load_model
from edgeopt.core.registry import step_name
from edgeopt.core.train.options import TrainOptions
from edgeopt.evaluate import (
    Report,
    StageResult,
    evaluate,
    measure_latency,
    size_on_disk,
    write_report,
)
from edgeopt.evaluate.chunked import batch_sizes, chunked
from edgeopt.evaluate.plots import draw
from edgeopt.graph_pipeline import optimize_graph, wants_graph_path
from edgeopt.graph_pipeline.text import optimize_text
from edgeopt.recipes import Recipe, load_recipe
from edgeopt.recipes.overrides import with_overrides
from edgeopt.recipes.run import run_recipe
from edgeopt.runtime import load as load_artifact
from edgeopt.runtime.cpu import cpu_name
from edgeopt.version import __version__


@dataclass(kw_only=True)
class OptimizeOptions:
    recipe: str | Recipe = "int8"
    target: str = "x86_64"
    preprocess: Preprocess = field(default_factory=Preprocess)
    eval_limit: int | None = None  # None: the whole test split
    eval_seed: int = 0
    batch: int = 32  # the second latency batch size (batch 1 is always measured)
    latency_repeats: int = 50
    threads: int | None = None
    progress: bool = True
    # Run-level step options by name, e.g. {"budget": 0.2, "calib_size": 256}: each is
    # given to every step of the recipe that takes it (StepConfig.overridable).
    overrides: dict[str, Any] = field(default_factory=dict)
    data_seed: int = 0  # draws every step's training or calibration subset
    backend: str | None = None  # overrides the recipe's compile backend (a registry name)
    task: str | None = None  # classification | detection | generic (default: from outputs)
    max_length: int = 128  # hf: text models: tokens per text (longer ones are truncated)
    # ONNX files: "auto" quantizes the graph itself when the recipe allows it (int8 PTQ)
    # and converts to torch (onnx2torch) for the other techniques; "graph"/"torch" force one.
    onnx_path: str = "auto"


def _torch_file_size(module: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def check_fits(handle: ModelHandle, dataset: Dataset) -> None:
    want = handle.input_shape
    got = list(dataset.sample_shape)
    if want is not None and list(want) != got:
        raise DataError(
            f"data {dataset.name} has samples of shape {tuple(got)} but model {handle.source} "
            f"expects {tuple(want)}"
        )


class _ChannelsLast(torch.nn.Module):
    """Runs a copy of a model in channels-last memory format: same numbers, and
    oneDNN's NHWC convolutions are ~1.5x faster on CPU, which matters when a
    stage is evaluated on a whole test set. The user's module is not touched."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def _fast(module):
    if isinstance(module, torch.jit.ScriptModule):
        return module  # cannot be deep-copied; runs as it is
    return _ChannelsLast(module)


class _Stages:
    """Evaluates and times runnables, collecting StageResults."""

    def __init__(self, x_raw, y, opts: OptimizeOptions, sample_shape, log: Callable,
                 batches: tuple[int, int | None] | None = None) -> None:
        self.x_raw, self.y, self.opts, self.sample_shape, self.log = x_raw, y, opts, sample_shape, log
        self.batches = batches  # (min, max) batch of a program exported for some only
        self.results: list[StageResult] = []
        self.timings: dict[str, float] = {}  # seconds spent evaluating and timing each stage
        self.reference = None

    def run(self, name: str, runnable, *, backend: str, precision: str, size: int, notes=""):
        self.log(f"evaluating {name} on {len(self.y)} samples")
        t0 = time.perf_counter()
        runnable = chunked(runnable, self.batches, largest=max(256, self.opts.batch))
        ev = evaluate(runnable, self.x_raw, self.y, preprocess=self.opts.preprocess,
                      reference_logits=self.reference, progress=self.opts.progress, desc=name)
        if self.reference is None:
            self.reference = ev.logits
        latency = {
            b: measure_latency(runnable, self.sample_shape, batch=b,
                               repeats=self.opts.latency_repeats if b == 1 else
                               max(10, self.opts.latency_repeats // 2),
                               threads=self.opts.threads)
            for b in batch_sizes([1, self.opts.batch], self.batches)
        }
        self.timings[name] = round(time.perf_counter() - t0, 2)
        result = StageResult(
            name=name, backend=backend, precision=precision, accuracy_top1=ev.top1,
            accuracy_top5=ev.top5, agreement=ev.agreement, size_bytes=size, latency=latency,
            notes=notes,
        )
        self.results.append(result)
        return result


def _optimizes(step: Any) -> bool:
    """Whether a step runs gradient descent: training (qat, distill), a fine-tune after
    the technique, or AdaRound's rounding optimisation."""
    return (isinstance(step, TrainOptions) or getattr(step, "finetune", None) is not None
            or getattr(step, "adaround", None) is not None)


def determinism(recipe: Recipe) -> dict[str, Any]:
    """What a rerun must match to write the same model bytes (the report's record of it).

    PTQ reduces calibration statistics (min/max, histograms) whose result does not depend
    on how torch split the forward passes over threads. A training step does not have
    that property: torch sums each gradient in an order set by its thread count, so the
    weights (and LSQ scales) drift in their last bits, and a rounding edge then moves a
    quantized weight. Measured on the tiny CNN of tests/test_determinism.py: qat-int8 at
    lr 1e-2 for 20 steps writes different bytes at 1 and at 2 threads, the same bytes
    at the same count."""
    trained = [step_name(s) for s in recipe.steps if _optimizes(s)]
    out: dict[str, Any] = {"compress_threads": torch.get_num_threads(),
                           "training_steps": trained}
    if trained:
        out["note"] = (f"byte-identical with the same seed and the same compress_threads: "
                       f"the gradient descent in {', '.join(trained)} sums in an order that "
                       f"depends on torch's thread count")
    else:
        out["note"] = ("byte-identical with the same seed at any thread count: no step "
                       "trains, and calibration statistics do not depend on threads")
    return out


def optimize(model, data, *, out: str | os.PathLike, force: bool = False,
             weights: str | None = None, options: OptimizeOptions | None = None,
             log: Callable[[str], None] = print) -> Report:
    """Run a recipe end to end and write the artifact folder ``out`` (with its reports)."""
    opts = options or OptimizeOptions()
    # Every check a user mistake can fail runs before any work.
    check_output_dir(out, force)
    recipe = opts.recipe if isinstance(opts.recipe, Recipe) else load_recipe(opts.recipe)
    recipe = with_overrides(recipe, opts.overrides)
    get_target(opts.target)

    if opts.onnx_path not in ("auto", "graph", "torch"):
        raise ConfigError(f"onnx_path must be auto, graph or torch, got {opts.onnx_path!r}")
    if opts.onnx_path == "graph" and not wants_graph_path(model, recipe, weights):
        raise ConfigError(f"--onnx-path graph takes an .onnx model and an 8-bit PTQ recipe; "
                          f"recipe {recipe.name} needs the torch path for its "
                          f"{', '.join(step_name(s) for s in recipe.steps)} step(s)")
    if is_hf_spec(model):
        return optimize_text(model, data, out=out, force=force, opts=opts, recipe=recipe,
                             log=log, task=opts.task)
    if opts.onnx_path != "torch" and wants_graph_path(model, recipe, weights):
        return optimize_graph(model, data, out=out, force=force, opts=opts, recipe=recipe,
                              log=log, task=opts.task)
    handle = load_model(model, weights=weights)
    check_finite(handle.module)
    dataset = data if isinstance(data, Dataset) else load_dataset(str(data))
    check_fits(handle, dataset)
    test = dataset.test.subset(opts.eval_limit, seed=opts.eval_seed)
    first = check_input_fits(handle.module, torch.from_numpy(opts.preprocess(test.x[:1])))
    check_labels_fit(first, dataset, dataset.name if isinstance(data, Dataset) else data, opts.task)

    timings: dict[str, float] = {}
    started = time.perf_counter()
    batches = handle.batch_range(torch.from_numpy(opts.preprocess(test.x[:1])))
    if batches is not None and batches[0] == batches[1]:
        log(f"{handle.source} takes a static batch of {batches[0]} only: every stage "
            f"runs and is timed in batches of {batches[0]}")
    stages = _Stages(test.x, test.y, opts, tuple(dataset.sample_shape), log, batches)
    stages.run("fp32 pytorch", _fast(handle.module), backend="torch", precision="fp32",
               size=_size_of_source(handle))

    def intermediate(key: str, model) -> None:
        stages.run(f"after {key}", _fast(model), backend="torch", precision=_precision(model),
                   size=_torch_file_size(model), notes=f"PyTorch model after the {key} step")

    t0 = time.perf_counter()
    run = run_recipe(handle.module, recipe, dataset, opts.preprocess, backend=opts.backend,
                     seed=opts.data_seed, progress=opts.progress, log=log, after_step=intermediate)
    compressed, records = run.model, run.records
    timings["compress_s"] = time.perf_counter() - t0
    precision = _precision(compressed) if recipe.steps else "fp32"
    # A quantized result is named by its precision ("int8 simulated", "int8 onnxruntime");
    # a float one (pruned, factorised, ...) by its last step and the recipe, so that its
    # artifact is not confused with the unchanged model's "fp32 onnxruntime".
    quantized = precision != "fp32"
    if recipe.steps:
        last = records[-1].step
        stages.run(f"{precision} simulated" if quantized else f"after {last}", _fast(compressed),
                   backend="torch", precision=precision, size=_torch_file_size(compressed),
                   notes="fake-quantized PyTorch model" if quantized
                   else f"PyTorch model after the {last} step")

    backend = opts.backend or recipe.compile.backend
    t0 = time.perf_counter()
    example = torch.from_numpy(opts.preprocess(test.x[:2]))
    # stage() copies and BN-folds each model itself; the canonical copy records its input shape.
    float_model = canonical_copy(handle.module, example)
    lower = dict(target=opts.target, backend=backend, input_shape=float_model.meta["input_shape"],
                 preprocess=opts.preprocess.to_dict())
    with tempfile.TemporaryDirectory(prefix="edgeopt-") as tmp, \
            ArtifactWriter(out, force=force) as writer:
        # The fp32 artifact is a stage to compare against, not part of the output.
        with ArtifactWriter(Path(tmp) / "fp32") as fp32_writer:
            stage(float_model, fp32_writer, **lower)
            fp32_dir = fp32_writer.commit()
        manifest = stage(compressed if recipe.steps else float_model, writer,
                         recipe=recipe.to_dict(), **lower)
        timings["compile_s"] = time.perf_counter() - t0
        for record in records:  # sizes a step reports are measured on the real file
            record.on_artifact(writer.staging / manifest["model_file"])
        _run_artifact(stages, f"fp32 {backend}", fp32_dir, opts)
        if recipe.steps:
            _run_artifact(stages, f"{precision if quantized else recipe.name} {backend}",
                          writer.staging, opts)
        timings["total_s"] = time.perf_counter() - started
        timings["stages_s"] = stages.timings
        report = Report(
            model=handle.source, dataset=dataset.name, n_eval=len(test.y), stages=stages.results,
            meta={
                "recipe": recipe.name, "target": opts.target, "backend": backend,
                "threads": opts.threads or torch.get_num_threads(), "cpu": cpu_name(),
                "determinism": determinism(recipe),
                "edgeopt_version": __version__, "timings_s": timings,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "preprocessing": opts.preprocess.to_dict(),
                # What every step did, in order (StepRecord.to_dict).
                "compression": {"steps": [r.to_dict() for r in records]} if records else None,
                **_batch_meta(batches),
            },
        )
        write_report(report, writer.staging)
        for record in records:
            for figure in record.figures():
                draw(figure, writer.staging)
        # Rewrite the manifest so that it checksums the reports too.
        writer.refresh_manifest()
        writer.commit()
    return report


def compress_with_recipe(model, recipe: Recipe, dataset: Dataset, opts: OptimizeOptions,
                         log: Callable[[str], None] = print,
                         after_step: Callable[[str, object], None] | None = None):
    """The recipe's compressed model (``recipes.run.run_recipe`` with ``opts``); each
    step's record is in ``model.meta["edgeopt"][step name]``."""
    return run_recipe(model, recipe, dataset, opts.preprocess, backend=opts.backend,
                      seed=opts.data_seed, progress=opts.progress, log=log,
                      after_step=after_step).model


def _batch_meta(batches: tuple[int, int | None] | None) -> dict:
    """The report's word on a program that runs at some batch sizes only."""
    if batches is None or (batches[0] <= 1 and batches[1] is None):
        return {}
    if batches[0] == batches[1]:
        return {"static_batch": batches[0]}
    return {"batch_range": list(batches)}


def _precision(model) -> str:
    """The precision label of a compressed model; a plain module (pruned, factorised,
    distilled) computes in fp32."""
    return model_precision(model)[0] if isinstance(model, torch.fx.GraphModule) else "fp32"


def _run_artifact(stages: _Stages, name: str, path: Path, opts: OptimizeOptions) -> None:
    pred = load_artifact(path, threads=opts.threads)
    stages.run(name, pred, backend=pred.backend, precision=pred.manifest["precision"],
               size=size_on_disk(Path(path) / pred.manifest["model_file"]))


def _size_of_source(handle: ModelHandle) -> int:
    if handle.kind in ("onnx", "pt2", "torchscript"):
        return os.path.getsize(handle.source)
    weights = handle.info.get("weights")
    if weights:
        return os.path.getsize(weights)
    return _torch_file_size(handle.module)

