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
from edgeopt.evaluate.size import human_bytes

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


# --------------------------------------------------------------------------- table


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def _ratio(base: float | None, value: float | None) -> float | None:
    """How many times ``value`` goes into ``base``: >1 means smaller/faster than the base."""
    if base is None or value is None or value <= 0:
        return None
    return base / value


def _speed_batch(report: Report) -> int | None:
    """Batch size for the speed ratio: the largest the first stage was timed at."""
    if not report.stages or not report.stages[0].latency:
        return None
    return max(report.stages[0].latency)


def _p50(stage: StageResult, batch: int | None) -> float | None:
    lat = stage.latency.get(batch) if batch is not None else None
    return lat.p50_ms if lat is not None else None


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by the text, markdown and html tables."""
    batches = sorted({b for s in report.stages for b in s.latency})
    speed_batch = _speed_batch(report)
    header = ["stage", "backend", "precision", "top-1", "top-5", "agree"]
    # Fidelity columns only when some stage was compared label-free (any model), and
    # the box F1 only for detectors: a classifier's table stays as it was.
    fid = any(s.fidelity for s in report.stages)
    box = any((s.task_metrics or {}).get("box_f1") is not None for s in report.stages)
    header += ["SQNR dB", "cos min"] if fid else []
    header += ["box F1"] if box else []
    header += ["size"]
    for b in batches:
        header += [f"p50@{b} ms", f"p90@{b} ms"]
    header += ["size x", f"speed x@{speed_batch}" if speed_batch else "speed x"]

    base = report.stages[0] if report.stages else None
    rows = []
    for s in report.stages:
        size = "-" if s.size_bytes is None else human_bytes(s.size_bytes)
        row = [s.name, s.backend, s.precision]
        row += [_num(s.accuracy_top1), _num(s.accuracy_top5), _num(s.agreement)]
        head = (s.fidelity or {}).get("headline") or {}
        row += [_num(head.get("sqnr_db_min"), ".1f"), _num(head.get("cosine_min"), ".4f")] if fid else []
        row += [_num((s.task_metrics or {}).get("box_f1"), ".3f")] if box else []
        row += [size]
        for b in batches:
            lat = s.latency.get(b)
            row += ["-", "-"] if lat is None else [_num(lat.p50_ms), _num(lat.p90_ms)]
        row.append(_times(_ratio(base.size_bytes, s.size_bytes)))
        row.append(_times(_ratio(_p50(base, speed_batch), _p50(s, speed_batch))))
        rows.append(row)
    return header, rows


_TEXT_COLUMNS = 3  # stage, backend, precision: left-aligned; the numbers align right


def stage_table(report: Report) -> str:
    """Aligned plain-text table, safe for terminals and logs alike."""
    header, rows = _table(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i < _TEXT_COLUMNS else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def summary_lines(report: Report) -> list[str]:
    """One line per stage after the first, comparing it with the first."""
    if len(report.stages) < 2:
        return []
    base, batch = report.stages[0], _speed_batch(report)
    lines = []
    for s in report.stages[1:]:
        parts = []
        size_x = _ratio(base.size_bytes, s.size_bytes)
        if size_x is not None:
            parts.append(f"{size_x:.1f}x smaller" if size_x >= 1 else f"{1 / size_x:.1f}x larger")
        speed_x = _ratio(_p50(base, batch), _p50(s, batch))
        if speed_x is not None:
            word = f"{speed_x:.1f}x faster" if speed_x >= 1 else f"{1 / speed_x:.1f}x slower"
            parts.append(f"{word} at batch {batch}")
        if base.accuracy_top1 is not None and s.accuracy_top1 is not None:
            parts.append(f"{s.accuracy_top1 - base.accuracy_top1:+.2f} points top-1")
        if parts:
            lines.append(f"{s.name}: {', '.join(parts)} vs {base.name}")
    return lines


# --------------------------------------------------------------------------- files


def _meta_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


_DETAIL_META = ("compression",)  # shown in its own section, not as an environment line


def compression_lines(info: dict[str, Any] | None) -> list[str]:
    """Markdown lines saying what each compression step did (policy, splits, QAT...)."""
    if not info:
        return []
    lines = []
    for step in info.get("steps") or [info]:
        what = step.get("technique", step.get("step", "?"))
        extra = []
        if step.get("split"):
            extra.append("split " + ", ".join(
                f"{k} (+{v['channels_added']} ch)"
                for k, v in step["split"].items()))
        if step.get("pairs"):
            extra.append(f"{len(step['pairs'])} layer pairs equalized")
        if step.get("adaround"):
            extra.append(f"learned rounding on {len(step['adaround'])} layers")
        if step.get("qat"):
            q = step["qat"]
            extra.append(f"{q.get('steps')} training steps in {q.get('seconds', 0):.0f} s")
        extra += _beyond_quantization(step)
        lines.append(f"- {what}" + (f": {'; '.join(extra)}" if extra else ""))
        mixed = step.get("mixed")
        if mixed:
            lines += ["", f"Mixed precision, {mixed['target']}: "
                      f"{mixed['bytes']:,} B = {mixed['ratio']:.3f}x fp32, "
                      f"{mixed['avg_bits']:.2f} bits per weight on average.", "",
                      "| layer | weight bits |", "|---|---:|",
                      *(f"| {n} | {b} |" for n, b in mixed["policy"].items()), "",
                      "![accuracy against size of the candidate policies](pareto.png)", ""]
    return lines


def _finetuned(record: dict[str, Any]) -> str:
    ft = record.get("finetune")
    if not isinstance(ft, dict) or not ft.get("steps"):
        return ""
    return f", then {ft['steps']} fine-tuning steps in {ft.get('seconds', 0):.0f} s"


def _beyond_quantization(step: dict[str, Any]) -> list[str]:
    """Phrases for pruning, sparsity, clustering, low-rank and distillation records."""
    out = []
    if isinstance(p := step.get("prune"), dict):
        out.append(f"MACs {p['macs_before']:,} -> {p['macs_after']:,} "
                   f"(-{1 - p['macs_after'] / max(1, p['macs_before']):.1%}), params "
                   f"{p['params_before']:,} -> {p['params_after']:,}; channels "
                   + ", ".join(f"{n} {a}->{b}" for n, (a, b) in p.get("channels", {}).items()
                               if a != b))
    if isinstance(sp := step.get("sparsify"), dict):
        text = f"{sp.get('sparsity', 0):.1%} of prunable weights are zero"
        if isinstance(art := sp.get("artifact_bytes"), dict):
            text += (f"; artifact {art['raw']:,} B raw, {art['compressed']:,} B zlib-compressed"
                     " (dense kernels: no speed-up)")
        out.append(text + _finetuned(sp))
    if isinstance(c := step.get("cluster"), dict):
        ks = sorted({v["clusters"] for v in c.get("layers", {}).values()})
        out.append(f"{len(c.get('layers', {}))} layers clustered to "
                   f"{'/'.join(map(str, ks)) or '-'} shared values "
                   f"({c.get('fraction_clustered', 0):.0%} of weights)" + _finetuned(c))
    if isinstance(lr := step.get("lowrank"), dict):
        out.append(f"params {lr['params_before']:,} -> {lr['params_after']:,} "
                   f"(-{lr.get('param_reduction', 0):.1%}); ranks "
                   + ", ".join(f"{n} {v.get('ranks')}" for n, v in lr.get("layers", {}).items())
                   + _finetuned(lr))
    if isinstance(d := step.get("distill"), dict):
        out.append(f"distilled from the {d.get('teacher')} into the {d.get('student')} "
                   f"(T={d.get('temperature')}, alpha={d.get('alpha')}): {d.get('steps')} "
                   f"steps in {d.get('seconds', 0):.0f} s")
    return out


def to_markdown(report: Report) -> str:
    header, rows = _table(report)

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if i < _TEXT_COLUMNS else "---:" for i in range(len(header))]
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
    header, rows = _table(report)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{esc(c)}</td>' if i >= _TEXT_COLUMNS else f"<td>{esc(c)}</td>"
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
