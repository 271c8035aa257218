"""Plots a person would rather look at than read (written as PNG, headless)."""

from __future__ import annotations

import io
from pathlib import Path

from edgeopt.core.files import atomic_write_bytes


def pareto_png(points: list[dict], path: str | Path, *, title: str = "",
               ylabel: str = "top-1 accuracy (%)") -> Path:
    """Accuracy against size: ``points`` have label, ratio (size / fp32) and accuracy.
    Uniform widths are drawn as one line, mixed policies as another, the chosen
    policy as a star, and the non-dominated points joined as the front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    # Zoom on the useful region: a collapsed point (2-bit PTQ at 11%) would squash every
    # other difference into one pixel row. Points below are drawn on the floor as "v"
    # with their real value written beside them.
    best = max(p["accuracy"] for p in points)
    floor = max(min(p["accuracy"] for p in points), best - 6.0)
    clipped = [p for p in points if p["accuracy"] < floor]
    points = [{**p, "accuracy": max(p["accuracy"], floor)} for p in points]
    groups = {"uniform": [], "mixed": [], "chosen": []}
    for p in points:
        kind = p["label"].split()[0] if p["label"].split()[0] in groups else "mixed"
        groups[kind].append(p)
    for kind, style in (("uniform", "o--"), ("mixed", "s-")):
        pts = sorted(groups[kind], key=lambda p: p["ratio"])
        if pts:
            ax.plot([p["ratio"] for p in pts], [p["accuracy"] for p in pts], style,
                    label=kind, alpha=0.8)
        if kind == "uniform":
            for p in pts:
                ax.annotate(p["label"].split()[-1], (p["ratio"], p["accuracy"]), fontsize=7,
                            textcoords="offset points", xytext=(3, -9))
    for p in groups["chosen"]:
        ax.plot(p["ratio"], p["accuracy"], "*", markersize=14, color="crimson",
                label=f"chosen ({p['ratio']:.3f}x, {p['accuracy']:.2f}%)")
    for p in clipped:
        ax.plot(p["ratio"], floor, "v", color="gray")
        ax.annotate(f"{p['accuracy']:.1f}%", (p["ratio"], floor), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    if clipped:
        ax.set_ylim(bottom=floor - 0.3)
    ax.set_xlabel("size / fp32 size")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "accuracy against size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


_DRAW = {"pareto": pareto_png}


def draw(figure, out_dir: str | Path) -> Path:
    """Draw a step's ``core.step.Figure`` into ``out_dir``; returns the file written."""
    if figure.kind not in _DRAW:
        raise ValueError(f"no drawing for figure kind {figure.kind!r} (known: {', '.join(_DRAW)})")
    return _DRAW[figure.kind](figure.points, Path(out_dir) / figure.file, title=figure.title,
                              ylabel=figure.ylabel or "top-1 accuracy (%)")
