"""BT.601 colour conversions as used by SR evaluation (MATLAB ``rgb2ycbcr``). numpy only."""

from __future__ import annotations

import numpy as np

_RGB2YCBCR = np.array([[65.481, 128.553, 24.966],
                       [-37.797, -74.203, 112.0],
                       [112.0, -93.786, -18.214]])
_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (float) -> YCbCr in [16, 235/240] on the 0-255 scale (float64)."""
    return rgb @ _RGB2YCBCR.T + _OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr``: YCbCr on the 0-255 scale -> RGB in [0, 1]."""
    return (ycc - _OFFSET) @ np.linalg.inv(_RGB2YCBCR).T


def rgb_to_y(rgb_u8: np.ndarray) -> np.ndarray:
    """uint8 RGB (or already single-channel) -> Y on the 0-255 scale, float64."""
    if rgb_u8.ndim == 2:
        return rgb_u8.astype(np.float64)
    return rgb_to_ycbcr(rgb_u8.astype(np.float64) / 255.0)[..., 0]
