"""Side-by-side report of pipeline stages: data classes and json/md/html/text output."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ArtifactError
from edgeopt.evaluate.latency import Latency
from edgeopt.evaluate.table import TEXT_COLUMNS, stage_table, summary_lines, table_cells

__all__ = ["Report", "StageResult", "compression_lines", "stage_table", "summary_lines",
           "to_html", "to_markdown", "write_report"]

FORMAT_VERSION = 1


@dataclass(kw_only=True)
class StageResult:
    """One stage (eager fp32, simulated int8, compiled artifact...) measured on the same data."""

    name: str
    backend: str
    precision: str
    accuracy_top1: float | None = None
    accuracy_top5: float | None = None
    agreement: float | None = None  # percent top-1 agreement with the first stage
    size_bytes: int | None = None
    latency: dict[int, Latency] = field(default_factory=dict)  # by batch size
    notes: str = ""
    # Label-free comparison with the first stage, per output (evaluate/fidelity.py), and
    # its headline (fidelity.summarise: the worst output by each metric).
    fidelity: dict[str, Any] | None = None
    # Task metrics beyond top-k: e.g. detection box agreement with the fp32 model.
    task_metrics: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # JSON object keys are strings; from_dict turns them back into ints.
        data["latency"] = {str(b): lat.to_dict() for b, lat in sorted(self.latency.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        data = dict(data)
        latency = data.pop("latency", {}) or {}
        return cls(**data, latency={int(b): Latency.from_dict(v) for b, v in latency.items()})


@dataclass(kw_only=True)
class Report:
    model: str
    dataset: str
    n_eval: int
    stages: list[StageResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # threads, cpu, version, created_at...

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "dataset": self.dataset,
            "n_eval": self.n_eval,
            "stages": [s.to_dict() for s in self.stages],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        try:
            return cls(
                model=data["model"],
                dataset=data["dataset"],
                n_eval=int(data["n_eval"]),
                stages=[StageResult.from_dict(s) for s in data["stages"]],
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"malformed report: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- files


def _meta_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


_DETAIL_META = ("compression",)  # shown in its own section, not as an environment line


def compression_lines(info: dict[str, Any] | None) -> list[str]:
    """Markdown lines saying what each compression step did: its technique and the
    phrases its record gave (``StepRecord.to_dict``: ``summary`` and ``report_lines``)."""
    if not info:
        return []
    lines = []
    for step in info.get("steps") or [info]:
        what = step.get("technique", step.get("step", "?"))
        summary = step.get("summary") or []
        if isinstance(summary, str):
            summary = [summary]
        lines.append(f"- {what}" + (f": {'; '.join(summary)}" if summary else ""))
        lines += step.get("report_lines") or []
    return lines


def to_markdown(report: Report) -> str:
    header, rows = table_cells(report)

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i < TEXT_COLUMNS else "---:" for i in range(len(header))]
    lines = [
        f"# edgeopt report: {report.model}",
        "",
        f"Dataset: {report.dataset}, {report.n_eval} samples evaluated.",
        "",
        row(header),
        "| " + " | ".join(align) + " |",
        *(row(r) for r in rows),
    ]
    summary = summary_lines(report)
    if summary:
        lines += ["", "## Summary", "", *(f"- {s}" for s in summary)]
    compression = compression_lines(report.meta.get("compression"))
    if compression:
        lines += ["", "## Compression", "", *compression]
    env = {k: v for k, v in report.meta.items() if k not in _DETAIL_META}
    if env:
        lines += [
            "",
            "## Environment",
            "",
            *(f"- {k}: {_meta_value(v)}" for k, v in env.items()),
        ]
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:sans-serif;margin:2em}"
    "table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:4px 8px}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
)


def to_html(report: Report) -> str:
    """A single self-contained page: inline CSS, no scripts, no external assets."""
    esc = html.escape
    header, rows = table_cells(report)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{esc(c)}</td>' if i >= TEXT_COLUMNS else f"<td>{esc(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>\n"
        for r in rows
    )
    summary = "".join(f"<li>{esc(s)}</li>" for s in summary_lines(report))
    meta = "".join(f"<li>{esc(str(k))}: {esc(_meta_value(v))}</li>" for k, v in report.meta.items())
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>edgeopt report: {esc(report.model)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>edgeopt report: {esc(report.model)}</h1>\n"
        f"<p>Dataset: {esc(report.dataset)}, {report.n_eval} samples evaluated.</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
        + (f"<h2>Summary</h2><ul>{summary}</ul>\n" if summary else "")
        + (f"<h2>Environment</h2><ul>{meta}</ul>\n" if meta else "")
        + "</body></html>\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    # Write next to the target and rename: a reader (or a crash) never sees half a report.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_report(report: Report, out_dir: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and report.html into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "report.json": json.dumps(report.to_dict(), indent=2, default=str) + "\n",
        "report.md": to_markdown(report),
        "report.html": to_html(report),
    }
    paths = []
    for name, text in files.items():
        _write_atomic(out / name, text)
        paths.append(out / name)
    return paths
