"""Which layers can be factorised, what each rank costs, and how ranks are chosen.

A layer is a ``Candidate``: its factorisation ``kind``, one singular-value
spectrum per rank it has (one for a matrix split, two for Tucker-2, one for CP)
and a parameter formula. Rank selection is plain arithmetic on those spectra,
kept apart from the modules that do the splitting (svd.py, tucker.py).

Energy of a spectrum ``s`` kept at rank ``r``: ``sum(s[:r]**2) / sum(s**2)``.
For Tucker-2 the spectra are those of the weight's mode-0 (output channels) and
mode-1 (input channels) unfoldings: truncating each keeps that fraction of the
energy along that mode. CP has no such spectrum of its own; its rank is read
from the larger of the two mode spectra (a CP rank is at least every
multilinear rank), which makes "energy" a heuristic there, not a guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from edgeopt.core.errors import ConfigError


class ConvMethod(str, Enum):
    TUCKER2 = "tucker2"  # 1x1 -> kxk core -> 1x1 (Kim et al. 2016)
    CP = "cp"  # 1x1 -> depthwise kx1 -> depthwise 1xk -> 1x1 (Lebedev et al. 2015)


@dataclass
class Candidate:
    name: str
    kind: str  # "svd" (Linear, 1x1 conv), "tucker2" or "cp"
    shape: tuple[int, ...]  # the weight's shape
    bias: bool
    spectra: list[torch.Tensor]  # squared singular values, descending, one per rank
    max_ranks: list[int]
    ranks: list[int] = field(default_factory=list)

    @property
    def original_params(self) -> int:
        return math.prod(self.shape) + (self.shape[0] if self.bias else 0)

    def params(self, ranks: list[int] | None = None) -> int:
        """Parameters of the factorised layer at ``ranks`` (bias included)."""
        r = ranks or self.ranks
        out, cin = self.shape[0], self.shape[1]
        bias = out if self.bias else 0
        if self.kind == "svd":
            return r[0] * (cin * math.prod(self.shape[2:]) + out) + bias
        kh, kw = self.shape[2], self.shape[3]
        if self.kind == "tucker2":
            r_in, r_out = r
            return cin * r_in + r_in * r_out * kh * kw + r_out * out + bias
        return r[0] * (cin + kh + kw + out) + bias  # cp

    def energy(self, ranks: list[int] | None = None) -> list[float]:
        """Fraction of each spectrum's energy kept (for CP: of the proxy spectrum)."""
        r = ranks or self.ranks
        return [float(s[: min(k, len(s))].sum() / s.sum()) for s, k in zip(self.spectra, r)]

    def saves(self) -> bool:
        return self.params() < self.original_params

    def effective(self, ranks: list[int] | None = None) -> int:
        """Parameters this layer adds to the model: factorised only below full rank and
        only where that is smaller (how the budget counts a free layer)."""
        r = ranks or self.ranks
        if r == self.max_ranks:
            return self.original_params
        return min(self.params(r), self.original_params)


def _sq_singular(mat: torch.Tensor) -> torch.Tensor:
    s = torch.linalg.svdvals(mat.detach().double())
    return (s * s).clamp_min(1e-300)  # an all-zero layer must not divide by zero


def candidate(name: str, module: nn.Module, conv: ConvMethod) -> Candidate | None:
    """The factorisation a layer gets, or None when it has none (grouped/depthwise convs)."""
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return None
    w = module.weight
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        return Candidate(name, "svd", tuple(w.shape), bias, [_sq_singular(w)], [min(w.shape)])
    if module.groups != 1:
        return None
    out, cin, kh, kw = w.shape
    if kh * kw == 1:
        return Candidate(name, "svd", tuple(w.shape), bias, [_sq_singular(w.reshape(out, cin))],
                         [min(out, cin)])
    s_out = _sq_singular(w.reshape(out, -1))
    s_in = _sq_singular(w.transpose(0, 1).reshape(cin, -1))
    if conv is ConvMethod.TUCKER2:
        # Ranks in data-flow order: [into the core, out of the core].
        return Candidate(name, "tucker2", tuple(w.shape), bias, [s_in, s_out], [cin, out])
    proxy = s_out if len(s_out) >= len(s_in) else s_in
    # CP ranks are capped at the proxy spectrum's length (the largest multilinear rank):
    # the true CP rank can be higher, but ALS beyond it is slow and the energy rule has
    # nothing left to say there.
    return Candidate(name, "cp", tuple(w.shape), bias, [proxy], [len(proxy)])


def energy_rank(sq: torch.Tensor, energy: float) -> int:
    """The smallest rank whose squared singular values hold ``energy`` of the total."""
    frac = torch.cumsum(sq, 0) / sq.sum()
    # A small tolerance so that energy=1.0 is met despite rounding in the cumulative sum.
    return min(int((frac < energy - 1e-12).sum()) + 1, len(sq))


def ranks_for_energy(c: Candidate, energy: float) -> list[int]:
    return [min(energy_rank(s, energy), m) for s, m in zip(c.spectra, c.max_ranks)]


def check_ranks(c: Candidate, ranks: list[int], where: str) -> list[int]:
    """Explicit ranks as given in the config, checked against the layer; ``where``
    names the option they came from (``lowrank.layers['fc']``)."""
    if len(ranks) == 1 and len(c.max_ranks) == 2:
        ranks = ranks * 2
    if len(ranks) != len(c.max_ranks):
        raise ConfigError(f"{where}: layer {c.name} ({c.kind}, shape "
                          f"{list(c.shape)}) takes {len(c.max_ranks)} rank(s), got {ranks}")
    for r, m in zip(ranks, c.max_ranks):
        if not 1 <= r <= m:
            raise ConfigError(f"{where}: rank {r} out of range for layer "
                              f"{c.name} ({c.kind}, shape {list(c.shape)}): valid 1..{m} "
                              f"(max ranks {c.max_ranks})")
    return list(ranks)


def meet_budget(free: list[Candidate], fixed_params: int, target: int, *,
                total_before: int | None = None) -> None:
    """Lower the ranks of ``free`` in place until the model has at most ``target`` params.

    ``fixed_params`` counts every parameter outside ``free``. Greedy: start at full
    rank, where a layer counts as unfactorised, and repeatedly drop the one rank (of
    any layer and mode) with the least relative energy lost, ``s_r**2 / sum s**2``,
    per parameter saved. A layer's first step saves what splitting it saves: for CP,
    whose full-rank form is already smaller, that is a lot, so big layers are split
    first and small ones only if the budget needs them. Later steps save the drop in
    the factorised size, also while a Tucker-2 layer is still no smaller than the
    original, so the greedy walks a layer down to the point where it pays. Raises a
    one-line ``ConfigError`` with the best reachable total when even rank 1 everywhere
    does not meet ``target``.
    """
    def total() -> int:
        return fixed_params + sum(c.effective() for c in free)

    for c in free:
        c.ranks = list(c.max_ranks)
    floor = fixed_params + sum(c.effective([1] * len(c.ranks)) for c in free)
    if floor > target:
        drop = f", -{100 * (1 - floor / total_before):.1f}%" if total_before else ""
        raise ConfigError(f"lowrank.param_reduction: cannot be met: the best reachable is "
                          f"{floor:,} parameters{drop} (target {target:,}) with every free "
                          f"layer at rank 1")
    current = total()
    while current > target:
        best: tuple[float, Candidate, int] | None = None
        for c in free:
            for mode, r in enumerate(c.ranks):
                if r <= 1:
                    continue
                trial = list(c.ranks)
                trial[mode] -= 1
                raw = c.params() - c.params(trial)
                # The first step of a layer saves what splitting it saves (CP); every
                # later one the factorised size's drop, also while that is not yet a
                # saving (Tucker-2 walking down to where it pays). Counting only the
                # model's saving there would make the crossing step look dear and
                # push the greedy to cut other layers deeper instead.
                saved = c.effective() - c.effective(trial) if c.ranks == c.max_ranks else raw
                if saved <= 0:
                    saved = max(raw, 1)
                s = c.spectra[mode]
                lost = float(s[r - 1] / s.sum()) if r - 1 < len(s) else 0.0
                cost = lost / saved
                if best is None or cost < best[0]:
                    best = (cost, c, mode)
        assert best is not None  # the floor check above guarantees progress is possible
        best[1].ranks[best[2]] -= 1
        current = total()
