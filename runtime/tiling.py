"""Run a fixed-size module over an image of any size with overlapping tiles.

With an overlap of at least the network's receptive radius (in LR pixels) every output
pixel is computed from exactly the inputs the whole-image network would see, so the
stitched result has no seams. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length`` with at least ``overlap`` on each side."""
    if tile <= 2 * overlap:
        raise ValueError(f"tile {tile} too small for an overlap of {overlap} on each side")
    if length <= tile:
        return [0]
    step = tile - 2 * overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _owned(starts: list[int], length: int, tile: int) -> list[tuple[int, int]]:
    """The output range each tile writes: the midpoint of each overlap is the boundary."""
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)]
    return list(zip(bounds, bounds[1:] + [length]))


def upscale_tiled(
    image: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    tile: tuple[int, int],
    scale: int,
    overlap: int,
    out_channels: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> np.ndarray:
    """Upscale a CxHxW image through ``run``, which maps (1,C,th,tw) -> (1,C',sth,stw).

    Args:
        image: Input, CxHxW, float32 (or uint8 for a uint8-I/O module: kept as is).
        run: The fixed-size module call.
        tile: (th, tw), the module's input size.
        scale: Upscaling factor.
        overlap: Margin per side, >= the receptive radius for a seamless result.
        out_channels: C' (defaults to C).
        progress: Optional wrapper for the tile iterator (e.g. ``tqdm``).

    Returns:
        C'x(sH)x(sW), in ``run``'s output dtype. Equal to a whole-image run when the
        image is at least the tile size; a smaller image is edge-extended to the tile,
        which changes only its outer receptive-radius band slightly.
    """
    c, h, w = image.shape
    th, tw = tile
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    oy, ox = _owned(ys, h, th), _owned(xs, w, tw)
    keep = image.dtype if image.dtype == np.uint8 else np.float32
    out = None
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    for i, j in progress(jobs) if progress else jobs:
        y0, x0 = ys[i], xs[j]
        crop = image[:, y0 : y0 + th, x0 : x0 + tw]
        # An image smaller than the tile is extended by replicating its edge: a zero
        # border would darken the outer band (zero input is not zero padding at every
        # layer once biases act), a replicated one is a plausible continuation.
        fill = ((0, 0), (0, th - crop.shape[1]), (0, tw - crop.shape[2]))
        patch = np.pad(crop, fill, mode="edge")[None].astype(keep, copy=False)
        res = run(patch)[0]
        if out is None:
            out = np.empty((out_channels or c, h * scale, w * scale), res.dtype)
        (a, b), (p, q) = oy[i], ox[j]
        out[:, a * scale : b * scale, p * scale : q * scale] = res[
            :, (a - y0) * scale : (b - y0) * scale, (p - x0) * scale : (q - x0) * scale]
    return out
