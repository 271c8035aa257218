"""``optimize`` for an ONNX file: quantize the graph itself, pass every other op through.

Third-party ONNX models (detectors, OCR nets, audio nets with recurrent state and
control flow, transformer exports) arrive with ops no PyTorch importer covers and
inputs that are not one image tensor. For a recipe that only quantizes, converting
them to torch and back would risk the model for nothing: this path keeps the
user's graph, folds what is constant (``core.onnx_graph``), inserts QDQ around the
ops the runtime executes as integer (``compress.quantize.onnx_ptq``) and leaves the
rest in float. Every stage is compared with the user's own file, run by ONNX
Runtime, output by output (SQNR, cosine, max abs error, argmax agreement); labels,
when the data has them, add task metrics. See docs/intake.md.
"""

from __future__ import annotations

from edgeopt.graph_pipeline.feeds import model_feeds, static_batch, to_model_layout
from edgeopt.graph_pipeline.optimize import optimize_graph
from edgeopt.graph_pipeline.recipe import graph_quant_step, onnx_config, wants_graph_path
from edgeopt.graph_pipeline.runners import (
    GraphRunner,
    collect,
    predictor_runner,
    session_runner,
    time_interleaved,
)
from edgeopt.graph_pipeline.scoring import evaluate_graph, score

# What the rest of edgeopt and bench/ import from the graph path; each is defined where its
# job is.
__all__ = ["GraphRunner", "collect", "evaluate_graph", "graph_quant_step", "model_feeds",
           "onnx_config", "optimize_graph", "predictor_runner", "score", "session_runner",
           "static_batch", "time_interleaved", "to_model_layout", "wants_graph_path"]
