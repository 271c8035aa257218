"""A Hugging Face folder as an ONNX graph, pooling and normalisation inside it.

Why inside the graph and not in the runtime: the graph's output is then the embedding
itself, so every consumer sees the same thing, the graph path's calibration and fidelity
checks (SQNR, cosine) score the embedding a user gets rather than per-token states, and
the runtime stays a tokenizer plus a session. Mean pooling and an L2 norm are a handful of
float ops that no quantizer touches.

Attention is exported in its eager form (MatMul, Softmax, an additive mask) so that the
graph is plain ONNX ops; the mask's most-negative float (``finfo.min``, which wrecks range
calibration and overflows once scaled) is clamped to -10000 (``clamp_mask_constants``).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgeopt.core.errors import ExportError, ModelLoadError
from edgeopt.core.hf.folder import HfFolder

OPSET = 17
MASK_FLOOR = -10000.0
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Pooled(nn.Module):
    """transformers model -> pooled (and normalised) embedding, or the classifier logits."""

    def __init__(self, model: nn.Module, *, task: str, pooling: str, normalize: bool,
                 names: tuple[str, ...]):
        super().__init__()
        self.model, self.task, self.pooling, self.normalize = model, task, pooling, normalize
        self.names = names

    def forward(self, *args):
        kwargs = dict(zip(self.names, args))
        out = self.model(**kwargs, return_dict=True)
        if self.task == "classification":
            return out.logits
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return emb


def load_torch(folder: HfFolder, task: str) -> nn.Module:
    """The transformers model of ``folder`` (AutoModel for embeddings,
    AutoModelForSequenceClassification for classification), eval mode, eager attention."""
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("hf: models need the `transformers` package "
                             "(pip install 'edgeopt[text]')") from None
    cls = (transformers.AutoModelForSequenceClassification if task == "classification"
           else transformers.AutoModel)
    # transformers draws its own "Loading weights" bar, outside --no-progress and for well
    # under a second: off while loading, as it was found.
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls.from_pretrained(str(folder.path), attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"hf:{folder.path}: transformers cannot load it: {first}") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.eval()


def input_names(model: nn.Module) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids where the model takes them."""
    import inspect

    takes = inspect.signature(model.forward).parameters
    return tuple(n for n in INPUTS if n in takes)


def export_hf(folder: HfFolder, *, task: str = "embedding",
              model: nn.Module | None = None) -> tuple[onnx.ModelProto, dict]:
    """The ONNX graph (dynamic batch and sequence) and what the manifest records of it;
    ``model``: the folder's model as a step changed it (a student), else loaded from it."""
    model = load_torch(folder, task) if model is None else model.eval()
    names = input_names(model)
    wrapper = _Pooled(model, task=task, pooling=folder.pooling, normalize=folder.normalize,
                      names=names)
    example = tuple(torch.ones(2, 8, dtype=torch.int64) for _ in names)
    output = "logits" if task == "classification" else "embedding"
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"}
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, example, buf, input_names=list(names),
                              output_names=[output], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False, do_constant_folding=True)
    except Exception as exc:  # the exporter's own message, on one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExportError(f"hf:{folder.path}: ONNX export failed: {first}") from None
    graph = onnx.load_from_string(buf.getvalue())
    clamped = clamp_mask_constants(graph)
    info = {"task": task, "inputs": list(names), "output": output,
            "pooling": folder.pooling if task == "embedding" else None,
            "normalize": folder.normalize if task == "embedding" else False,
            "model_type": folder.model_type, "mask_constants_clamped": clamped}
    if task == "classification":
        labels = (folder.config.get("id2label") or {})
        info["labels"] = [labels[k] for k in sorted(labels, key=int)] if labels else None
    return graph, info


def clamp_mask_constants(graph: onnx.ModelProto, floor: float = MASK_FLOOR) -> int:
    """Raise float constants below ``floor`` (``finfo.min``, -inf) to ``floor``; returns how
    many tensors changed. exp(-10000) is 0 in float32 as exp(finfo.min) is, so Softmax
    is unchanged, but range calibration no longer sees -3.4e38."""
    changed = 0
    tensors = list(graph.graph.initializer)
    tensors += [a.t for n in graph.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        arr = numpy_helper.to_array(t)
        if arr.size and arr.size < 1 << 20 and np.nanmin(arr) < floor:
            t.CopyFrom(numpy_helper.from_array(np.maximum(arr, floor).astype(arr.dtype), t.name))
            changed += 1
    return changed
