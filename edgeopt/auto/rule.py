"""The candidates of ``--precision auto`` and the rule that picks one.

Plain data and pure functions: the pick rule is tested on injected measurements
(tests/auto/test_rule.py), apart from the builds and timings that feed it (run.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgeopt.compile.backends.protocol import Backend
from edgeopt.compile.backends.registry import get_backend
from edgeopt.compile.targets import Target
from edgeopt.core.errors import ConfigError

# candidate -> (precision family the target must support, recipe that makes it)
CANDIDATES: dict[str, tuple[str, str | None]] = {
    "fp32": ("fp32", None),
    "int8": ("int8", "int8"),
    "w4a8": ("lowbit", "w4a8"),
    "mixed": ("lowbit", "mixed"),  # a sensitivity search: minutes, so only when asked for
    "fp16": ("fp16", None),  # TVM converts the float model (CUDA targets)
}
# What a target lists but --precision auto does not build by default, and why.
_NOT_BUILT = {
    "fp16": "not among the candidates asked for (it builds; its speed needs a GPU to measure)",
    "lowbit": "the backend keeps sub-8-bit weights in int8 containers: no smaller or faster "
              "than int8 (ask for w4a8 explicitly to measure it)",
    "mixed": "a per-layer sensitivity search taking minutes: ask for it explicitly",
}


@dataclass(kw_only=True)
class AutoOptions:
    tolerance: float = 0.5  # top-1 points below fp32 a candidate may lose
    eval_limit: int | None = 2000  # test samples (seeded subset); None: all
    eval_seed: int = 0
    batch: int = 32  # the second latency batch size (batch 1 is always timed)
    repeats: int = 30  # timed runs per batch size, spread over `rounds`
    rounds: int = 3  # interleaved timing rounds, so a load spike hits every candidate
    threads: int | None = None
    candidates: tuple[str, ...] | None = None  # None: what the target's backend supports
    emulate: bool = True  # accuracy of aarch64 artifacts under qemu-user when possible

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise ConfigError(f"tolerance must be >= 0 points, got {self.tolerance}")
        for name in ("eval_limit", "batch", "repeats", "rounds", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.candidates is not None:
            self.candidates = tuple(self.candidates)
            unknown = [c for c in self.candidates if c not in CANDIDATES]
            if unknown or not self.candidates:
                raise ConfigError(f"unknown precision candidate {(unknown or [''])[0]!r} "
                                  f"(known: {', '.join(CANDIDATES)})")


@dataclass(kw_only=True)
class Candidate:
    """One precision's measurements: plain data, so the pick rule can be tested alone."""

    name: str
    precision: str | None = None  # the artifact's own label (w8a8 layers read "int8")
    accuracy: float | None = None  # top-1, percent
    agreement: float | None = None  # percent top-1 agreement with fp32
    latency_ms: dict[int, float] = field(default_factory=dict)  # p50 by batch size
    p90_ms: dict[int, float] = field(default_factory=dict)  # of the median round
    size_bytes: int | None = None
    accuracy_on: str = ""
    latency_on: str = ""
    error: str | None = None  # why it could not be built or measured
    picked: bool = False
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("latency_ms", "p90_ms"):
            data[key] = {str(b): v for b, v in sorted(getattr(self, key).items())}
        return data


# --------------------------------------------------------------------------- the rule


def choose(candidates: list[Candidate], tolerance: float = 0.5) -> Candidate:
    """Mark the pick and say why for every candidate; the first must be fp32.

    Eligible: top-1 within ``tolerance`` of fp32, no slower than fp32 at any batch
    timed, strictly faster at batch 1 (the smallest batch). The fastest eligible at
    batch 1 wins (a smaller file breaks a tie); none eligible: fp32. A candidate
    measured without latency (fp16 without a GPU) is reported but never picked."""
    base = candidates[0]
    if base.name != "fp32" or base.error or base.accuracy is None or not base.latency_ms:
        raise ConfigError("the fp32 candidate must come first and be measured")
    first = min(base.latency_ms)
    eligible = []
    for c in candidates[1:]:
        c.picked = False
        if c.error:
            c.why = f"not measured: {c.error}"
            continue
        drop = base.accuracy - c.accuracy
        if not c.latency_ms:  # accuracy alone cannot justify shipping it
            c.why = f"{c.accuracy - base.accuracy:+.2f} points vs fp32; not timed: {c.latency_on}"
            continue
        slower = [b for b in sorted(base.latency_ms)
                  if c.latency_ms[b] > base.latency_ms[b]
                  or (b == first and c.latency_ms[b] == base.latency_ms[b])]
        if drop > tolerance + 1e-9:
            c.why = f"{drop:.2f} points below fp32 (tolerance {tolerance:g})"
        elif slower:
            b = slower[0]
            word = "no faster" if c.latency_ms[b] == base.latency_ms[b] else "slower"
            c.why = (f"{word} than fp32 at batch {b} ({c.latency_ms[b]:.3f} vs "
                     f"{base.latency_ms[b]:.3f} ms)")
        else:
            eligible.append(c)
    eligible.sort(key=lambda c: (c.latency_ms[first], c.size_bytes or 0))
    pick = eligible[0] if eligible else base
    for c in eligible[1:]:
        c.why = (f"within tolerance and faster than fp32, but {pick.name} is faster at batch "
                 f"{first} ({c.latency_ms[first]:.3f} vs {pick.latency_ms[first]:.3f} ms)")
    pick.picked = True
    if pick is base:
        base.why = ("no quantized candidate is both within tolerance and faster than fp32"
                    if len(candidates) > 1 else "the only precision built for this target")
    else:
        speed = ", ".join(f"{base.latency_ms[b] / pick.latency_ms[b]:.2f}x at batch {b}"
                          for b in sorted(base.latency_ms))
        pick.why = (f"fastest within {tolerance:g} points of fp32 "
                    f"({pick.accuracy - base.accuracy:+.2f} points; {speed})")
        base.why = f"baseline; {pick.name} is faster within tolerance"
    return pick


def default_candidates(backend: Backend) -> tuple[str, ...]:
    """What auto builds unless asked: fp32 and int8; w4a8 where the backend stores
    sub-8-bit weights smaller than int8 (packed); the precisions it converts to (fp16)."""
    lowbit = ("w4a8",) if backend.packed_lowbit else ()
    return ("fp32", "int8", *lowbit, *(c for c in backend.conversions if c in CANDIDATES))


def candidate_names(t: Target, backend: str, asked: tuple[str, ...] | None) -> list[str]:
    t.check(backend, "fp32")  # an unknown backend for the target: refused with the list
    supported = t.support[backend]
    if asked is None:
        return [n for n in default_candidates(get_backend(backend))
                if CANDIDATES[n][0] in supported]
    bad = [n for n in asked if CANDIDATES[n][0] not in supported]
    if bad:
        raise ConfigError(f"target {t.name} does not support candidate {bad[0]!r} with "
                          f"{backend} (supported: {', '.join(supported)})")
    return ["fp32", *[n for n in asked if n != "fp32"]]


def not_built(t: Target, backend: str, names: list[str]) -> dict[str, str]:
    """Precisions the target's backend lists that this run did not build, with the reason."""
    built = {CANDIDATES[n][0] for n in names}
    out = {f: _NOT_BUILT.get(f, "not a candidate") for f in t.support[backend]
           if f not in built}
    if get_backend(backend).packed_lowbit and "lowbit" in t.support[backend] \
            and "mixed" not in names:
        out["mixed"] = _NOT_BUILT["mixed"]
    return out
