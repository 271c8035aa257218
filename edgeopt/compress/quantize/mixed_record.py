"""How a mixed-precision step reports: its policy table and Pareto figure."""

from __future__ import annotations

from edgeopt.compress.quantize.ptq import QuantRecord
from edgeopt.core.step import Figure

PARETO_FILE = "pareto.png"


class MixedRecord(QuantRecord):
    """``details["mixed"]``: the size target, the chosen policy and the Pareto points."""

    def report_lines(self) -> list[str]:
        m = self.details["mixed"]
        lines = ["", f"Mixed precision, {m['target']}: {m['bytes']:,} B = {m['ratio']:.3f}x "
                 f"fp32, {m['avg_bits']:.2f} bits per weight on average.", "",
                 "| layer | weight bits |", "|---|---:|",
                 *(f"| {n} | {b} |" for n, b in m["policy"].items()), ""]
        if m.get("pareto"):
            lines += [f"![accuracy against size of the candidate policies]({PARETO_FILE})", ""]
        return lines

    def figures(self) -> list[Figure]:
        m = self.details["mixed"]
        if not m.get("pareto"):
            return []
        accuracy = "accuracy" in m["scored_on"]
        return [Figure(kind="pareto", file=PARETO_FILE, points=m["pareto"],
                       title=f"mixed precision candidates ({m['scored_on']})",
                       ylabel="simulated top-1 (%)" if accuracy else "agreement with fp32 (%)")]
