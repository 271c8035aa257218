"""``auto_compile``: build every candidate for the target, measure, write the pick.

Each candidate is compressed by its recipe (``pipeline.compress_with_recipe``),
compiled for the target, evaluated on a seeded test subset and timed at batch 1 and a
larger batch in interleaved rounds. Where this machine cannot run the target's
artifacts, accuracy comes from the aarch64 artifact under qemu-user (``edgeopt.emulate``)
when it can run it, else from a host build (``compile.host.proxy_target``), and latency
from that host build; fp16 (CUDA) from its module built for this CPU, untimed.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt import emulate
from edgeopt.auto.report import build_report, write_auto_report
from edgeopt.auto.rule import CANDIDATES, AutoOptions, Candidate, candidate_names, choose, not_built
from edgeopt.compile.api import compile as compile_model
from edgeopt.compile.api import prepare
from edgeopt.compile.artifact import ArtifactWriter, check_output_dir
from edgeopt.compile.backends.registry import DEFAULT_BACKEND
from edgeopt.compile.host import host_isa_target, proxy_target, runs_here
from edgeopt.compile.targets import Target, get_target
from edgeopt.core.data import Dataset, Preprocess, load_dataset
from edgeopt.core.errors import EdgeoptError
from edgeopt.evaluate import evaluate, measure_latency
from edgeopt.pipeline import OptimizeOptions, compress_with_recipe
from edgeopt.recipes import load_recipe
from edgeopt.runtime import load, read_manifest


@dataclass
class AutoResult:
    path: Path
    manifest: dict[str, Any]
    candidates: list[Candidate]
    report: Any  # edgeopt.evaluate.Report

    @property
    def picked(self) -> Candidate:
        return next(c for c in self.candidates if c.picked)


def _emulated_cpu(t: Target) -> str:
    mcpu = (t.tvm or {}).get("mcpu")
    return mcpu if mcpu in emulate.CPUS else emulate.DEFAULT_CPU


def auto_compile(model, data, *, target: str = "x86_64", backend: str = DEFAULT_BACKEND,
                 out, input_shape: list[int] | None = None, preprocess=None,
                 options: AutoOptions | None = None, force: bool = False,
                 model_name: str = "model", log: Callable[[str], None] = print) -> AutoResult:
    """Compile ``model`` (float) at each candidate precision and write the pick to ``out``."""
    opts = options or AutoOptions()
    check_output_dir(out, force)
    t = get_target(target)
    names = candidate_names(t, backend, opts.candidates)
    pre = preprocess or Preprocess()
    dataset = data if isinstance(data, Dataset) else load_dataset(str(data))
    test = dataset.test.subset(opts.eval_limit, seed=opts.eval_seed)
    shape = list(input_shape or dataset.sample_shape)
    with tempfile.TemporaryDirectory(prefix="edgeopt-auto-") as tmp:
        run = _Run(model, dataset, test, shape, pre, t, backend, opts, Path(tmp), log)
        cands = [run.build(n) for n in names]
        if cands[0].error:
            raise EdgeoptError(f"fp32 {backend} build for {t.name} failed: {cands[0].error}")
        run.measure(cands)
        pick = choose(cands, opts.tolerance)
        run.not_built = not_built(t, backend, names)
        log(f"auto: picked {pick.name}: {pick.why}")
        return run.write(cands, pick, Path(out), force, model_name, dataset.name)


class _Run:
    def __init__(self, model, dataset, test, shape, pre, t: Target, backend: str,
                 opts: AutoOptions, tmp: Path, log) -> None:
        self.model, self.dataset, self.test, self.shape, self.pre = model, dataset, test, shape, pre
        self.t, self.backend, self.opts, self.tmp, self.log = t, backend, opts, tmp, log
        self.native = runs_here(t)
        self.proxy = None if self.native else proxy_target(t)
        self.ship: dict[str, Path] = {}  # candidate -> artifact built for the target
        self.host: dict[str, Path] = {}  # candidate -> artifact this machine runs
        # candidate -> a numpy callable measured for accuracy only, in place of a host
        # artifact (fp16 without a GPU: its module built for this CPU)
        self.untimed: dict[str, Callable] = {}
        self.recipes: dict[str, dict | None] = {}
        self.not_built: dict[str, str] = {}

    def build(self, name: str) -> Candidate:
        cand = Candidate(name=name)
        recipe = CANDIDATES[name][1]
        lower = dict(backend=self.backend, input_shape=self.shape,
                     preprocess=self.pre.to_dict())
        try:
            model = self.model
            if recipe is not None:
                r = load_recipe(recipe)
                self.log(f"auto: compressing {name} ({r.name} recipe)")
                model = compress_with_recipe(model, r, self.dataset, OptimizeOptions(
                    recipe=r, backend=self.backend, preprocess=self.pre, progress=False),
                    log=self.log)
                self.recipes[name] = r.to_dict()
            self.log(f"auto: compiling {name} for {self.t.name} ({self.backend})")
            art = compile_model(model, self.t.name, out=self.tmp / f"{name}-{self.t.name}",
                                recipe=self.recipes.get(name),
                                precision="fp16" if name == "fp16" else None, **lower)
            self.ship[name] = art.path
            cand.precision = art.manifest["precision"]
            # The library and its weights (TVM keeps int8 weights in params.bin).
            cand.size_bytes = sum(f["size"] for f in art.manifest["files"].values())
            if name == "fp16" and self.proxy is not None:
                # TVM is an optional extra (edgeopt[tvm]) that takes a second to import:
                # only a TVM build (fp16 is one) imports it.
                from edgeopt.compile.backends.tvm.fp16_host import host_fp16_runner

                # The proxy is the fp16 module itself on this CPU, not an fp32 host build.
                self.untimed[name] = host_fp16_runner(*prepare(model, self.shape))
                return cand
            self.host[name] = art.path
            if self.proxy is not None:
                self.host[name] = compile_model(model, self.proxy,
                                                out=self.tmp / f"{name}-{self.proxy}",
                                                **lower).path
        except EdgeoptError as exc:
            cand.error = str(exc)
            self.log(f"auto: {name} not built: {exc}")
        return cand

    def measure(self, cands: list[Candidate]) -> None:
        live = [c for c in cands if not c.error]
        preds = {c.name: self.untimed.get(c.name) or load(self.host[c.name],
                                                           threads=self.opts.threads)
                 for c in live}
        where = "this machine" if self.native else f"{self.proxy} build on this machine (proxy)"
        timed = [c for c in live if c.name not in self.untimed]
        for c in live:
            if c.name in self.untimed:
                c.accuracy_on = (f"the fp16 module built for this {platform.machine()} CPU "
                                 f"(proxy; no GPU here)")
                c.latency_on = "fp16 speed needs the GPU (a CPU's says nothing about it)"
        ref = None
        for c in live:
            self.log(f"auto: evaluating {c.name} on {len(self.test)} test samples")
            logits = None if c.accuracy_on else self._emulated_logits(c)
            if logits is None:
                ev = evaluate(preds[c.name], self.test.x, self.test.y, preprocess=self.pre,
                              progress=False)
                logits, c.accuracy_on = ev.logits, c.accuracy_on or where
            c.accuracy = float((logits.argmax(1) == self.test.y).mean() * 100)
            ref = logits if ref is None else ref
            c.agreement = float((logits.argmax(1) == ref.argmax(1)).mean() * 100)
            c.latency_on = c.latency_on or where
        # Interleaved rounds: a burst of background load slows every candidate alike.
        per_round = max(1, self.opts.repeats // self.opts.rounds)
        rounds: dict[tuple[str, int], list] = {}
        for _ in range(self.opts.rounds):
            for c in timed:
                for b in sorted({1, self.opts.batch}):
                    lat = measure_latency(preds[c.name], tuple(self.shape), batch=b,
                                          warmup=3, repeats=per_round)
                    rounds.setdefault((c.name, b), []).append(lat)
        for (name, b), lats in rounds.items():
            mid = sorted(lats, key=lambda lat: lat.p50_ms)[len(lats) // 2]
            c = next(c for c in timed if c.name == name)
            c.latency_ms[b], c.p90_ms[b] = mid.p50_ms, mid.p90_ms

    def _emulated_logits(self, c: Candidate) -> np.ndarray | None:
        """The aarch64 artifact's own outputs under qemu-user, or None (noted on ``c``)."""
        if self.native or self.t.arch != "aarch64" or self.t.device != "cpu":
            if not self.native:
                c.accuracy_on = (f"{self.proxy} build on this machine (proxy; no "
                                 f"{'GPU' if self.t.device == 'cuda' else self.t.name} here)")
            return None
        if not self.opts.emulate:
            return None
        cpu = _emulated_cpu(self.t)
        try:
            run = emulate.run_artifact(self.ship[c.name], self.pre(self.test.x), cpu=cpu)
        except (emulate.EmulationUnavailable, emulate.EmulationError) as exc:
            self.log(f"auto: emulation unavailable, using the {self.proxy} build: {exc}")
            c.accuracy_on = f"{self.proxy} build on this machine (proxy; no emulation: {exc})"
            return None
        c.accuracy_on = f"{self.t.name} artifact under qemu-user emulation ({cpu})"
        return run.outputs

    def write(self, cands: list[Candidate], pick: Candidate, out: Path, force: bool,
              model_name: str, dataset_name: str):
        measured = measurement_note(self.t, cands)
        report = build_report(cands, pick, model_name=model_name, dataset=dataset_name,
                              n_eval=len(self.test), target=self.t.name, backend=self.backend,
                              tolerance=self.opts.tolerance, measured=measured,
                              not_built=self.not_built)
        with ArtifactWriter(out, force=force) as writer:
            src = self.ship[pick.name]
            for f in src.iterdir():
                if f.is_file() and f.name != "manifest.json":
                    shutil.copy2(f, writer.path(f.name))
            write_auto_report(report, writer.staging)
            manifest = read_manifest(src)
            generated = ("format_version", "edgeopt_version", "files", "created_at")
            fields = {k: v for k, v in manifest.items() if k not in generated}
            fields["auto"] = {"picked": pick.name, "tolerance": self.opts.tolerance,
                              "measured": measured, "not_built": self.not_built,
                              "candidates": [c.to_dict() for c in cands]}
            manifest = writer.write_manifest(fields)
            path = writer.commit()
        return AutoResult(path, manifest, cands, report)


def measurement_note(t: Target, cands: list[Candidate]) -> str:
    """One plain sentence: where accuracy and latency were measured."""
    acc = sorted({c.accuracy_on for c in cands if c.accuracy_on})
    lat = sorted({c.latency_on for c in cands if c.latency_ms})
    if runs_here(t):
        return f"measured on this machine ({host_isa_target()} host) with the {t.name} artifacts"
    return (f"{t.name} artifacts cannot run natively here ({platform.machine()}, "
            f"{host_isa_target()}): accuracy from {'; '.join(acc)}; latency from "
            f"{'; '.join(lat)}, not the target's own speed")
