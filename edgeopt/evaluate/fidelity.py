"""How closely a candidate model's outputs follow a reference model's, without labels.

Per output: SQNR in dB, per-sample cosine (mean and min), max absolute error,
and top-1 agreement for classifier-shaped outputs; integer and bool outputs get
the percent of elements that match exactly.

SQNR is capped at ``SQNR_CAP_DB`` either way: identical outputs report +200 dB
(float32 rounding alone measures ~140 dB, so the cap never hides a real
number) and a wrong result against an all-zero reference reports -200 dB. Every
value is a finite float or None, so reports serialise as strict JSON.

A candidate value that is NaN or Inf where the reference has a finite (or a
different) value is counted in ``nonfinite``; it makes that output's SQNR
-200 dB, its sample's cosine 0 and ``max_abs`` None. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeopt.core.errors import DataError

SQNR_CAP_DB = 200.0


def is_classifier_output(shape: Sequence[int | str | None]) -> bool:
    """``(N, C)`` with a known ``C >= 2``: argmax across C is a predicted class."""
    if len(shape) != 2:
        return False
    classes = shape[1]
    return isinstance(classes, (int, np.integer)) and not isinstance(classes, bool) and classes >= 2


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, dict]:
    """Fidelity of ``candidate`` to ``reference``, per output name (axis 0: samples)."""
    acc = Accumulator()
    acc.add(reference, candidate)
    return acc.result()


def summarise(per_output: dict[str, dict]) -> dict:
    """The headline: the worst output by each metric (only the metrics that occur)."""
    head: dict = {}
    for key in ("sqnr_db", "cosine_min", "argmax_agreement", "exact_match"):
        values = {name: m[key] for name, m in per_output.items() if m.get(key) is not None}
        if values:
            worst = min(values, key=values.get)
            head[f"{key}_min" if key != "cosine_min" else key] = values[worst]
            if key == "sqnr_db":
                head["worst_output"] = worst
    nonfinite = sum(m.get("nonfinite", 0) for m in per_output.values())
    if nonfinite:
        head["nonfinite"] = nonfinite
    return head


@dataclass
class _Sums:
    """Running totals for one output, enough to finish every metric at the end."""

    is_float: bool
    classifier: bool
    samples: int = 0
    signal: float = 0.0
    noise: float = 0.0
    cosine_sum: float = 0.0
    cosine_min: float = 1.0
    max_abs: float = 0.0
    nonfinite: int = 0
    hits: int = 0  # argmax agreements or equal elements
    elements: int = 0


class Accumulator:
    """``compare`` batch by batch, so an evaluation set is never held twice."""

    def __init__(self) -> None:
        self._sums: dict[str, _Sums] = {}

    def add(self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> None:
        if reference.keys() != candidate.keys():
            missing = sorted(reference.keys() - candidate.keys())
            extra = sorted(candidate.keys() - reference.keys())
            detail = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
            raise DataError(f"candidate outputs differ from the reference's: {detail}")
        for name, ref in reference.items():
            ref, cand = np.asarray(ref), np.asarray(candidate[name])
            if ref.shape != cand.shape:
                raise DataError(
                    f"output {name!r}: reference has shape {ref.shape}, candidate {cand.shape}"
                )
            is_float = ref.dtype.kind == "f"
            sums = self._sums.setdefault(
                name, _Sums(is_float, is_float and is_classifier_output(ref.shape))
            )
            (_add_float if sums.is_float else _add_exact)(sums, ref, cand)

    def result(self) -> dict[str, dict]:
        return {name: _finish(name, sums) for name, sums in self._sums.items()}


def _samples(a: np.ndarray) -> np.ndarray:
    # A 0-d output (a scalar per run) is one sample.
    return a.reshape(1, -1) if a.ndim == 0 else a.reshape(a.shape[0], -1)


def _add_float(sums: _Sums, ref: np.ndarray, cand: np.ndarray) -> None:
    ref, cand = _samples(ref).astype(np.float64), _samples(cand).astype(np.float64)
    same = (ref == cand) | (np.isnan(ref) & np.isnan(cand))
    bad = ~same & ~(np.isfinite(ref) & np.isfinite(cand))
    # Equal non-finite values (a -inf masked logit in both) carry no error; zero them.
    clean = np.isfinite(ref) & np.isfinite(cand)
    ref, cand = np.where(clean, ref, 0.0), np.where(clean, cand, 0.0)
    diff = ref - cand
    sums.samples += ref.shape[0]
    sums.signal += float(np.sum(ref * ref))
    sums.noise += float(np.sum(diff * diff))
    sums.nonfinite += int(bad.sum())
    if diff.size:
        sums.max_abs = max(sums.max_abs, float(np.abs(diff).max()))
    cos = _cosine(ref, cand)
    cos[bad.any(axis=1)] = 0.0
    sums.cosine_sum += float(cos.sum())
    if cos.size:
        sums.cosine_min = min(sums.cosine_min, float(cos.min()))
    if sums.classifier:
        sums.hits += int((ref.argmax(axis=1) == cand.argmax(axis=1)).sum())


def _cosine(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-row cosine; two zero rows agree (1), a zero row against a non-zero one is 0."""
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = np.sum(ref * cand, axis=1)
    both_zero = ~ref.any(axis=1) & ~cand.any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.clip(np.where(both_zero, 1.0, cos), -1.0, 1.0)


def _add_exact(sums: _Sums, ref: np.ndarray, cand: np.ndarray) -> None:
    sums.samples += 1 if ref.ndim == 0 else ref.shape[0]
    sums.hits += int(np.sum(ref == cand))
    sums.elements += ref.size


def _finish(name: str, sums: _Sums) -> dict:
    if sums.samples == 0:
        raise DataError(f"output {name!r}: no samples to compare")
    if not sums.is_float:
        exact = 100.0 * sums.hits / sums.elements if sums.elements else 100.0
        return {"exact_match": exact, "samples": sums.samples}
    out = {
        "sqnr_db": -SQNR_CAP_DB if sums.nonfinite else _sqnr_db(sums.signal, sums.noise),
        "cosine": sums.cosine_sum / sums.samples,
        "cosine_min": sums.cosine_min,
        "max_abs": None if sums.nonfinite else sums.max_abs,
        "nonfinite": sums.nonfinite,
        "samples": sums.samples,
    }
    if sums.classifier:
        out["argmax_agreement"] = 100.0 * sums.hits / sums.samples
    return out


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SQNR_CAP_DB, SQNR_CAP_DB))
