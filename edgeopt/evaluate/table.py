"""The stage table and one-line summaries shared by every report format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeopt.evaluate.size import human_bytes

if TYPE_CHECKING:
    from edgeopt.evaluate.report import Report, StageResult



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


def table_cells(report: Report) -> tuple[list[str], list[list[str]]]:
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


TEXT_COLUMNS = 3  # stage, backend, precision: left-aligned; the numbers align right


def stage_table(report: Report) -> str:
    """Aligned plain-text table, safe for terminals and logs alike."""
    header, rows = table_cells(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(w) if i < TEXT_COLUMNS else c.rjust(w)
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
