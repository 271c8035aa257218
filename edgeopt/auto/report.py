"""The report of a ``--precision auto`` run: one stage per candidate, and a Candidates
table (why each was or was not picked) in report.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeopt.auto.rule import Candidate
from edgeopt.evaluate import Latency, Report, StageResult, write_report
from edgeopt.evaluate.report import to_html, to_markdown


def build_report(cands: list[Candidate], pick: Candidate, *, model_name: str, dataset: str,
                 n_eval: int, target: str, backend: str, tolerance: float, measured: str,
                 not_built: dict[str, str] | None = None):
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
