"""Outlier channel splitting (Zhao et al. 2019, "Improving Neural Network Quantization
without Retraining using Outlier Channel Splitting"), a float-model step before quantization.

A few large weights set a layer's quantization range and leave most weights on a handful
of levels. Splitting input channel c of layer L halves its weights and appends the halved
column again: ``W[:, c] x_c = W[:, c]/2 x_c + W[:, c]/2 x_c``. The duplicate input is made
by duplicating output channel c of the producer layer (weights and bias), so the network
computes the same function through any elementwise activation (ReLU, ReLU6, ...) and the
outlier is halved. Repeated on the largest remaining outlier until the layer's
max/percentile ratio drops below the threshold or the channel budget is spent; the
splits after the last one that shrank the ratio are dropped.

Only where that duplicate can be made exactly: the producer is an ungrouped conv (or a
linear layer, for a linear consumer) whose output reaches only L, through at most one
elementwise activation. Residual adds, depthwise layers and shared producers are skipped
and reported with the reason.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.fx as fx
from torch import nn

from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.core.calib import calibration_batches
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.core.layer_policy import SKIP, LayerPolicy, deprecated, flow
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult

log = logging.getLogger(__name__)
aten = torch.ops.aten

# Ops that act on every value alone: a duplicated channel stays a duplicate through them.
ELEMENTWISE = {
    aten.relu.default, aten.relu6.default, aten.hardtanh.default, aten.leaky_relu.default,
    aten.sigmoid.default, aten.tanh.default, aten.silu.default, aten.gelu.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.clamp.default,
}


@dataclass(frozen=True, kw_only=True)
class SplitConfig(StepConfig):
    """Split the input channels that hold a layer's weight outliers.

    ``layers`` overrides fields per consumer layer (core/layer_policy.py, first match
    wins): ``{"head.*": {threshold: 3.0}}``; ``{skip: true}`` leaves a layer unsplit.
    """

    policy: ClassVar[LayerPolicy] = LayerPolicy(
        "split", fields=("per_channel", "percentile", "threshold", "expand_ratio"))

    # How the weights will be quantized: per-tensor looks at the whole tensor's range,
    # per-channel at the worst output channel's (where the outlier sets that row's scale).
    per_channel: bool = False
    percentile: float = 99.0  # outlier ratio = max|w| / this percentile of |w|
    threshold: float = 2.0  # split layers whose ratio exceeds this
    expand_ratio: float = 0.05  # at most ceil(expand_ratio * in_channels) extra channels
    # glob -> {field: value}. A list of globs (the layers to consider) is read for one
    # release: the Union lets from_dict pass it through to __post_init__.
    layers: dict[str, Any] | tuple[str, ...] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 50.0 <= self.percentile < 100.0:
            raise ConfigError(f"split.percentile must be in [50, 100), got {self.percentile}")
        if not self.threshold > 1.0:
            raise ConfigError(f"split.threshold must be > 1, got {self.threshold}")
        if not 0.0 < self.expand_ratio <= 1.0:
            raise ConfigError(f"split.expand_ratio must be in (0, 1], got {self.expand_ratio}")
        if isinstance(self.layers, (list, tuple, str)):
            object.__setattr__(self, "layers", _from_globs(self.layers))
        self.policy.check(self)


def _from_globs(globs: Any) -> dict[str, Any]:
    """The old ``layers: [globs]`` (consider only these) as the policy: each glob with the
    global fields, then every other layer skipped. ``["*"]`` was the default: ``{}``."""
    globs = (globs,) if isinstance(globs, str) else tuple(globs)
    new: dict[str, Any] = {} if "*" in globs else {g: {} for g in globs}
    if new:
        new["*"] = {SKIP: True}
    if globs != ("*",):
        deprecated("split", f"layers: {flow(list(globs))}", f"layers: {flow(new)}")
    return new


def outlier_ratio(weight: torch.Tensor, percentile: float, per_channel: bool) -> float:
    """max|w| / percentile(|w|): per tensor, or the worst output channel's."""
    a = weight.detach().abs().flatten(1) if per_channel else weight.detach().abs().reshape(1, -1)
    q = torch.quantile(a, percentile / 100.0, dim=1).clamp_min(1e-12)
    return float((a.amax(1) / q).max())


def _outlier_channel(weight: torch.Tensor, percentile: float, per_channel: bool) -> int:
    """The input channel holding the outlier that sets the range to shrink."""
    a = weight.detach().abs()
    if per_channel:
        rows = a.flatten(1)
        q = torch.quantile(rows, percentile / 100.0, dim=1).clamp_min(1e-12)
        a = a[int((rows.amax(1) / q).argmax())].unsqueeze(0)
    per_in = a.transpose(0, 1).flatten(1).amax(1)
    return int(per_in.argmax())


def _producer(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node | None, str]:
    """(producer layer node, "") when ``node``'s input channels can be split, else (None, why)."""
    layer = gm.get_submodule(node.target)
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return None, "consumer is a grouped/depthwise conv"
    src = node.args[0]
    if src.op == "call_function" and src.target in ELEMENTWISE:
        if len(src.users) != 1:
            return None, f"activation {src.name} feeds {len(src.users)} nodes (e.g. a residual)"
        src = src.args[0]
    if not isinstance(src, fx.Node) or src.op != "call_module":
        what = getattr(src, "target", src)
        if what is aten.add.Tensor:
            return None, "input is a residual add"
        return None, f"input comes from {getattr(what, '__name__', what)}, not a layer"
    prod = gm.get_submodule(src.target)
    if type(prod) is not type(layer):
        return None, f"producer {src.target} is a {type(prod).__name__}"
    if isinstance(prod, nn.Conv2d) and prod.groups != 1:
        return None, f"producer {src.target} is a grouped/depthwise conv"
    if len(src.users) != 1:
        return None, f"producer {src.target} output feeds {len(src.users)} nodes"
    return src, ""


def _rebuilt(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    if isinstance(layer, nn.Linear):
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        new = nn.Conv2d(weight.shape[1], weight.shape[0], layer.kernel_size, layer.stride,
                        layer.padding, layer.dilation, bias=bias is not None,
                        padding_mode=layer.padding_mode)
    new.weight = nn.Parameter(weight)
    if bias is not None:
        new.bias = nn.Parameter(bias)
    return new.eval()


def _split_layer(gm, name: str, prod_name: str, config: SplitConfig) -> dict | None:
    layer, prod = gm.get_submodule(name), gm.get_submodule(prod_name)
    w = layer.weight.detach().clone()
    pw = prod.weight.detach().clone()
    pb = None if prod.bias is None else prod.bias.detach().clone()
    ratio0 = best = outlier_ratio(w, config.percentile, config.per_channel)
    range0 = float(w.abs().max())
    budget = math.ceil(config.expand_ratio * w.shape[1])
    # Split greedily to the budget and keep the shortest prefix with the best ratio: a
    # split can leave the ratio flat (the outlier's twin from an earlier split, or an equal
    # outlier elsewhere, still sets the range) and only the next one pays off.
    steps: list[tuple[int, torch.Tensor, float]] = []
    ratio = ratio0
    while ratio > config.threshold and len(steps) < budget:
        c = _outlier_channel(w, config.percentile, config.per_channel)
        half = w[:, c:c + 1] / 2
        w = torch.cat([w[:, :c], half, w[:, c + 1:], half], dim=1)
        ratio = outlier_ratio(w, config.percentile, config.per_channel)
        steps.append((c, w, ratio))
    keep = 0
    for i, (_, _, r) in enumerate(steps, 1):
        if r < best - 1e-6:
            best, keep = r, i
    channels = [c for c, _, _ in steps[:keep]]
    if not channels:
        return None
    w = steps[keep - 1][1]
    for c in channels:
        pw = torch.cat([pw, pw[c:c + 1]])
        pb = None if pb is None else torch.cat([pb, pb[c:c + 1]])
    ratio = best
    gm.set_submodule(name, _rebuilt(layer, w, None if layer.bias is None
                                    else layer.bias.detach().clone()))
    gm.set_submodule(prod_name, _rebuilt(prod, pw, pb))
    return {
        "producer": prod_name, "ratio_before": ratio0, "ratio_after": ratio,
        "range_before": range0, "range_after": float(w.abs().max()),
        "channels_added": len(channels), "channels": channels,
        "in_channels": [w.shape[1] - len(channels), w.shape[1]],
    }


class SplitRecord(StepRecord):
    def summary(self) -> list[str]:
        split = self.details["split"]
        if not split:
            return []
        return ["split " + ", ".join(f"{k} (+{v['channels_added']} ch)" for k, v in split.items())]


@register(SplitConfig, step="split_channels")
def split_channels(model, config: SplitConfig, ctx: StepContext) -> StepResult:
    """Split outlier channels of ``model``; returns a BN-folded canonical GraphModule."""
    example = None
    data = ctx.inputs()
    if data is not None:
        example = calibration_batches(data, size=2, batch_size=2)[0]
    gm = canonical_copy(model, example)
    folded = fold_batchnorm(gm)
    nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    split, skipped = {}, {}
    layers = leaf_modules(gm)
    config.policy.warn_unmatched(config, [name for name, _ in layers])
    for name, layer in layers:
        own = config.policy.resolve(config, name)
        if own is None:
            continue
        ratio = outlier_ratio(layer.weight, own.percentile, own.per_channel)
        if ratio <= own.threshold:
            continue
        prod, why = _producer(gm, nodes[name])
        if prod is None:
            skipped[name] = {"ratio": ratio, "reason": why}
            continue
        done = _split_layer(gm, name, str(prod.target), own)
        if done is None:
            skipped[name] = {"ratio": ratio, "reason": "no split shrinks the outlier ratio"}
            continue
        split[name] = done
        log.info("split_channels: %s ratio %.2f -> %.2f, range %.3g -> %.3g, +%d input "
                 "channels (duplicated from %s)", name, done["ratio_before"],
                 done["ratio_after"], done["range_before"], done["range_after"],
                 done["channels_added"], done["producer"])
    for name, info in skipped.items():
        log.info("split_channels: %s skipped (ratio %.2f): %s", name, info["ratio"],
                 info["reason"])
    gm.graph.lint()
    gm.recompile()
    details = {"split": split, "skipped": skipped, "folded_bn": folded,
               "config": config.to_dict()}
    return StepResult(gm.eval(), SplitRecord("split_channels", details))
