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


def bicubic_weights(out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, w)``, both (out_len, taps): the 1-based source positions (unmirrored) of
    outputs 1..out_len and MATLAB's bicubic weights on them."""
    width = 4.0
    if scale < 1:  # antialiasing: stretch the kernel by 1/scale
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    return idx, w / w.sum(axis=1, keepdims=True)


@lru_cache(maxsize=256)
def resize_taps(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's bicubic weights along one axis as taps: ``(src, w)``, both (out_len, taps):
    output ``i`` is ``sum_t w[i, t] * x[src[i, t]]`` (source indices already mirrored)."""
    idx, w = bicubic_weights(out_len, scale)
    # MATLAB's symmetric boundary: index 0 -> 1, -1 -> 2, n+1 -> n, ...
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    src = mirror[(idx.astype(np.int64) - 1) % (2 * in_len)]
    keep = np.any(w != 0, axis=0)  # MATLAB drops all-zero tap columns too
    return src[:, keep], w[:, keep]


def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) matrix of MATLAB's bicubic weights along one axis."""
    src, w = resize_taps(in_len, out_len, scale)
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), src.shape[1]), src.ravel()), w.ravel())
    return mat


def _upscale_axis(x: np.ndarray, axis: int, s: int) -> np.ndarray:
    """An integer upscale along ``axis`` by slices: output ``q*s + p`` reads the same taps
    at ``q + offset[p]`` of the symmetrically padded input, so each phase is a few
    whole-array multiply-adds (the products and their order are ``_resize_axis``'s).
    The output keeps the input's axis order in memory (C-contiguous)."""
    n = x.shape[axis]
    idx, w = bicubic_weights(s, s)  # outputs 0..s-1: one of each phase
    w = w.astype(x.dtype)  # float64 scalars would promote a float32 image
    taps = w.shape[1]
    pad = taps + 1
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    xp = np.pad(x, widths, mode="symmetric")

    def along(start, stop, step=None):
        return (slice(None),) * axis + (slice(start, stop, step),)

    out = np.empty(x.shape[:axis] + (n * s,) + x.shape[axis + 1:], x.dtype)
    for p in range(s):
        start = int(idx[p, 0]) - 1 + pad
        acc = w[p, 0] * xp[along(start, start + n)]
        for t in range(1, taps):
            acc += w[p, t] * xp[along(start + t, start + t + n)]
        out[along(p, None, s)] = acc
    return out


def _resize_axis(x: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    # a few taps per output instead of a dense matrix product: on one thread (no BLAS
    # pool beside TVM's) as fast as the matrices on two
    if scale >= 1 and float(scale).is_integer() and out_len == x.shape[axis] * int(scale):
        return _upscale_axis(x, axis, int(scale))
    src, w = resize_taps(x.shape[axis], out_len, scale)
    w = w.astype(x.dtype)
    x = np.moveaxis(x, axis, 0)
    shape = (-1,) + (1,) * (x.ndim - 1)
    y = w[:, 0].reshape(shape) * x[src[:, 0]]
    for t in range(1, src.shape[1]):
        y += w[:, t].reshape(shape) * x[src[:, t]]
    return np.moveaxis(y, 0, axis)


def imresize(img: np.ndarray, scale: float, dtype=np.float64) -> np.ndarray:
    """Resize like MATLAB ``imresize(img, scale, 'bicubic')``.

    Args:
        img: HxW or HxWxC array. uint8 input gives uint8 output, rounded and clipped as
            MATLAB does; float input gives ``dtype`` output, unclipped.
        scale: Scale factor (e.g. 1/2 to downscale by two, 3 to upscale by three).
        dtype: The working precision (float64 as MATLAB; float32 for video frames,
            within 1e-4 of it on the 0-255 scale at half the memory traffic).

    Returns:
        The resized array.
    """
    h, w = img.shape[:2]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    work = np.float64 if img.dtype == np.uint8 else dtype
    y = _resize_axis(_resize_axis(img.astype(work), 0, out_h, scale), 1, out_w, scale)
    if img.dtype == np.uint8:
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
    return y
