"""Accuracy-aware fallback for text int8: the MatMuls whose dynamic int8 activations cost
the most go back to float compute (weight-only int8), fewest first, until the calibration
texts' mean cosine to fp32 reaches a target.

Each MatMul is ranked by what its activations cost alone (the probe text_int8 already
uses, in the form it was given: plain or with outlier channels split off). The number
that must fall back is searched, not stepped one by one: doubling until the target is met,
then bisection between the last count that missed and the first that met it, so a model
with 36 MatMuls is rebuilt at most a dozen times. That assumes more fallback never hurts,
which is what float compute instead of int8 gives.
"""

from __future__ import annotations

from collections.abc import Callable


def fall_back(ranked: list[str], score: Callable[[int], float], target: float,
              log=print, *, what: str = "float") -> tuple[int, dict[int, float]]:
    """The fewest leading nodes of ``ranked`` (most costly first) to return to float for
    ``score(count)`` (the mean cosine with that many back) to reach ``target``, and every
    score measured. ``len(ranked)`` if even all of them do not. The same search serves any
    change that more nodes never make worse (``what`` names it in the log: text_int8's
    split_target uses it for the outlier split)."""
    seen: dict[int, float] = {}

    def measured(count: int) -> float:
        if count not in seen:
            seen[count] = score(count)
            log(f"  {'fallback' if what == 'float' else what}: {count} of {len(ranked)} "
                f"MatMuls {what}, calibration cos "
                f"{seen[count]:.5f} (target {target})")
        return seen[count]

    if measured(0) >= target:
        return 0, seen
    low, high = 0, 1  # low misses; find the first doubling that meets the target
    while high < len(ranked) and measured(high) < target:
        low, high = high, min(2 * high, len(ranked))
    if high >= len(ranked) and measured(len(ranked)) < target:
        return len(ranked), seen
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if measured(mid) >= target else (mid, high)
    return high, seen
