"""Calibration observers: from sampled activation values to a clipping range.

Every observer sees the same reservoir of values per tensor and returns the clipping
magnitude ``c``; the scale is ``c / qmax`` (symmetric, zero point 0).
"""

from __future__ import annotations

import numpy as np

RESERVOIR = 1 << 20  # values kept per tensor


class Reservoir:
    """A bounded random sample of a tensor's values over all calibration batches."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.values = np.empty(0, np.float32)
        self.min, self.max = np.inf, -np.inf
        self.channel_max: np.ndarray | None = None  # max |x| per channel (axis 1)

    def add(self, x: np.ndarray) -> None:
        if x.ndim == 4:
            cmax = np.abs(x).max(axis=(0, 2, 3))
            self.channel_max = cmax if self.channel_max is None else np.maximum(
                self.channel_max, cmax)
        flat = x.reshape(-1).astype(np.float32)
        self.min, self.max = min(self.min, float(flat.min())), max(self.max, float(flat.max()))
        if flat.size > RESERVOIR // 8:
            flat = self.rng.choice(flat, RESERVOIR // 8, replace=False)
        self.values = np.concatenate([self.values, flat])
        if self.values.size > RESERVOIR:
            self.values = self.rng.choice(self.values, RESERVOIR, replace=False)

    @property
    def signed(self) -> bool:
        """True when the tensor takes negative values (int8), else uint8."""
        return self.min < 0


def minmax(res: Reservoir, qmax: int) -> float:
    """The largest magnitude seen: no clipping, coarsest steps."""
    return max(abs(res.min), abs(res.max), 1e-8)


def percentile(res: Reservoir, qmax: int, pct: float = 99.99) -> float:
    """The ``pct`` percentile of magnitudes: clips rare outliers."""
    return max(float(np.percentile(np.abs(res.values), pct)), 1e-8)


def mse(res: Reservoir, qmax: int) -> float:
    """The clipping range that minimizes the mean squared quantization error of the sample."""
    top = minmax(res, qmax)
    vals = res.values.astype(np.float64)
    lo = -qmax if res.signed else 0
    best, best_err = top, np.inf
    for c in top * np.linspace(0.3, 1.0, 71):
        step = c / qmax
        q = np.clip(np.floor(vals / step + 0.5), lo, qmax) * step
        err = float(np.mean((q - vals) ** 2))
        if err < best_err:
            best, best_err = c, err
    return float(best)


OBSERVERS = {"minmax": minmax, "percentile": percentile, "mse": mse}


def _uint8_error(vals: np.ndarray, lo: float, hi: float) -> float:
    step = (hi - lo) / 255.0
    zp = round(-lo / step)
    q = np.clip(np.floor(vals / step + 0.5), -zp, 255 - zp) * step
    return float(np.mean((q - vals) ** 2))


def asymmetric_range(res: Reservoir, observer: str) -> tuple[float, float]:
    """The clipping range ``[lo, hi]`` (lo <= 0 < hi) of an asymmetric uint8 tensor.

    ``mse`` searches both ends by coordinate descent (two sweeps of each end over
    30-100% of the observed extreme) on a 2^17-value subsample.
    """
    lo, hi = min(res.min, 0.0), max(res.max, 1e-8)
    if observer == "percentile":
        return min(float(np.percentile(res.values, 0.01)), 0.0), max(
            float(np.percentile(res.values, 99.99)), 1e-8)
    if observer != "mse":
        return lo, hi
    vals = res.values.astype(np.float64)
    if vals.size > 1 << 17:
        vals = res.rng.choice(vals, 1 << 17, replace=False)
    factors = np.linspace(0.3, 1.0, 36)
    best_lo, best_hi = lo, hi
    for _ in range(2):
        best_hi = min((hi * f for f in factors),
                      key=lambda h: _uint8_error(vals, best_lo, h))
        best_lo = min((lo * f for f in factors),
                      key=lambda v: _uint8_error(vals, v, best_hi))
    return float(best_lo), float(best_hi)
