"""The ``text_heads`` step: attention heads of a transformers encoder removed by gradient
importance, then the pruned model distilled back to the original.

Michel et al. (2019, "Are Sixteen Heads Really Better than One?") put a gate ``m_h = 1`` on
each head's output and rank heads by the loss's gradient with respect to it. An embedding
model has no loss at the start (the model is its own target), so the loss here is the
output's projection on a random direction per text, ``<e_i, r_i>``: over random ``r`` the
square of its gradient is ``sum_i ||d e_i / d m_h||^2``, how far the head's gate moves the
output (a Hutchinson estimate of the output Jacobian's norm, label-free, the same for
embeddings and logits). Scores are normalised per layer (L2, as in the paper) and ranked
across all layers; every layer keeps at least one head.

A removed head is cut out of the weights: its rows of the query, key and value projections
and its columns of the attention output projection. transformers' BERT attention infers the
head count from the projection's width (``view(..., -1, head_size)``), so a layer with fewer
heads needs no other change and exports to an ONNX graph with smaller MatMuls.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.compress.distill.text_distill import TextDistillConfig, distill, pool, tensors
from edgeopt.compress.distill.text_student import check_hf_model, encoder_layers
from edgeopt.core.errors import ConfigError
from edgeopt.core.registry import register
from edgeopt.core.step import StepContext, StepRecord, StepResult


@dataclass(frozen=True, kw_only=True)
class TextHeadsConfig(TextDistillConfig):
    fraction: float = 0.5  # of all attention heads removed
    importance_batches: int = 8  # batches of 32 training texts the gradients are summed on
    ranking: str = "gradient"  # or "random": the baseline the gradient ranking must beat
    steps: int = 400  # distillation steps after the cut (0: none)

    label = "pruned"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.fraction < 1 or self.importance_batches < 1:
            raise ConfigError("text_heads: fraction must be in [0, 1), importance_batches >= 1")
        if self.ranking not in ("gradient", "random"):
            raise ConfigError(f"text_heads: ranking {self.ranking!r} unknown "
                              "(valid: gradient, random)")

    def texts_needed(self) -> int:
        return 32 * max(self.steps, self.importance_batches)


class TextHeadsRecord(StepRecord):
    def summary(self) -> list[str]:
        d = self.details
        return [f"attention heads: {d['heads_kept']} of {d['heads']} kept ({d['ranking']} "
                f"ranking, per layer {d['per_layer']}), distilled {d['steps']} steps, "
                f"training cos to original {d['cos_first']:.4f} -> {d['cos_last']:.4f}"]


def _attention(layer: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(self-attention with query/key/value, the attention output projection) of a layer."""
    att = getattr(layer, "attention", None)
    self_att, out = getattr(att, "self", None), getattr(getattr(att, "output", None),
                                                         "dense", None)
    if not all(isinstance(getattr(self_att, n, None), nn.Linear)
               for n in ("query", "key", "value")) or not isinstance(out, nn.Linear):
        raise ConfigError("text_heads: encoder layers without attention.self.query/key/value "
                          "and attention.output.dense (BERT-family models only)")
    return self_att, out


def head_grid(model: nn.Module) -> tuple[int, int, int]:
    """(layers, heads a layer, head size) of an unpruned encoder."""
    layers = encoder_layers(model)
    att = _attention(layers[0])[0]
    size = att.attention_head_size
    return len(layers), att.query.out_features // size, size


def head_importance(model: nn.Module, feeds: list[dict], config: TextHeadsConfig) -> torch.Tensor:
    """[layers, heads] gradient importance of each head's gate (see the module docstring)."""
    atts = [_attention(layer)[0] for layer in encoder_layers(model)]
    n_layers, n_heads, size = head_grid(model)
    gates = torch.ones(n_layers, n_heads, requires_grad=True)

    def gate(index):
        def hook(module, args, output):
            g = gates[index].repeat_interleave(size)
            return (output[0] * g,) + tuple(output[1:])
        return hook

    hooks = [att.register_forward_hook(gate(i)) for i, att in enumerate(atts)]
    gen = torch.Generator().manual_seed(config.seed)
    score = torch.zeros_like(gates)
    try:
        model.eval()
        # Batches drawn across the set: the pipeline's are sorted by token length.
        picked = torch.randperm(len(feeds), generator=gen)[:config.importance_batches]
        for feed in (feeds[i] for i in picked.tolist()):
            out = pool(model(**feed, return_dict=True), feed["attention_mask"], config)
            r = torch.randn(out.shape, generator=gen)
            (grad,) = torch.autograd.grad((out * r).sum(), gates)
            score += grad ** 2
    finally:
        for h in hooks:
            h.remove()
    return score / score.norm(dim=1, keepdim=True).clamp(min=1e-12)


def heads_to_keep(score: torch.Tensor, fraction: float) -> list[list[int]]:
    """The heads of each layer kept: the globally highest scores, at least one a layer."""
    n_layers, n_heads = score.shape
    drop = min(int(round(fraction * score.numel())), n_layers * (n_heads - 1))
    keep = torch.ones_like(score, dtype=torch.bool)
    for flat in torch.argsort(score.flatten()).tolist():
        if drop == 0:
            break
        layer, head = divmod(flat, n_heads)
        if keep[layer].sum() > 1:
            keep[layer, head] = False
            drop -= 1
    return [torch.nonzero(row).flatten().tolist() for row in keep]


def _cut(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` with only ``index`` of its outputs (dim 0) or inputs (dim 1)."""
    w = linear.weight.detach().index_select(dim, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None)
    new.weight.data.copy_(w)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[index])
    return new


def prune_heads(model: nn.Module, keep: list[list[int]]) -> None:
    """Cuts every layer down to its ``keep`` heads, in place."""
    for layer, heads in zip(encoder_layers(model), keep):
        att, out = _attention(layer)
        size = att.attention_head_size
        index = torch.tensor([h * size + i for h in heads for i in range(size)])
        for name in ("query", "key", "value"):
            setattr(att, name, _cut(getattr(att, name), index, 0))
        layer.attention.output.dense = _cut(out, index, 1)
        att.num_attention_heads, att.all_head_size = len(heads), len(heads) * size


@register(TextHeadsConfig, step="text_heads")
def text_heads(model, config: TextHeadsConfig, ctx: StepContext) -> StepResult:
    check_hf_model(model, "text_heads")
    feeds = tensors(ctx.calibration)
    teacher = model.eval()
    student = copy.deepcopy(teacher)
    if config.ranking == "gradient":
        score = head_importance(student, feeds, config)
    else:
        score = torch.rand(head_grid(student)[:2],
                           generator=torch.Generator().manual_seed(config.seed))
    keep = heads_to_keep(score, config.fraction)
    prune_heads(student, keep)
    if ctx.log:
        ctx.log(f"  {sum(map(len, keep))} of {score.numel()} attention heads kept "
                f"({config.ranking} ranking): {[len(k) for k in keep]} per layer")
    depth = len(keep)
    fit = distill(student, teacher, list(range(depth)), feeds, config, ctx.log)
    details = {"heads": score.numel(), "heads_kept": sum(map(len, keep)), "kept": keep,
               "per_layer": [len(k) for k in keep], "ranking": config.ranking,
               "importance": [[round(float(v), 4) for v in row] for row in score], **fit,
               "config": config.to_dict()}
    return StepResult(student.eval(), TextHeadsRecord("attention-head pruning", details))
