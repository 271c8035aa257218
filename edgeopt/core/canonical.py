"""Getting any model into the canonical form (``core.graph``), checked."""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.errors import DataError, ModelLoadError
from edgeopt.core.graph import batch_range, eval_mode, export_program, lift

CANONICAL = "edgeopt_canonical"


def is_canonical(model) -> bool:
    """A canonical GraphModule still in that form: a technique that swapped one of its
    layers for a container of layers (low-rank factors) made it need tracing again."""
    if not (isinstance(model, fx.GraphModule) and model.meta.get(CANONICAL, False)):
        return False
    return not any(isinstance(model.get_submodule(n.target), nn.Sequential)
                   for n in model.graph.find_nodes(op="call_module"))


def check_finite(model: nn.Module) -> None:
    """Refuse NaN/Inf weights, naming the tensor: they poison every range."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ModelLoadError(f"weights are not finite: {name} has {bad} NaN/Inf values")


def check_input_fits(model: nn.Module, example: torch.Tensor):
    """Run one sample (the smallest batch the model takes) so a shape mismatch is
    reported as such, not deep in a trace. Returns the model's output."""
    batch = (batch_range(model) or (1, None))[0]
    try:
        with torch.no_grad():
            return eval_mode(model)(example[:1].expand(batch, *example.shape[1:]))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"data sample shape {tuple(example.shape[1:])} does not fit the model input: {first}"
        ) from None


def check_labels_fit(output, dataset, where, task: str | None = None) -> None:
    """Refuse labels a classifier with ``output.shape[1]`` classes cannot predict,
    naming ``where`` (the data file) and the label array (y_train or y_test)."""
    if task not in (None, "classification"):
        return
    if not (isinstance(output, torch.Tensor) and output.dim() == 2):
        return  # not an N,C classifier output: nothing to check labels against
    classes = output.shape[1]
    for name, y in (("y_train", dataset.train.y), ("y_test", dataset.test.y)):
        if len(y) and (int(y.max()) >= classes or int(y.min()) < 0):
            raise DataError(
                f"{where}:{name}: labels range {int(y.min())}..{int(y.max())} but the model "
                f"outputs {classes} classes (labels must be 0..{classes - 1})"
            )


def probe_batch_range(model: nn.Module, example: torch.Tensor) -> tuple[int, int | None] | None:
    """``batch_range(model)``; a TorchScript module declares none, so it is run once at
    batch 2: one traced at batch 1 with its batch fixed fails or answers one row, and is
    then taken as a static batch of 1."""
    known = batch_range(model)
    if known is not None or not isinstance(model, torch.jit.ScriptModule):
        return known
    try:
        with torch.no_grad():
            out = model(example[:1].expand(2, *example.shape[1:]))
        takes_two = isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == 2
    except Exception:  # whatever the fixed batch breaks
        takes_two = False
    return None if takes_two else (1, 1)


def canonical_copy(model: nn.Module, example: torch.Tensor | None) -> fx.GraphModule:
    """A canonical deep copy of ``model`` (the user's model is never modified)."""
    if is_canonical(model):
        return copy.deepcopy(model)
    if example is None:
        raise DataError("an example input is needed to trace the model")
    check_finite(model)
    check_input_fits(model, example)
    # TorchScript modules cannot be deep-copied; export does not modify them anyway.
    batches = probe_batch_range(model, example)
    src = model if isinstance(model, torch.jit.ScriptModule) else copy.deepcopy(model)
    gm = lift(export_program(src, example, batches))
    gm.meta[CANONICAL] = True
    gm.meta["input_shape"] = list(example.shape[1:])
    return gm


def is_program(model) -> bool:
    """A loaded TorchScript module or torch.export program (``ep.module()``): its layers
    are not ``nn.Conv2d``/``nn.Linear`` modules a technique could find, swap or prune."""
    return isinstance(model, torch.jit.ScriptModule) or (
        isinstance(model, fx.GraphModule) and hasattr(model, "range_constraints"))


def editable(model: nn.Module, example: torch.Tensor | None,
             technique: str = "compression") -> nn.Module:
    """The model as every technique can edit it: a loaded program becomes its canonical
    copy (real layers, the program's batch range kept); any other module is returned as
    it is. Techniques calibrate and train on batches of their own size, so a copy whose
    batch stayed fixed (``graph.lifting._takes_any_batch``) is refused in one line."""
    if not is_program(model):
        return model
    gm = canonical_copy(model, example)
    lo, hi = gm.meta.get("batch_range") or (1, None)
    if lo == hi:
        form = "TorchScript" if isinstance(model, torch.jit.ScriptModule) else "torch.export"
        raise ModelLoadError(f"this {form} model takes a static batch of {lo} only, and "
                             f"{technique} runs it on batches of other sizes; export it "
                             f"with a dynamic batch (torch.export.Dim)")
    return gm


def edited(gm: nn.Module) -> nn.Module:
    """Mark a canonical model whose layers changed shape (pruned channels): its nodes'
    recorded shapes are stale, so the next ``canonical_copy`` traces it again."""
    if is_canonical(gm):
        gm.meta[CANONICAL] = False
    return gm
