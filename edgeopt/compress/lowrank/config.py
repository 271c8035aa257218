"""``LowRankConfig`` (recipe step ``lowrank``) and its handler.

Linear layers and 1x1 convs are split by truncated SVD (svd.py); k x k convs by
Tucker-2 or CP (tucker.py). Ranks come, per layer, from the first ``layers``
pattern that names it (``{"fc": {ranks: 16}}``, core/layer_policy.py), else from
``energy`` or the global ``param_reduction`` budget (ranks.py). Grouped and depthwise convs are left alone, and so is a layer
whose chosen ranks would not save parameters, unless its ranks were given
explicitly. Then, optionally, a short fine-tune distils the original model into
the factorised one.

A pattern is a glob on a layer's qualified name; a pattern naming a container
applies to the layers inside it (``layer3.conv2`` covers ``layer3.conv2.0``,
which is how ``conv_bn`` Sequentials name their conv): the rule of every step's
patterns (core.config.matches).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from edgeopt.compress.distill.finetune import (
    FinetuneOptions,
    finetune,
    finetune_phrase,
    frozen_teacher,
)
from edgeopt.compress.lowrank import ranks as R
from edgeopt.compress.lowrank.ranks import ConvMethod
from edgeopt.compress.lowrank.svd import split_linear, split_pointwise
from edgeopt.compress.lowrank.tucker import cp, tucker2
from edgeopt.core.config import enum_field, first_match, matches
from edgeopt.core.errors import ConfigError
from edgeopt.core.layer_policy import LayerPolicy, deprecated, flow
from edgeopt.core.registry import register
from edgeopt.core.step import DataKind, DataNeed, StepConfig, StepContext, StepRecord, StepResult
from edgeopt.core.train import TrainData

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LowRankConfig(StepConfig):
    """Low-rank factorisation of Linear and Conv2d layers, then optional fine-tuning.

    Set one of ``energy`` (keep the smallest rank holding this fraction of each
    spectrum's squared singular values) or ``param_reduction`` (the whole model
    loses at least this fraction of its parameters), and/or explicit ranks per layer:
    ``layers: {"fc": {ranks: 16}, "layer3.conv2": {ranks: [48, 64]}}`` (Tucker-2:
    [into the core, out of it]). ``layers`` may also set a layer's ``energy``,
    ``conv``, ``tucker_iters`` and ``cp_iters``, or ``skip: true``. The old
    ``ranks: {glob: ranks}`` is read for one release.
    """

    conv: ConvMethod = ConvMethod.TUCKER2
    energy: float | None = None
    param_reduction: float | None = None
    # Explicit ranks of every layer (a layer's, in a layers entry). A mapping is the old
    # per-layer spelling, moved into layers with a DeprecationWarning.
    ranks: int | tuple[int, ...] | dict[str, Any] | None = None
    layers: dict[str, Any] = field(default_factory=dict)
    skip: tuple[str, ...] = ()
    finetune: FinetuneOptions | None = None  # distils from the unfactorised model by default
    tucker_iters: int = 20  # HOOI sweeps refining the truncated-HOSVD start
    cp_iters: int = 25  # ALS sweeps (each is slow: a few already give a usable start)

    needs_training_data: ClassVar[bool] = True
    # param_reduction is one budget over the whole model: not a per-layer field.
    policy: ClassVar[LayerPolicy] = LayerPolicy(
        "lowrank", fields=("conv", "energy", "ranks", "tucker_iters", "cp_iters"))

    def __post_init__(self) -> None:
        enum_field(self, "conv", ConvMethod, "lowrank.conv")
        if isinstance(self.ranks, dict):
            self._ranks_into_layers()
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ConfigError(f"lowrank.energy must be in (0, 1], got {self.energy}")
        if self.param_reduction is not None and not 0.0 < self.param_reduction < 1.0:
            raise ConfigError(f"lowrank.param_reduction must be in (0, 1), "
                              f"got {self.param_reduction}")
        if self.energy is not None and self.param_reduction is not None:
            raise ConfigError("lowrank: set energy or param_reduction, not both")
        if (self.energy is None and self.param_reduction is None and self.ranks is None
                and not self.layers):
            raise ConfigError("lowrank needs energy, param_reduction or ranks")
        if isinstance(self.skip, str):
            object.__setattr__(self, "skip", (self.skip,))
        if isinstance(self.ranks, list):
            object.__setattr__(self, "ranks", tuple(self.ranks))
        if self.ranks is not None:
            values = [self.ranks] if isinstance(self.ranks, int) else list(self.ranks)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):
                raise ConfigError(f"lowrank.ranks must be integers >= 1, got {self.ranks!r}")
        if isinstance(self.finetune, dict):
            object.__setattr__(self, "finetune", FinetuneOptions.from_dict(self.finetune))
        for name in ("tucker_iters", "cp_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"lowrank.{name} must be >= 1, got {getattr(self, name)}")
        for pattern, entry in (self.layers.items() if isinstance(self.layers, dict) else ()):
            if isinstance(entry, dict) and isinstance(entry.get("ranks"), dict):
                raise ConfigError(f"lowrank.layers[{pattern!r}]: ranks are a layer's ranks "
                                  f"(an integer or a list), got {entry['ranks']!r}")
        self.policy.check(self)

    def _ranks_into_layers(self) -> None:
        """The old ``ranks: {glob: ranks}`` -> ``layers: {glob: {ranks: ...}}`` (entries
        already in ``layers`` first: they were written in the new form on purpose)."""
        layers = dict(self.layers) if isinstance(self.layers, dict) else self.layers
        if self.ranks:
            moved = {p: {"ranks": list(v) if isinstance(v, tuple) else v}
                     for p, v in self.ranks.items()}
            deprecated("lowrank", f"ranks: {flow(self.ranks)}", f"layers: {flow(moved)}")
            for pattern, entry in moved.items():
                if isinstance(layers, dict):
                    layers[pattern] = {**entry, **layers.get(pattern, {})}
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "ranks", None)

    def data_need(self) -> DataNeed:
        return DataNeed(DataKind.TRAINING,
                        size=self.finetune.train_size if self.finetune else None)


def _plan(model: nn.Module, config: LowRankConfig
          ) -> tuple[list[tuple[R.Candidate, LowRankConfig]], set[str]]:
    """Candidates with their ranks set, each with the config as it sees it (its
    ``layers`` entry applied), and the names whose ranks were explicit."""
    cands: list[tuple[R.Candidate, LowRankConfig | None]] = []
    for n, m in model.named_modules():
        own = config.policy.resolve(config, n)
        if (c := R.candidate(n, m, (own or config).conv)) is not None:
            cands.append((c, own))
    names = [c.name for c, _ in cands]
    for p in config.skip:
        if not any(matches(n, p) for n in names):
            raise ConfigError(f"lowrank.skip: pattern {p!r} matches no factorisable layer "
                              f"(Linear, Conv2d with groups=1); layers: "
                              f"{', '.join(names) or 'none'}")
    config.policy.warn_unmatched(config, names)
    kept = [(c, own) for c, own in cands
            if own is not None and not any(matches(c.name, p) for p in config.skip)]
    explicit, free = set(), []
    for c, own in kept:
        if own.ranks is not None:
            pattern = first_match(c.name, config.layers)
            where = "lowrank.ranks" if pattern is None else f"lowrank.layers[{pattern!r}]"
            c.ranks = R.check_ranks(c, [own.ranks] if isinstance(own.ranks, int)
                                    else list(own.ranks), where)
            explicit.add(c.name)
        elif own.energy is not None:
            c.ranks = R.ranks_for_energy(c, own.energy)
        elif config.param_reduction is not None:
            free.append(c)
    if config.param_reduction is not None:
        total = sum(p.numel() for p in model.parameters())
        fixed = total - sum(c.original_params for c in free)
        fixed += sum(c.params() - c.original_params for c, _ in kept if c.name in explicit)
        R.meet_budget(free, fixed, math.floor((1.0 - config.param_reduction) * total),
                      total_before=total)
    # A budget layer left at full rank was not needed: it stays as it is (a full-rank
    # CP split would be smaller, but the budget did not ask for its loss).
    budgeted = {c.name for c in free}
    chosen = [(c, own) for c, own in kept if c.ranks and (c.name in explicit or c.saves())
              and not (c.name in budgeted and c.ranks == c.max_ranks)]
    return chosen, explicit


def _factorise(module: nn.Module, c: R.Candidate, config: LowRankConfig) -> tuple[nn.Module,
                                                                                   float | None]:
    if c.kind == "svd":
        split = split_linear if isinstance(module, nn.Linear) else split_pointwise
        return split(module, c.ranks[0]), None
    if c.kind == "tucker2":
        return tucker2(module, c.ranks[0], c.ranks[1], iters=config.tucker_iters)
    return cp(module, c.ranks[0], iters=config.cp_iters)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _check_data(data: Any) -> TrainData:
    if isinstance(data, TrainData):
        return data
    got = "nothing" if data is None else type(data).__name__
    raise ConfigError(f"lowrank.finetune needs training data (TrainData(x, y)); got {got}")


class LowRankRecord(StepRecord):
    def summary(self) -> list[str]:
        lr = self.details
        ranks = ", ".join(f"{n} {v.get('ranks')}" for n, v in lr.get("layers", {}).items())
        return [f"params {lr['params_before']:,} -> {lr['params_after']:,} "
                f"(-{lr.get('param_reduction', 0):.1%}); ranks {ranks}"
                + finetune_phrase(lr.get("finetune"))]


@register(LowRankConfig, step="lowrank")
def factorise(model: nn.Module, config: LowRankConfig, ctx: StepContext) -> StepResult:
    """A factorised copy of ``model`` (the caller's model is not modified)."""
    data, progress = ctx.data, ctx.progress
    if config.finetune is not None:
        data = _check_data(data)
    started = time.perf_counter()
    out = copy.deepcopy(model)
    params_before = sum(p.numel() for p in model.parameters())
    chosen, explicit = _plan(out, config)
    layers: dict[str, dict[str, Any]] = {}
    for c, own in chosen:
        new, err = _factorise(out.get_submodule(c.name), c, own)
        _replace(out, c.name, new)
        layers[c.name] = {
            "kind": c.kind, "shape": list(c.shape), "ranks": list(c.ranks),
            "max_ranks": list(c.max_ranks), "params_before": c.original_params,
            "params_after": sum(p.numel() for p in new.parameters()),
            "energy_kept": [round(e, 6) for e in c.energy()],
            "explicit": c.name in explicit,
        }
        if err is not None:
            layers[c.name]["weight_rel_error"] = round(err, 6)
        log.info("lowrank %s %s %s ranks %s: %d -> %d params", c.name, c.kind, list(c.shape),
                 c.ranks, c.original_params, layers[c.name]["params_after"])
    params_after = sum(p.numel() for p in out.parameters())
    info: dict[str, Any] = {
        "config": config.to_dict(), "layers": layers,
        "params_before": params_before, "params_after": params_after,
        "param_reduction": round(1.0 - params_after / max(params_before, 1), 6),
        "factorise_seconds": round(time.perf_counter() - started, 2),
    }
    if config.finetune is not None:
        # The copy is only needed to distil; finetune() ignores a teacher otherwise.
        teacher = frozen_teacher(model) if config.finetune.distill else None
        result = finetune(out, data, config.finetune, teacher=teacher, progress=progress,
                          desc="lowrank finetune")
        info["finetune"] = {**result.to_dict(), "train_samples": len(data),
                            "distill": config.finetune.distill}
    return StepResult(out.eval(), LowRankRecord("low-rank factorisation", info))
