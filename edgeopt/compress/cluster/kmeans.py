"""Weight clustering (Han et al. 2016, "Deep Compression"): the handler for ``ClusterConfig``.

canonical copy -> fold BN -> per layer, 1-D k-means on the weights -> swap in
``ClusteredConv2d``/``ClusteredLinear`` -> optional centroid fine-tuning.

* BN is folded first: folding afterwards would scale every output channel by its
  own factor and break the sharing (k values per layer would become k per channel).
* Linear initialisation (centroids evenly spaced between the smallest and largest
  weight) is the default: Han et al. found it beats density and random init because
  it keeps centroids on the few large weights, which matter most.
* Fine-tuning trains the centroids (the summed gradient of their weights), the
  biases and any layer left unclustered, by distillation from the model as it was
  before clustering (labels, when given, add cross-entropy). Codes never change.
"""

from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.fx as fx
from torch import nn

from edgeopt.compress.cluster.modules import CLUSTERED_LAYERS, clustered
from edgeopt.compress.distill.finetune import (
    FinetuneOptions,
    finetune,
    finetune_phrase,
    frozen_teacher,
)
from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS
from edgeopt.core.calib import calibration_batches
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.config import enum_field
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.core.layer_policy import LayerPolicy
from edgeopt.core.registry import register
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult
from edgeopt.core.train import TrainData

MAX_CLUSTERS = 256  # codes are stored in at most 8 bits


class ClusterInit(str, Enum):
    LINEAR = "linear"  # evenly spaced over [min, max] (Han et al.'s recommendation)
    DENSITY = "density"  # quantiles of the weights
    KMEANS_PP = "kmeans++"  # seeded k-means++ sampling


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(StepConfig):
    """Share ``clusters`` values per layer (codes of log2(clusters) bits + a float table).

    ``layers`` overrides fields per layer (core/layer_policy.py, first match wins):
    ``{"fc*": {clusters: 8}}``; ``{clusters: null}`` or ``{skip: true}`` leaves the
    layer unclustered. Layers with fewer than ``min_weights``
    weights stay float: their table and unpack ops would cost more than they save.
    ``finetune`` trains the centroids afterwards (distillation from the unclustered
    model by default); ``train_biases`` lets the biases move with them.
    """

    needs_training_data: ClassVar[bool] = True
    policy: ClassVar[LayerPolicy] = LayerPolicy(
        "cluster", fields=("clusters", "init", "iters", "seed"), null_skips=("clusters",))

    clusters: int = 16
    # glob -> {field: value}; {glob: count} is read for one release (DeprecationWarning)
    layers: dict[str, Any] = field(default_factory=dict)
    init: ClusterInit = ClusterInit.LINEAR
    iters: int = 50  # Lloyd iterations at most (1-D k-means converges in a few dozen)
    min_weights: int = 256
    seed: int = 0  # k-means++ sampling only (the training subset has the run's data seed)
    finetune: FinetuneOptions | None = None
    train_biases: bool = True

    def __post_init__(self) -> None:
        enum_field(self, "init", ClusterInit, "cluster.init")
        _check_count("cluster.clusters", self.clusters)
        if self.iters < 1:
            raise ConfigError(f"cluster.iters must be >= 1, got {self.iters}")
        if self.min_weights < 0:
            raise ConfigError(f"cluster.min_weights must be >= 0, got {self.min_weights}")
        object.__setattr__(self, "layers", self.policy.from_scalars(self.layers, "clusters"))
        self.policy.check(self)

    def for_layer(self, name: str) -> int | None:
        """The layer's cluster count, or None to leave it unclustered."""
        own = self.policy.resolve(self, name)
        return None if own is None else own.clusters

    def check_patterns(self, names: list[str]) -> None:
        """Warn about patterns that match no layer, listing the layer names (as quantize)."""
        self.policy.warn_unmatched(self, names)


def _check_count(where: str, k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_CLUSTERS:
        raise ConfigError(f"{where} must be an integer in 2..{MAX_CLUSTERS}, got {k!r}")


# --------------------------------------------------------------------------- 1-D k-means


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of each value; ``centroids`` ascending."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(x, mids)


def init_centroids(x: torch.Tensor, k: int, init: ClusterInit, seed: int = 0) -> torch.Tensor:
    """``k`` starting centroids (ascending) for the flat values ``x``."""
    if init is ClusterInit.LINEAR:
        return torch.linspace(float(x.min()), float(x.max()), k, dtype=x.dtype)
    if init is ClusterInit.DENSITY:
        return torch.quantile(x, (torch.arange(k, dtype=x.dtype) + 0.5) / k).sort().values
    gen = torch.Generator().manual_seed(seed)
    chosen = [x[torch.randint(len(x), (1,), generator=gen)]]
    d2 = (x - chosen[0]) ** 2
    for _ in range(k - 1):
        total = d2.sum()
        if total > 0:
            i = torch.multinomial(d2 / total, 1, generator=gen)
        else:  # fewer distinct values than clusters: duplicates are harmless
            i = torch.randint(len(x), (1,), generator=gen)
        chosen.append(x[i])
        d2 = torch.minimum(d2, (x - x[i]) ** 2)
    return torch.cat(chosen).sort().values


def kmeans_1d(weight: torch.Tensor, k: int, *, init: ClusterInit = ClusterInit.LINEAR,
              iters: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm on the values of ``weight``: (k float32 centroids ascending,
    int64 codes of ``weight``'s shape). An empty cluster keeps its centroid (unused)."""
    # float64: the means of ~1e5 small values drift in float32.
    x = weight.detach().reshape(-1).double()
    c = init_centroids(x, k, init, seed)
    for _ in range(iters):
        codes = assign(x, c)
        sums = torch.zeros(k, dtype=x.dtype).index_add_(0, codes, x)
        counts = torch.bincount(codes, minlength=k)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c).sort().values
        if torch.equal(new, c):
            break
        c = new
    c = c.float()
    return c, assign(weight.detach().reshape(-1).float(), c).reshape(weight.shape)


def squared_error(weight: torch.Tensor, centroids: torch.Tensor, codes: torch.Tensor) -> float:
    return float(((weight.detach() - centroids[codes]) ** 2).sum())


# --------------------------------------------------------------------------- the handler


def _train_data(data) -> TrainData | None:
    if data is None or isinstance(data, TrainData):
        return data
    # Unlabelled inputs (an array or an iterable of batches): distillation still works.
    return TrainData(x=torch.cat(calibration_batches(data, size=sys.maxsize)))


def _cluster_layers(gm: fx.GraphModule, config: ClusterConfig) -> tuple[dict, dict]:
    layers = leaf_modules(gm)
    names = [name for name, _ in layers]
    config.check_patterns(names)
    done, skipped = {}, {}
    for name, mod in layers:
        own, n = config.policy.resolve(config, name), mod.weight.numel()
        if own is None:
            skipped[name] = "skipped by pattern"
            continue
        k = own.clusters
        if n < config.min_weights:
            skipped[name] = f"{n} weights < min_weights {config.min_weights}"
            continue
        if n < k:
            raise ConfigError(f"cluster: layer {name} has {n} weights, fewer than its {k} "
                              f"clusters; lower the count for it in layers or skip it")
        centroids, codes = kmeans_1d(mod.weight, k, init=own.init, iters=own.iters,
                                     seed=own.seed)
        sse = squared_error(mod.weight, centroids, codes)
        gm.set_submodule(name, clustered(mod, centroids, codes))
        done[name] = {"clusters": k, "weights": n, "used": int(codes.unique().numel()),
                      "mse": sse / n}
    return done, skipped


def _finetune(gm: fx.GraphModule, teacher_src: nn.Module, data: TrainData,
              config: ClusterConfig, progress: bool) -> dict[str, Any]:
    options = config.finetune
    assert options is not None
    trainable = {p: p.requires_grad for p in gm.parameters()}
    if not config.train_biases:
        for mod in gm.modules():
            if isinstance(mod, CLUSTERED_LAYERS) and mod.bias is not None:
                mod.bias.requires_grad_(False)
    teacher = frozen_teacher(teacher_src) if options.distill else None
    result = finetune(gm, data, options, teacher=teacher, progress=progress,
                      desc="cluster finetune")
    for p, flag in trainable.items():
        p.requires_grad_(flag)
    for mod in gm.modules():
        if isinstance(mod, CLUSTERED_LAYERS):
            mod.sync_weight()  # .weight readers see the trained centroids
    return {**result.to_dict(), "train_samples": len(data), "distill": options.distill}


class ClusterRecord(StepRecord):
    def summary(self) -> list[str]:
        c = self.details
        ks = sorted({v["clusters"] for v in c.get("layers", {}).values()})
        return [f"{len(c.get('layers', {}))} layers clustered to "
                f"{'/'.join(map(str, ks)) or '-'} shared values "
                f"({c.get('fraction_clustered', 0):.0%} of weights)"
                + finetune_phrase(c.get("finetune"))]


@register(ClusterConfig, step="cluster")
def cluster_weights(model, config: ClusterConfig, ctx: StepContext) -> StepResult:
    train, progress = _train_data(ctx.data), ctx.progress
    if config.finetune is not None and train is None:
        raise ConfigError("cluster.finetune needs training data (pass data=..., or set "
                          "finetune: null)")
    gm = canonical_copy(model, None if train is None else train.x[:2])
    if any(isinstance(m, QUANT_LAYERS) for m in gm.modules()):
        raise ConfigError("cluster works on float weights: put the cluster step before "
                          "quantize")
    folded = fold_batchnorm(gm)
    before = copy.deepcopy(gm) if config.finetune is not None else None
    layers, skipped = _cluster_layers(gm, config)
    if not layers:
        warnings.warn("cluster: no layer was clustered (all skipped or below min_weights)",
                      stacklevel=2)
    tuned = None
    if config.finetune is not None and layers:
        tuned = _finetune(gm, before, train, config, progress)
    total = sum(m.weight.numel() for _, m in leaf_modules(gm))
    clustered_n = sum(info["weights"] for info in layers.values())
    # Every layer still computes in float: the precision compile reads.
    gm.meta.setdefault("edgeopt", {}).setdefault(
        "precision", {name: "fp32" for name, _ in leaf_modules(gm)})
    details = {
        "layers": layers,
        "skipped": skipped,
        "weights_clustered": clustered_n,
        "weights_total": total,
        "fraction_clustered": round(clustered_n / max(1, total), 4),
        "folded_bn": folded,
        "finetune": tuned,
        "config": config.to_dict(),
    }
    return StepResult(gm.eval(), ClusterRecord("weight clustering", details))


