"""The Torch-Pruning side of structured pruning: build the pruner, score, step, count.

Torch-Pruning's DependencyGraph finds which channels are coupled (a residual add
ties the channels of every layer that feeds it) and its MetaPruner removes whole
coupled groups; nothing here traces the graph itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.prune._common import layers
from edgeopt.core.config import first_match
from edgeopt.core.errors import ConfigError
from edgeopt.core.extras import LazyModule
from edgeopt.core.train import TrainData

# The `compress` extra: imported by the first pruning step, so that compress imports without.
tp = LazyModule("torch_pruning", extra="compress", feature="structured pruning")

# Sub-steps of the linear ratio schedule a MACs target is reached in: 1/100 of the
# per-layer cap each, so the target is overshot by at most about one percent.
MACS_SUBSTEPS = 100


def importance(kind: str) -> tp.importance.Importance:
    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupTaylorImportance()


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on ``example`` (batch 1)."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs=example)
    return int(macs), int(params)


@contextlib.contextmanager
def _current_layer(model: nn.Module) -> Iterator[list[str]]:
    """Track the innermost module running, to name the layer a tracing failure is in."""
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(_m, _args, name=name):
            stack.append(name)

        def post(_m, _args, _out, name=name):
            if stack and stack[-1] == name:
                stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _where(model: nn.Module, stack: list[str]) -> str:
    if not stack:
        return "the model's forward"
    name = stack[-1]
    return f"layer {name!r} ({type(model.get_submodule(name)).__name__})"


def build(model: nn.Module, example: torch.Tensor, *, kind: str, ratio: float,
          per_layer: dict[nn.Module, float], ignored: list[nn.Module], global_pruning: bool,
          steps: int, round_to: int | None) -> tp.pruner.MetaPruner:
    """A MetaPruner whose ``steps`` calls go linearly from 0 to the given ratios."""
    with _current_layer(model) as stack:
        try:
            return tp.pruner.MetaPruner(
                model, example, importance=importance(kind), global_pruning=global_pruning,
                pruning_ratio=ratio, pruning_ratio_dict=per_layer or None,
                ignored_layers=ignored, iterative_steps=steps, round_to=round_to)
        except Exception as exc:  # Torch-Pruning raises whatever its tracer hits
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"prune: Torch-Pruning cannot trace the model at "
                              f"{_where(model, stack)}: {first}") from None


def check_runs(model: nn.Module, example: torch.Tensor) -> None:
    """A dependency the tracer missed shows as a shape mismatch: name the layer."""
    with _current_layer(model) as stack, torch.no_grad():
        try:
            model(example)
        except Exception as exc:  # any op can raise on mismatched shapes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"prune: the pruned model fails at {_where(model, stack)} "
                              f"(Torch-Pruning missed a dependency; add it to ignore): "
                              f"{first}") from None


def classifier_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Layers whose output width is the model's output width: the classifier. Removing
    its output channels would remove classes, so it is never pruned on that side."""
    with torch.no_grad():
        out = model(example)
    width = out.shape[1] if out.dim() > 1 else out.shape[0]
    found = [m for m in layers(model).values()
             if isinstance(m, nn.Linear) and m.out_features == width]
    return found or list(layers(model).values())[-1:]


def ignored_layers(model: nn.Module, example: torch.Tensor, config) -> list[nn.Module]:
    """``config.ignore``, the layers ``config.layers`` skips, and the classifier."""
    named = [m for n, m in layers(model).items() if first_match(n, config.ignore) is not None
             or config.policy.resolve(config, n) is None]
    return list({id(m): m for m in named + classifier_layers(model, example)}.values())


def per_layer_ratios(model: nn.Module, config) -> dict[nn.Module, float]:
    """The ratio of each layer a ``layers`` entry sets. Only those: in Torch-Pruning's
    ``pruning_ratio_dict`` a layer leaves the global ranking of ``global_pruning``."""
    out = {}
    for name, module in layers(model).items():
        own = config.policy.resolve(config, name)
        pattern = first_match(name, config.layers)
        if own is not None and pattern is not None and "ratio" in config.layers[pattern]:
            out[module] = own.ratio
    return out


def check_not_emptied(model: nn.Module, ratio: float, per_layer: dict[nn.Module, float],
                      ignored: list[nn.Module], round_to: int | None) -> None:
    """A ratio that keeps no channel of a layer would cut the network in two."""
    skip = {id(m) for m in ignored}
    for name, module in layers(model).items():
        if id(module) in skip:
            continue
        r = per_layer.get(module, ratio)
        channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        kept = int(channels * (1 - r))
        if round_to:
            kept = kept // round_to * round_to
        if r > 0 and kept < 1:
            raise ConfigError(f"prune: ratio {r} would remove every channel of layer {name!r} "
                              f"({channels} channels); use a smaller ratio or ignore it")


def taylor_gradients(model: nn.Module, data: TrainData, batches: int, batch_size: int,
                     seed: int) -> None:
    """First-order Taylor importance reads ``param.grad``: accumulate the loss gradient of
    a few labelled batches on the model as it is now (eval mode: BN statistics stay)."""
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)
    y = data.labels()
    for i in range(batches):
        idx = order[i * batch_size:(i + 1) * batch_size]
        if len(idx) == 0:
            break
        F.cross_entropy(model(data.x[idx]), y[idx]).backward()


def out_channels(model: nn.Module) -> dict[str, int]:
    return {n: (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            for n, m in layers(model).items()}
