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
