"""Mixed precision: per-layer weight bit widths chosen under a size budget.

1. Quantize every layer at 8 bits (the base config's activations and options)
   and calibrate once.
2. Sensitivity: for each layer and each candidate width, quantize only that
   layer's weights to the width and measure how far the output moves from the
   float model (KL divergence of the softmax on held-out samples).
3. Allocation: pick one width per layer minimising the summed sensitivity with
   the model's size within the budget: a multiple-choice knapsack, solved
   exactly by dynamic programming over the size in small byte units.
4. Quantize the float model again with the chosen per-layer widths (full PTQ:
   calibration, learned rounding if the base asks for it, bias correction).

The size model counts what the artifact stores per layer: packed weights at
``bits`` per weight, a float32 scale per output channel, and the bias.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from tqdm import tqdm

from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS
from edgeopt.compress.quantize.knapsack import allocate
from edgeopt.compress.quantize.mixed_record import MixedRecord
from edgeopt.compress.quantize.ptq import quantize_ptq
from edgeopt.compress.quantize.spec import QuantConfig, QuantSpec
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepResult


@dataclass(frozen=True, kw_only=True)
class MixedPrecisionConfig(StepConfig):
    """Weight widths per layer, chosen automatically; give ``budget`` (fraction of
    the fp32 size) or ``avg_bits`` (mean bits per weight)."""

    needs_training_data: ClassVar[bool] = True  # labels score the Pareto points if present
    overridable: ClassVar[tuple[str, ...]] = ("budget", "calib_size")

    base: QuantConfig = field(default_factory=QuantConfig)
    candidates: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    budget: float | None = None
    avg_bits: float | None = None
    sensitivity_samples: int = 256
    eval_samples: int = 1000  # held-out samples scoring the policies on the Pareto plot
    pareto_points: int = 8  # budgets between the smallest and largest policy to plot
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ConfigError("mixed precision needs at least one candidate bit width")
        for b in self.candidates:
            QuantSpec(bits=b)  # same range check and message as everywhere else
        if (self.budget is None) == (self.avg_bits is None):
            raise ConfigError("mixed precision needs exactly one of budget (fraction of fp32 "
                              "size, e.g. 0.16) or avg_bits (e.g. 4.5)")
        if self.budget is not None and not 0.0 < self.budget <= 1.0:
            raise ConfigError(f"budget must be a fraction of the fp32 size in (0, 1], "
                              f"got {self.budget}")
        if self.avg_bits is not None and not 2.0 <= self.avg_bits <= 8.0:
            raise ConfigError(f"avg_bits must be in [2, 8], got {self.avg_bits}")

    def override(self, option: str, value) -> MixedPrecisionConfig:
        """``budget`` replaces the recipe's size target (budget or avg_bits);
        ``calib_size`` is the base quantization's."""
        if option == "budget":
            return self.replace(budget=value, avg_bits=None)
        if option == "calib_size":
            return self.replace(base=self.base.override(option, value))
        return super().override(option, value)


# ----------------------------------------------------------------- size model
def layer_bytes(layer: torch.nn.Module, bits: int, per_channel: bool) -> int:
    """Bytes the artifact stores for one layer with ``bits``-bit weights."""
    out = layer.weight.shape[0]
    weights = math.ceil(layer.weight.numel() * bits / 8)
    scales = 4 * (out if per_channel else 1)
    bias = 4 * out if layer.bias is not None else 0
    return weights + scales + bias


def fp32_bytes(gm: fx.GraphModule) -> int:
    return 4 * sum(p.numel() for p in gm.parameters())


# ----------------------------------------------------------------- sensitivity
# A layer's weight scale and zero-point per QuantSpec, filled as the search sets widths.
# Every size measured and every Pareto point sets a whole policy on the same, unchanged
# weights; recomputing each layer's grid (the MSE observer's 36-step search) every time
# was ~90% of a mixed-precision run.
Grids = dict[tuple[str, QuantSpec], tuple[torch.Tensor, torch.Tensor]]


def _set_weight_bits(layer, bits: int | None, original: QuantSpec,
                     grids: Grids | None = None, name: str = "") -> None:
    spec = original if bits is None else dataclasses.replace(original, bits=bits)
    layer.w_spec = spec
    cached = None if grids is None else grids.get((name, spec))
    if cached is None:
        layer.recompute_weight_qparams()
        if grids is not None:
            grids[(name, spec)] = (layer.w_scale.clone(), layer.w_zero_point.clone())
    else:
        layer.w_scale.copy_(cached[0])
        layer.w_zero_point.copy_(cached[1])


def _kl(ref_logp: torch.Tensor, logits: torch.Tensor) -> float:
    return float(F.kl_div(F.log_softmax(logits, 1), ref_logp, log_target=True,
                          reduction="batchmean"))


def sensitivities(qmodel: fx.GraphModule, x: torch.Tensor, ref_logp: torch.Tensor,
                  candidates, progress: bool = True,
                  grids: Grids | None = None) -> dict[str, dict[int, float]]:
    """KL(float || model with only this layer at b bits), per layer and width."""
    layers = leaf_modules(qmodel, QUANT_LAYERS)
    out: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for name, layer in tqdm(layers, desc="sensitivity", disable=not progress, leave=False):
            original = layer.w_spec
            out[name] = {}
            for bits in candidates:
                _set_weight_bits(layer, bits, original, grids, name)
                out[name][bits] = _kl(ref_logp, qmodel(x))
            _set_weight_bits(layer, None, original, grids, name)
    return out


def _apply_policy(qmodel, policy: dict[str, int], originals: dict[str, QuantSpec],
                  grids: Grids | None = None) -> None:
    for name, layer in leaf_modules(qmodel, QUANT_LAYERS):
        _set_weight_bits(layer, policy[name], originals[name], grids, name)


def _restore(qmodel, originals: dict[str, QuantSpec], grids: Grids | None = None) -> None:
    """Back to the 8-bit baseline every sensitivity is measured against."""
    _apply_policy(qmodel, {n: s.bits for n, s in originals.items()}, originals, grids)


def _score(qmodel, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((qmodel(x).argmax(1) == y).float().mean() * 100)


# ----------------------------------------------------------------- handler
def _split_data(data, config: MixedPrecisionConfig):
    """Calibration images, and held-out (x, labels) scoring the policies; without
    labels the float model's own predictions stand in (agreement, not accuracy)."""
    x = data.x if hasattr(data, "x") else data
    y = getattr(data, "y", None)
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    n = x.shape[0]
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(n)
    n_calib = min(config.base.calib_size, n)
    held = order[n_calib:] if n - n_calib >= 32 else order  # tiny sets: reuse
    held = held[: max(config.eval_samples, config.sensitivity_samples)]
    calib = x[torch.from_numpy(np.sort(order[:n_calib]))]
    labels = None if y is None else torch.as_tensor(np.asarray(y)[held]).long()
    return calib, x[torch.from_numpy(held)], labels


@register(MixedPrecisionConfig, step="mixed_precision")
def quantize_mixed(model, config: MixedPrecisionConfig, ctx: StepContext) -> StepResult:
    progress = ctx.progress
    calib, held_x, held_y = _split_data(ctx.data, config)
    calib_ctx = dataclasses.replace(ctx, calibration=calib, train=None)
    base8 = dataclasses.replace(config.base, weights=dataclasses.replace(config.base.weights,
                                                                         bits=8),
                                adaround=None, bias_correction=False)
    q8 = quantize_ptq(model, base8, calib_ctx).model
    float_gm = canonical_copy(model, calib[:2])
    fold_batchnorm(float_gm)
    with torch.no_grad():
        ref_logits = float_gm(held_x)
    sens_x = held_x[: config.sensitivity_samples]
    ref_logp = F.log_softmax(ref_logits[: sens_x.shape[0]], 1)
    labels = held_y if held_y is not None else ref_logits.argmax(1)

    layers = leaf_modules(q8, QUANT_LAYERS)
    originals = {n: m.w_spec for n, m in layers}
    grids: Grids = {}
    size_of = ctx.size_model
    fp32 = (size_of and size_of(float_gm)) or fp32_bytes(float_gm)
    if config.avg_bits is not None:
        # A constraint on the weights' bits only: sizes are weight bits / 8.
        sizes = {n: {b: m.weight.numel() * b / 8 for b in config.candidates} for n, m in layers}
        budget_bytes = sum(m.weight.numel() for _, m in layers) * config.avg_bits / 8
        what = f"average of {config.avg_bits:g} bits per weight"
        measure = None
    else:
        sizes = {n: {b: layer_bytes(m, b, m.w_spec.per_channel) for b in config.candidates}
                 for n, m in layers}
        budget_bytes = config.budget * fp32
        what = f"budget {config.budget:g}x of the fp32 model file ({fp32:,} B)"

        def measure(policy):
            _apply_policy(q8, policy, originals, grids)
            try:
                return size_of(q8)
            finally:
                _restore(q8, originals, grids)

        if size_of is None:
            measure = None  # no backend measures: the per-layer estimate alone
        else:
            sizes = _measured_sizes(sizes, measure)

    smallest_policy = {n: min(config.candidates) for n in sizes}
    smallest = (measure and measure(smallest_policy)) or sum(
        sizes[n][b] for n, b in smallest_policy.items())
    if smallest > budget_bytes:
        ratio = f" = {smallest / fp32:.3f}x of fp32" if measure else ""
        raise ConfigError(
            f"mixed precision: {what} cannot be met; the smallest policy (every layer at "
            f"{min(config.candidates)} bits) is {int(smallest):,} B{ratio}")

    costs = sensitivities(q8, sens_x, ref_logp, config.candidates, progress=progress,
                          grids=grids)
    policy, size = _fit_budget(costs, sizes, budget_bytes, measure)
    pareto = _pareto(q8, costs, sizes, config, held_x, labels, policy, measure, fp32, grids)
    final_cfg = dataclasses.replace(
        config.base,
        layers={**{_escape(n): {"bits": b} for n, b in policy.items()}, **config.base.layers},
    )
    final = quantize_ptq(model, final_cfg, calib_ctx)
    mixed = {
        "target": what, "budget_bytes": int(budget_bytes), "policy": policy,
        "fp32_bytes": int(fp32), "bytes": int(size), "ratio": size / fp32,
        "avg_bits": sum(m.weight.numel() * policy[n] for n, m in layers)
        / sum(m.weight.numel() for _, m in layers),
        "sensitivity": {n: {str(b): round(c, 6) for b, c in d.items()} for n, d in costs.items()},
        "pareto": pareto,
        "scored_on": f"{held_x.shape[0]} held-out samples, "
                     + ("top-1 accuracy" if held_y is not None else "agreement with fp32"),
    }
    record = MixedRecord("mixed precision ptq", {**final.record.details, "mixed": mixed})
    return StepResult(final.model, record)


def _measured_sizes(sizes: dict[str, dict[int, float]], measure) -> dict[str, dict[int, float]]:
    """Per-layer sizes as the artifact really stores them: the change in the measured
    file when only that layer changes width. The exporter may keep a small layer in
    int8 when unpacking nodes would cost more than packing saves, so the plain
    bits x weights estimate can promise savings that never materialise."""
    top = max(next(iter(sizes.values())))
    base_policy = {n: top for n in sizes}
    base = measure(base_policy)
    return {n: {b: sizes[n][top] + (measure({**base_policy, n: b}) - base if b != top else 0)
                for b in per} for n, per in sizes.items()}


def _fit_budget(costs, sizes, budget_bytes, measure, tries: int = 40):
    """The allocation under the budget, checked against the measured artifact size.

    The per-layer sizes leave out the container's fixed overhead (graph, names),
    which is measured once and taken off the budget; when the real file is still
    over (packing choices interact), the budget is tightened by the excess."""
    unit = 16
    top = max(next(iter(sizes.values())))
    offset = 0
    if measure:
        offset = measure({n: top for n in sizes}) - sum(s[top] for s in sizes.values())
    target = budget_bytes - max(offset, 0)
    for _ in range(tries):
        policy = allocate(costs, sizes, target)
        if policy is None:
            break
        size = measure(policy) if measure else sum(sizes[n][b] for n, b in policy.items())
        if size <= budget_bytes:
            return policy, size
        target -= max(size - budget_bytes, unit)
    raise ConfigError(f"mixed precision: no policy found within {int(budget_bytes):,} B once "
                      f"the artifact's overhead is counted; raise the budget")


def _escape(name: str) -> str:
    # Layer names become glob patterns in QuantConfig.layers: match them literally.
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _pareto(q8, costs, sizes, config, x, y, chosen, measure, fp32: int,
            grids: Grids | None = None) -> list[dict]:
    """Simulated accuracy against size for uniform widths and for the allocation
    at budgets spanning the feasible range (one calibration, no per-policy bias
    correction: a map of the trade-off, not the final figure). Sizes are the
    measured artifact bytes when a backend can measure them."""
    originals = {n: m.w_spec for n, m in leaf_modules(q8, QUANT_LAYERS)}
    policies: list[tuple[str, dict[str, int]]] = [
        (f"uniform {b}-bit", {n: b for n in costs}) for b in config.candidates
    ]
    lo = sum(min(s.values()) for s in sizes.values())
    hi = sum(max(s.values()) for s in sizes.values())
    for budget in np.linspace(lo, hi, config.pareto_points + 2)[1:-1]:
        p = allocate(costs, sizes, budget)
        if p is not None:
            policies.append(("mixed", p))
    policies.append(("chosen", chosen))
    points = []
    for label, p in policies:
        size = (measure(p) if measure else None) or sum(sizes[n][b] for n, b in p.items())
        _apply_policy(q8, p, originals, grids)
        points.append({"label": label, "bytes": int(size), "ratio": size / fp32,
                       "accuracy": _score(q8, x, y), "policy": p})
    _restore(q8, originals, grids)
    return points
