"""Tiled inference equals whole-image inference when the overlap covers the receptive field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sr.models import MODELS
from edge_sr.models.analysis import receptive_radius
from runtime.tiling import tile_starts, upscale_tiled


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 4), (33, 32, 4), (32, 32, 4),
                                                 (10, 32, 4), (257, 64, 9)])
def test_tiles_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile >= length
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= 2 * overlap


@pytest.mark.parametrize("name", ["fsrcnn_tiny_x2", "ecbsr_m4c8_x2", "xlsr_x3"])
def test_tiled_equals_whole_image(name):
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.deploy(spec.factory().eval())
    r = receptive_radius(spec)
    image = np.random.default_rng(0).random((spec.channels, 70, 53), dtype=np.float32)

    def run(patch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(patch)).numpy()

    whole = run(image[None])[0]
    tiled = upscale_tiled(image, run, (32, 24), spec.scale, r)
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() < 1e-5


def test_too_small_an_overlap_shows_seams():
    spec = MODELS["ecbsr_m4c8_x2"]
    torch.manual_seed(0)
    model = spec.deploy(spec.factory().eval())
    image = np.random.default_rng(1).random((1, 70, 70), dtype=np.float32)

    def run(patch):
        with torch.no_grad():
            return model(torch.from_numpy(patch)).numpy()

    whole = run(image[None])[0]
    assert np.abs(upscale_tiled(image, run, (32, 32), 2, 1) - whole).max() > 1e-4


def test_tile_must_exceed_the_overlap():
    with pytest.raises(ValueError):
        tile_starts(100, 8, 4)
