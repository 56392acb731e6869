"""MATLAB-compatible bicubic ``imresize`` (antialiased on downscale), in numpy.

PIL's bicubic differs from MATLAB's (kernel support when downscaling, boundary handling),
and published SR numbers use MATLAB's: this reproduces it, including symmetric padding.
Needs only numpy: it runs on the device (chroma and alpha upscaling) and on the host.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) matrix of MATLAB's bicubic weights along one axis."""
    width = 4.0
    if scale < 1:  # antialiasing: stretch the kernel by 1/scale
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based source positions
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    # MATLAB's symmetric boundary: index 0 -> 1, -1 -> 2, n+1 -> n, ...
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    src = mirror[(idx.astype(np.int64) - 1) % (2 * in_len)]
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), src.ravel()), w.ravel())
    return mat


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize like MATLAB ``imresize(img, scale, 'bicubic')``.

    Args:
        img: HxW or HxWxC array. uint8 input gives uint8 output, rounded and clipped as
            MATLAB does; float input gives float64 output, unclipped.
        scale: Scale factor (e.g. 1/2 to downscale by two, 3 to upscale by three).

    Returns:
        The resized array.
    """
    h, w = img.shape[:2]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    mh, mw = resize_matrix(h, out_h, scale), resize_matrix(w, out_w, scale)
    x = img.astype(np.float64)
    if x.ndim == 2:
        y = mh @ x @ mw.T
    else:
        y = np.einsum("oh,hwc,pw->opc", mh, x, mw, optimize=True)
    if img.dtype == np.uint8:
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
    return y
