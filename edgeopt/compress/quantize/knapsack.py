"""The allocation behind mixed precision: one bit width per layer, minimising the
summed sensitivity with the model's size within a budget (a multiple-choice
knapsack, solved exactly by dynamic programming over the size in small units)."""

from __future__ import annotations

import math

import numpy as np


def allocate(costs: dict[str, dict[int, float]], sizes: dict[str, dict[int, int]],
             budget_bytes: float, unit: int = 16) -> dict[str, int] | None:
    """Bits per layer minimising the summed cost with total size <= budget (None if
    no choice fits). Sizes are rounded up to ``unit`` bytes, so a found policy
    always fits the real budget."""
    names = list(costs)
    cap = int(budget_bytes // unit)
    if cap < 0:
        return None
    inf = float("inf")
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    choice: list[np.ndarray] = []
    for name in names:
        new = np.full(cap + 1, inf)
        pick = np.full(cap + 1, -1, dtype=np.int64)
        for bits, cost in costs[name].items():
            w = math.ceil(sizes[name][bits] / unit)
            if w > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[w:] = best[: cap + 1 - w] + cost
            better = cand < new
            new[better] = cand[better]
            pick[better] = bits
        best = new
        choice.append(pick)
    end = int(np.argmin(best))
    if not np.isfinite(best[end]):
        return None
    policy: dict[str, int] = {}
    for name, pick in zip(reversed(names), reversed(choice)):
        bits = int(pick[end])
        policy[name] = bits
        end -= math.ceil(sizes[name][bits] / unit)
    return dict(reversed(list(policy.items())))
