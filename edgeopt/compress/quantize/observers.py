"""Range estimation: statistics as plain data, and the rules that turn them into ranges.

``TensorStats`` is what calibration collects (min, max, a histogram); the
functions below choose a clipping range from it by min-max, percentile, MSE or
entropy (KL divergence), and ``qparams`` turns a range into scale/zero-point.
Keeping the statistics apart from the quantizer lets a user swap the rule
without re-running calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeopt.compress.quantize import ops
from edgeopt.compress.quantize.spec import Observer, QuantSpec, Scheme

_EPS = 1e-8


@dataclass
class TensorStats:
    """What calibration saw of one tensor."""

    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0
    hist: np.ndarray | None = None  # counts over [hist_lo, hist_hi]
    hist_lo: float = 0.0
    hist_hi: float = 0.0

    def update_minmax(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.count += x.numel()

    def start_histogram(self, bins: int) -> None:
        # The histogram always spans zero so that zero is a bin edge region we can represent.
        self.hist_lo = min(self.min, 0.0)
        self.hist_hi = max(self.max, 0.0)
        if self.hist_hi - self.hist_lo < _EPS:
            self.hist_hi = self.hist_lo + _EPS
        self.hist = np.zeros(bins, dtype=np.float64)

    def update_histogram(self, x: torch.Tensor) -> None:
        assert self.hist is not None, "start_histogram() first"
        h = torch.histc(x.detach().float(), bins=len(self.hist), min=self.hist_lo, max=self.hist_hi)
        self.hist += h.double().numpy()

    def bin_centers(self) -> np.ndarray:
        edges = np.linspace(self.hist_lo, self.hist_hi, len(self.hist) + 1)
        return (edges[:-1] + edges[1:]) / 2


def qparams(lo: float, hi: float, spec: QuantSpec) -> tuple[float, int]:
    """Scale and zero-point for a clipping range [lo, hi] (zero always representable)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if spec.symmetric:
        amax = max(-lo, hi)
        return max(amax / spec.qmax, _EPS), 0
    scale = max((hi - lo) / (spec.qmax - spec.qmin), _EPS)
    zero_point = int(np.clip(round(spec.qmin - lo / scale), spec.qmin, spec.qmax))
    return scale, zero_point


def _fake_quant_np(x: np.ndarray, scale: float, zp: int, spec: QuantSpec) -> np.ndarray:
    q = np.clip(np.rint(x / scale) + zp, spec.qmin, spec.qmax)
    return (q - zp) * scale


def _percentile_range(st: TensorStats, pct: float) -> tuple[float, float]:
    cdf = np.cumsum(st.hist) / max(st.hist.sum(), 1.0)
    edges = np.linspace(st.hist_lo, st.hist_hi, len(st.hist) + 1)
    hi_idx = int(np.searchsorted(cdf, pct / 100.0))
    lo_idx = int(np.searchsorted(cdf, 1.0 - pct / 100.0))
    hi = float(edges[min(hi_idx + 1, len(edges) - 1)])
    lo = float(edges[lo_idx]) if st.min < 0 else 0.0
    return lo, hi


def _mse_range(st: TensorStats, spec: QuantSpec) -> tuple[float, float]:
    centers, counts = st.bin_centers(), st.hist
    best, best_err = (st.min, st.max), float("inf")
    # Shrink both ends by the same factor: a 1-D search that is cheap and, for
    # the one-sided (post-ReLU) ranges that dominate CNNs, exact.
    for f in np.linspace(0.2, 1.0, 81):
        lo, hi = min(st.min, 0.0) * f, max(st.max, 0.0) * f
        scale, zp = qparams(lo, hi, spec)
        err = float(np.sum(counts * (centers - _fake_quant_np(centers, scale, zp, spec)) ** 2))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """TensorRT's entropy calibration: the bin count whose clipped histogram,
    requantized to ``levels`` levels, loses the least information (KL)."""
    n = len(hist)
    best_i, best_kl = n, float("inf")
    step = max(1, (n - levels) // 128)
    for i in range(levels, n + 1, step):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        if ref.sum() == 0:
            continue
        # Merge the first i bins into `levels` groups, then spread each group's
        # mass evenly over the group's non-empty bins.
        groups = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for g in groups:
            chunk = hist[g]
            nonzero = chunk > 0
            if nonzero.any():
                q[g[nonzero]] = chunk.sum() / nonzero.sum()
        p = ref / ref.sum()
        qs = q.sum()
        if qs == 0:
            continue
        q = q / qs
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def _entropy_range(st: TensorStats, spec: QuantSpec) -> tuple[float, float]:
    centers, counts = st.bin_centers(), st.hist.copy()
    # Zero is exact on the grid, and after a ReLU it holds half the mass: left in,
    # that spike dominates the divergence and drives the threshold to its minimum.
    counts[np.argmin(np.abs(centers))] = 0
    if st.min >= 0:
        # One-sided: a histogram of [0, max] quantized to all 2^b levels.
        levels = 2**spec.bits
        hist, _ = np.histogram(centers, bins=len(counts), range=(0, st.hist_hi), weights=counts)
        amax = st.hist_hi
        i = _kl_threshold(hist, min(levels, len(hist)))
        return 0.0, amax * i / len(hist)
    levels = 2 ** (spec.bits - 1)
    amax = max(-st.hist_lo, st.hist_hi)
    hist, _ = np.histogram(np.abs(centers), bins=len(counts), range=(0, amax), weights=counts)
    i = _kl_threshold(hist, min(levels, len(hist)))
    t = amax * i / len(hist)
    return -t, t


def activation_range(st: TensorStats, spec: QuantSpec) -> tuple[float, float]:
    """The clipping range for an activation, by the spec's observer."""
    if st.count == 0:
        raise ValueError("no calibration statistics collected")
    if spec.observer is Observer.MINMAX or st.hist is None:
        return st.min, st.max
    if spec.observer is Observer.PERCENTILE:
        return _percentile_range(st, spec.percentile)
    if spec.observer is Observer.MSE:
        return _mse_range(st, spec)
    return _entropy_range(st, spec)


def weight_qparams(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (axis 0) or per-tensor scale and zero-point for a weight tensor."""
    w = w.detach().float()
    flat = w.reshape(w.shape[0], -1) if spec.per_channel else w.reshape(1, -1)
    lo = flat.min(dim=1).values.clamp(max=0)
    hi = flat.max(dim=1).values.clamp(min=0)
    if spec.scheme is Scheme.POW2:
        return _pow2_weight_scale(flat, spec), torch.zeros(flat.shape[0], dtype=torch.int32)
    if spec.observer is Observer.MSE:
        lo, hi = _weight_mse_range(flat, lo, hi, spec)
    if spec.symmetric:
        scale = torch.maximum(-lo, hi) / spec.qmax
        zp = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi - lo) / (spec.qmax - spec.qmin)
        zp = torch.clamp(torch.round(spec.qmin - lo / scale.clamp(min=_EPS)), spec.qmin, spec.qmax)
        zp = zp.to(torch.int32)
    return scale.clamp(min=_EPS), zp


def _weight_mse_range(flat, lo, hi, spec):
    best_lo, best_hi = lo.clone(), hi.clone()
    best_err = torch.full_like(lo, float("inf"))
    for f in torch.linspace(0.3, 1.0, 36):
        clo, chi = lo * f, hi * f
        if spec.symmetric:
            scale = (torch.maximum(-clo, chi) / spec.qmax).clamp(min=_EPS)
            zp = torch.zeros_like(scale)
        else:
            scale = ((chi - clo) / (spec.qmax - spec.qmin)).clamp(min=_EPS)
            zp = torch.clamp(torch.round(spec.qmin - clo / scale), spec.qmin, spec.qmax)
        q = torch.clamp(torch.round(flat / scale[:, None]) + zp[:, None], spec.qmin, spec.qmax)
        err = ((flat - (q - zp[:, None]) * scale[:, None]) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, clo, best_lo)
        best_hi = torch.where(better, chi, best_hi)
    return best_lo, best_hi


def _pow2_weight_scale(flat: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Scale putting a channel's largest weight on the top power, or (MSE) the
    scale in [max/2^kmax / 2, max/2^kmax] with least squared error: the
    power-of-two grid is coarse at the top, so the best scale is rarely the max's."""
    amax = flat.abs().max(dim=1).values.clamp(min=_EPS)
    top = amax / 2.0**spec.kmax
    if spec.observer is not Observer.MSE:
        return top
    best, best_err = top.clone(), torch.full_like(top, float("inf"))
    for f in torch.linspace(0.5, 1.0, 26):
        scale = top * f
        err = ((flat - ops.pow2_round(flat / scale[:, None], spec.kmax) * scale[:, None]) ** 2)
        err = err.sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, scale, best)
    return best
