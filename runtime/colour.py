"""BT.601 colour conversions as used by SR evaluation (MATLAB ``rgb2ycbcr``). numpy only."""

from __future__ import annotations

import numpy as np

# BT.601 as MATLAB's rgb2ycbcr: RGB on [0, 1] -> YCbCr on 0-255 (the frame_io build step
# compiles the same constants).
RGB2YCBCR = np.array([[65.481, 128.553, 24.966],
                      [-37.797, -74.203, 112.0],
                      [112.0, -93.786, -18.214]])
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
YCBCR2RGB = np.linalg.inv(RGB2YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (float) -> YCbCr in [16, 235/240] on the 0-255 scale (float64)."""
    return rgb @ RGB2YCBCR.T + YCBCR_OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr``: YCbCr on the 0-255 scale -> RGB in [0, 1]."""
    return (ycc - YCBCR_OFFSET) @ YCBCR2RGB.T


def ycbcr_planes(rgb: np.ndarray, dtype=np.float32) -> list[np.ndarray]:
    """RGB in [0, 1] (HxWx3) -> [Y, Cb, Cr] planes (HxW, 0-255 scale) computed in ``dtype``.

    ``rgb_to_ycbcr``'s coefficients, plane by plane: contiguous planes, and in float32
    half the bytes of each value (the video path's budget).
    """
    r, g, b = (np.ascontiguousarray(rgb[..., k], dtype=dtype) for k in range(3))
    planes = []
    for row, offset in zip(RGB2YCBCR, YCBCR_OFFSET):
        p = r * dtype(row[0])
        p += g * dtype(row[1])
        p += b * dtype(row[2])
        p += dtype(offset)
        planes.append(p)
    return planes


def rgb_from_ycbcr_planes(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Inverse of ``ycbcr_planes``: HxW planes (0-255 scale) -> HxWx3 RGB on [0, 1],
    clipped, in the planes' dtype (the luma term, one coefficient for all three
    channels, computed once)."""
    dtype = y.dtype.type
    luma = (y - dtype(16.0)) * dtype(YCBCR2RGB[0, 0])  # the same coefficient in every row
    cb, cr = cb - dtype(128.0), cr - dtype(128.0)
    out = np.empty(y.shape + (3,), dtype)
    for k, (_, to_cb, to_cr) in enumerate(YCBCR2RGB):
        out[..., k] = luma + cb * dtype(to_cb) + cr * dtype(to_cr)
    return np.clip(out, 0, 1, out=out)


def rgb_to_y(rgb_u8: np.ndarray) -> np.ndarray:
    """uint8 RGB (or already single-channel) -> Y on the 0-255 scale, float64."""
    if rgb_u8.ndim == 2:
        return rgb_u8.astype(np.float64)
    return rgb_to_ycbcr(rgb_u8.astype(np.float64) / 255.0)[..., 0]
