"""``--precision auto``: build every precision a target supports, measure, keep the best.

Candidates (fp32, int8 from the ``int8`` recipe, w4a8 from ``w4a8`` where the target's
backend builds packed low-bit weights, ``mixed`` on request) are compressed, compiled for
the target, evaluated on the test split and timed at batch 1 and a larger batch. The pick
is the fastest candidate at batch 1 whose top-1 is within ``tolerance`` points of fp32 and
which is no slower than fp32 at any measured batch: a quantized artifact slower than fp32
(a common outcome of int8 on CPUs) is never shipped, and fp32 wins ties.

Where this machine cannot run the target's artifacts (aarch64 boards, GPUs, an x86 ISA
the host lacks) the closest measurement is taken and labelled as such: accuracy of the
aarch64 artifact itself under qemu-user when ``edgeopt.compile.emulate`` can run it
(otherwise of a host build of the same candidate), latency of a host build as a proxy.
fp16 (CUDA targets) is the exception: its accuracy comes from the same fp16 module built
for this CPU, but a CPU's fp16 speed says nothing about a GPU's, so it is not timed and
never picked; it is shipped only when asked for (``--precision fp16``).

This sits above compile in DESIGN.md's layers (it compresses and evaluates too), so the
pipeline, recipes and evaluate imports are deferred to the call.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.compile.artifact import check_output_dir
from edgeopt.compile.targets import Target, get_target
from edgeopt.core.errors import ConfigError, EdgeoptError
from edgeopt.runtime.cpu import cpu_flags

# candidate -> (precision family the target must support, recipe that makes it)
CANDIDATES: dict[str, tuple[str, str | None]] = {
    "fp32": ("fp32", None),
    "int8": ("int8", "int8"),
    "w4a8": ("lowbit", "w4a8"),
    "mixed": ("lowbit", "mixed"),  # a sensitivity search: minutes, so only when asked for
    "fp16": ("fp16", None),  # TVM converts the float model (CUDA targets)
}
# TVM keeps sub-8-bit weights in int8 containers: no smaller and no faster than int8.
_DEFAULT = {"onnxruntime": ("fp32", "int8", "w4a8"), "tvm": ("fp32", "int8", "fp16")}
# What a target lists but --precision auto does not build by default, and why.
_NOT_BUILT = {
    "fp16": "not among the candidates asked for (it builds; its speed needs a GPU to measure)",
    "lowbit": "TVM keeps sub-8-bit weights in int8 containers: no smaller or faster than int8 "
              "(ask for w4a8 explicitly to measure it)",
    "mixed": "a per-layer sensitivity search taking minutes: ask for it explicitly",
}
@dataclass(kw_only=True)
class AutoOptions:
    tolerance: float = 0.5  # top-1 points below fp32 a candidate may lose
    eval_limit: int | None = 2000  # test samples (seeded subset); None: all
    eval_seed: int = 0
    batch: int = 32  # the second latency batch size (batch 1 is always timed)
    repeats: int = 30  # timed runs per batch size, spread over `rounds`
    rounds: int = 3  # interleaved timing rounds, so a load spike hits every candidate
    threads: int | None = None
    candidates: tuple[str, ...] | None = None  # None: what the target's backend supports
    emulate: bool = True  # accuracy of aarch64 artifacts under qemu-user when possible

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise ConfigError(f"tolerance must be >= 0 points, got {self.tolerance}")
        for name in ("eval_limit", "batch", "repeats", "rounds", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.candidates is not None:
            self.candidates = tuple(self.candidates)
            unknown = [c for c in self.candidates if c not in CANDIDATES]
            if unknown or not self.candidates:
                raise ConfigError(f"unknown precision candidate {(unknown or [''])[0]!r} "
                                  f"(known: {', '.join(CANDIDATES)})")


@dataclass(kw_only=True)
class Candidate:
    """One precision's measurements: plain data, so the pick rule can be tested alone."""

    name: str
    precision: str | None = None  # the artifact's own label (w8a8 layers read "int8")
    accuracy: float | None = None  # top-1, percent
    agreement: float | None = None  # percent top-1 agreement with fp32
    latency_ms: dict[int, float] = field(default_factory=dict)  # p50 by batch size
    p90_ms: dict[int, float] = field(default_factory=dict)  # of the median round
    size_bytes: int | None = None
    accuracy_on: str = ""
    latency_on: str = ""
    error: str | None = None  # why it could not be built or measured
    picked: bool = False
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("latency_ms", "p90_ms"):
            data[key] = {str(b): v for b, v in sorted(getattr(self, key).items())}
        return data


@dataclass
class AutoResult:
    path: Path
    manifest: dict[str, Any]
    candidates: list[Candidate]
    report: Any  # edgeopt.evaluate.Report

    @property
    def picked(self) -> Candidate:
        return next(c for c in self.candidates if c.picked)


# --------------------------------------------------------------------------- the rule


def choose(candidates: list[Candidate], tolerance: float = 0.5) -> Candidate:
    """Mark the pick and say why for every candidate; the first must be fp32.

    Eligible: top-1 within ``tolerance`` of fp32, no slower than fp32 at any batch
    timed, strictly faster at batch 1 (the smallest batch). The fastest eligible at
    batch 1 wins (a smaller file breaks a tie); none eligible: fp32. A candidate
    measured without latency (fp16 without a GPU) is reported but never picked."""
    base = candidates[0]
    if base.name != "fp32" or base.error or base.accuracy is None or not base.latency_ms:
        raise ConfigError("the fp32 candidate must come first and be measured")
    first = min(base.latency_ms)
    eligible = []
    for c in candidates[1:]:
        c.picked = False
        if c.error:
            c.why = f"not measured: {c.error}"
            continue
        drop = base.accuracy - c.accuracy
        if not c.latency_ms:  # accuracy alone cannot justify shipping it
            c.why = f"{c.accuracy - base.accuracy:+.2f} points vs fp32; not timed: {c.latency_on}"
            continue
        slower = [b for b in sorted(base.latency_ms)
                  if c.latency_ms[b] > base.latency_ms[b]
                  or (b == first and c.latency_ms[b] == base.latency_ms[b])]
        if drop > tolerance + 1e-9:
            c.why = f"{drop:.2f} points below fp32 (tolerance {tolerance:g})"
        elif slower:
            b = slower[0]
            word = "no faster" if c.latency_ms[b] == base.latency_ms[b] else "slower"
            c.why = (f"{word} than fp32 at batch {b} ({c.latency_ms[b]:.3f} vs "
                     f"{base.latency_ms[b]:.3f} ms)")
        else:
            eligible.append(c)
    eligible.sort(key=lambda c: (c.latency_ms[first], c.size_bytes or 0))
    pick = eligible[0] if eligible else base
    for c in eligible[1:]:
        c.why = (f"within tolerance and faster than fp32, but {pick.name} is faster at batch "
                 f"{first} ({c.latency_ms[first]:.3f} vs {pick.latency_ms[first]:.3f} ms)")
    pick.picked = True
    if pick is base:
        base.why = ("no quantized candidate is both within tolerance and faster than fp32"
                    if len(candidates) > 1 else "the only precision built for this target")
    else:
        speed = ", ".join(f"{base.latency_ms[b] / pick.latency_ms[b]:.2f}x at batch {b}"
                          for b in sorted(base.latency_ms))
        pick.why = (f"fastest within {tolerance:g} points of fp32 "
                    f"({pick.accuracy - base.accuracy:+.2f} points; {speed})")
        base.why = f"baseline; {pick.name} is faster within tolerance"
    return pick


# --------------------------------------------------------------------------- where to measure


def host_isa_target() -> str:
    """The x86_64 registry entry this host's CPU runs best (its /proc/cpuinfo flags
    against each variant's ``cpu_flags`` in the registry)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return platform.machine()
    flags = cpu_flags() or set()
    for name in ("x86_64-avx512", "x86_64-avx2"):
        if set(get_target(name).cpu_flags) <= flags:
            return name
    return "x86_64"


def runs_here(t: Target) -> bool:
    if t.device != "cpu" or t.arch != platform.machine():
        return False
    host = host_isa_target()
    order = ["x86_64", "x86_64-avx2", "x86_64-avx512"]
    return t.name not in order or host not in order or order.index(t.name) <= order.index(host)


def proxy_target(t: Target) -> str:
    """The host build that stands in for a target this machine cannot run."""
    if t.arch == platform.machine() and t.device == "cpu":
        return host_isa_target()  # an x86 ISA level above the host's: the host's best
    # 128-bit SSE2 code is the nearest x86 analogue of an ARM core's 128-bit NEON.
    return "x86_64"


def _emulated_cpu(t: Target) -> str:
    from edgeopt import emulate

    mcpu = (t.tvm or {}).get("mcpu")
    return mcpu if mcpu in emulate.CPUS else emulate.DEFAULT_CPU


# --------------------------------------------------------------------------- the run


def candidate_names(t: Target, backend: str, asked: tuple[str, ...] | None) -> list[str]:
    t.check(backend, "fp32")  # an unknown backend for the target: refused with the list
    supported = t.support[backend]
    if asked is None:
        return [n for n in _DEFAULT[backend] if CANDIDATES[n][0] in supported]
    bad = [n for n in asked if CANDIDATES[n][0] not in supported]
    if bad:
        raise ConfigError(f"target {t.name} does not support candidate {bad[0]!r} with "
                          f"{backend} (supported: {', '.join(supported)})")
    return ["fp32", *[n for n in asked if n != "fp32"]]


def not_built(t: Target, backend: str, names: list[str]) -> dict[str, str]:
    """Precisions the target's backend lists that this run did not build, with the reason."""
    built = {CANDIDATES[n][0] for n in names}
    out = {f: _NOT_BUILT.get(f, "not a candidate") for f in t.support[backend]
           if f not in built}
    if backend == "onnxruntime" and "lowbit" in t.support[backend] and "mixed" not in names:
        out["mixed"] = _NOT_BUILT["mixed"]
    return out


def auto_compile(model, data, *, target: str = "x86_64", backend: str = "onnxruntime",
                 out, input_shape: list[int] | None = None, preprocess=None,
                 options: AutoOptions | None = None, force: bool = False,
                 model_name: str = "model", log: Callable[[str], None] = print) -> AutoResult:
    """Compile ``model`` (float) at each candidate precision and write the pick to ``out``."""
    from edgeopt.core.data import Dataset, Preprocess, load_dataset

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
        from edgeopt.compile.api import compile as compile_model
        from edgeopt.pipeline import OptimizeOptions, compress_with_recipe
        from edgeopt.recipes import load_recipe

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
                    recipe=r, preprocess=self.pre, progress=False), log=self.log)
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
                from edgeopt.compile.api import prepare
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
        from edgeopt.evaluate import evaluate, measure_latency
        from edgeopt.runtime import load

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
        from edgeopt import emulate

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
        from edgeopt.compile.artifact import ArtifactWriter
        from edgeopt.runtime import read_manifest

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


# --------------------------------------------------------------------------- report


def build_report(cands: list[Candidate], pick: Candidate, *, model_name: str, dataset: str,
                 n_eval: int, target: str, backend: str, tolerance: float, measured: str,
                 not_built: dict[str, str] | None = None):
    from edgeopt.evaluate import Latency, Report, StageResult

    stages = []
    for c in cands:
        if c.error:
            continue
        # Timing detail beyond p50/p90 is not kept per candidate: repeats/threads read 0.
        lat = {b: Latency(batch=b, p50_ms=v, p90_ms=c.p90_ms.get(b, v), mean_ms=v, repeats=0,
                          threads=0) for b, v in c.latency_ms.items()}
        stages.append(StageResult(
            name=f"{c.name} {backend}", backend=backend,
            precision=c.precision or c.name, accuracy_top1=c.accuracy, agreement=c.agreement,
            size_bytes=c.size_bytes, latency=lat, notes=c.why))
    return Report(model=model_name, dataset=dataset, n_eval=n_eval, stages=stages, meta={
        "target": target, "backend": backend, "precision": "auto", "picked": pick.name,
        "tolerance_points": tolerance, "measured": measured,
        "not_built": not_built or {}, "candidates": [c.to_dict() for c in cands]})


def candidates_markdown(cands: list[Candidate], tolerance: float) -> list[str]:
    batches = sorted({b for c in cands for b in c.latency_ms})
    head = ["candidate", "precision", "top-1", *(f"p50@{b} ms" for b in batches), "size",
            "picked", "why"]

    def cell(v, fmt=".2f"):
        return "-" if v is None else format(v, fmt)

    lines = [f"Pick rule: the fastest at batch 1 within {tolerance:g} top-1 points of fp32 and "
             "no slower than fp32 at any batch; fp32 wins ties.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cands:
        row = [c.name, c.precision or "-", cell(c.accuracy),
               *(cell(c.latency_ms.get(b), ".3f") for b in batches),
               cell(c.size_bytes, ",d"), "yes" if c.picked else "", c.why.replace("|", "/")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_auto_report(report, folder: Path) -> None:
    """report.json with every candidate under meta; report.md/html with a Candidates table
    instead of the raw candidate list among the environment lines."""
    from edgeopt.evaluate import write_report
    from edgeopt.evaluate.report import to_html, to_markdown

    write_report(report, folder)
    short = dataclasses.replace(report, meta={k: v for k, v in report.meta.items()
                                              if k not in ("candidates", "not_built")})
    cands = [Candidate(**{**c, **{k: {int(b): v for b, v in c[k].items()}
                                  for k in ("latency_ms", "p90_ms")}})
             for c in report.meta["candidates"]]
    md = to_markdown(short) + "\n## Candidates\n\n" + "\n".join(
        [f"{report.meta['measured']}.", "",
         *candidates_markdown(cands, report.meta["tolerance_points"]),
         *([""] if report.meta.get("not_built") else []),
         *(f"- {f} not built: {why}" for f, why in report.meta.get("not_built", {}).items())]
    ) + "\n"
    (folder / "report.md").write_text(md)
    (folder / "report.html").write_text(to_html(short))
