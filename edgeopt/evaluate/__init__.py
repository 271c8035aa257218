"""Evaluate any stage (torch module, Predictor, numpy callable) on the same data.

Accuracy, agreement with a reference, size on disk and latency, reported side
by side as json, markdown and html.
"""

from edgeopt.evaluate.evaluate import EvalResult, evaluate
from edgeopt.evaluate.latency import Latency, interleaved_p50s, measure_latency
from edgeopt.evaluate.metrics import agreement, topk_accuracy
from edgeopt.evaluate.report import Report, StageResult, stage_table, summary_lines, write_report
from edgeopt.evaluate.runnable import as_numpy_fn, describe
from edgeopt.evaluate.size import human_bytes, size_on_disk, state_dict_size

__all__ = [
    "EvalResult",
    "Latency",
    "Report",
    "StageResult",
    "agreement",
    "as_numpy_fn",
    "describe",
    "evaluate",
    "human_bytes",
    "interleaved_p50s",
    "measure_latency",
    "size_on_disk",
    "stage_table",
    "state_dict_size",
    "summary_lines",
    "topk_accuracy",
    "write_report",
]

from edgeopt.core.callable_module import make_callable  # noqa: E402

make_callable(__name__, "edgeopt.evaluate.api:evaluate_on")
