"""Tracing a model with ``torch.export``, and the batch sizes a traced program accepts."""

from __future__ import annotations

import warnings

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.errors import ExportError

# The batch range a plain module is exported with (torch.export needs a bound).
DEFAULT_BATCH_RANGE = (1, 1 << 16)


def eval_mode(module: nn.Module) -> nn.Module:
    """``module.eval()``, except for torch.export's unlifted modules, which refuse it
    (they are always in inference form already)."""
    try:
        return module.eval()
    except NotImplementedError:
        return module


def _bound(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):  # sympy's int_oo
        return None


def program_input(model) -> tuple[list | None, dict]:
    """(shape of the first user input, range constraints) of an ExportedProgram or of the
    module ``ep.module()`` returns; (None, {}) for anything else."""
    if isinstance(model, torch.export.ExportedProgram):
        placeholders = model.graph.find_nodes(op="placeholder")
        specs = model.graph_signature.input_specs
        users = [n for n, s in zip(placeholders, specs) if s.kind.name == "USER_INPUT"]
        ranges = model.range_constraints
    elif isinstance(model, fx.GraphModule) and hasattr(model, "range_constraints"):
        users, ranges = model.graph.find_nodes(op="placeholder"), model.range_constraints
    else:
        return None, {}
    val = users[0].meta.get("val") if users else None
    return (list(val.shape) if isinstance(val, torch.Tensor) else None), dict(ranges or {})


def batch_range(model) -> tuple[int, int | None] | None:
    """(min, max) batch sizes ``model`` accepts (max None: unbounded; min == max: a
    static batch), as a torch.export program declares it or a canonical copy recorded
    it; None for a plain module, which is assumed to take any batch."""
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and meta.get("batch_range") and not hasattr(model, "range_constraints"):
        lo, hi = meta["batch_range"]
        return int(lo), None if hi is None else int(hi)
    shape, ranges = program_input(model)
    if not shape:
        return None
    dim = shape[0]
    if isinstance(dim, int):
        return dim, dim
    vr = ranges.get(dim.node.expr)
    if vr is None:  # a derived size (2 * s0, ...): say only that it is dynamic
        return 1, None
    lo, hi = _bound(vr.lower), _bound(vr.upper)
    return max(1, lo or 1), hi


def export_program(module: nn.Module, example: torch.Tensor,
                   batches: tuple[int, int | None] | None = None) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension, functionalized.

    A torch.export program (``ep.module()``, or a canonical copy of one) is re-exported
    with its own batch range, static when it was exported at a fixed batch: a wider range
    than the program's would violate its constraints. Other dimensions are exported at
    the example's sizes, which the data fixes anyway. ``batches`` gives that range for a
    copy of a program (a deep copy of ``ep.module()`` no longer knows it).
    """
    module = eval_mode(module)
    lo, hi = batches or batch_range(module) or DEFAULT_BATCH_RANGE
    # Exporting at batch 2 where allowed: torch.export specializes a size of 1.
    n = lo if hi == lo else max(lo, 2) if hi is None else min(max(lo, 2), hi)
    dynamic = None if n == hi == lo else (
        {0: torch.export.Dim("batch", min=lo)} if hi is None
        else {0: torch.export.Dim("batch", min=lo, max=hi)})
    try:
        example = example[:1].expand(n, *example.shape[1:]).contiguous()
        if isinstance(module, torch.jit.ScriptModule):
            from torch._export.converter import TS2EPConverter

            with warnings.catch_warnings():  # its notes on unused buffers are not the user's
                warnings.simplefilter("ignore", UserWarning)
                module = TS2EPConverter(module, (example,)).convert().module()
        ep = torch.export.export(module, (example,), dynamic_shapes=(dynamic,) if dynamic else None,
                                 strict=False)
    except Exception as exc:  # torch raises many types here; the first line is what matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export cannot trace the model: {first}") from exc
    return ep.run_decompositions({})
