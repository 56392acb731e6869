"""MATLAB-compatible bicubic resize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge_sr.data import imresize
from runtime.imresize import resize_matrix


@pytest.mark.parametrize("n,out,scale", [(10, 5, 0.5), (9, 3, 1 / 3), (7, 14, 2.0), (5, 20, 4.0)])
def test_weights_are_normalized(n, out, scale):
    m = resize_matrix(n, out, scale)
    assert m.shape == (out, n)
    assert np.allclose(m.sum(1), 1.0)


def test_constant_image_stays_constant():
    img = np.full((12, 10, 3), 77, np.uint8)
    for s in (0.5, 1 / 3, 2, 3):
        assert (imresize(img, s) == 77).all()


def test_upscale_reproduces_linear_ramps_in_the_interior():
    # Cubic convolution (a = -0.5) is exact for linear functions.
    x = np.arange(20, dtype=np.float64)
    up = imresize(np.tile(x, (6, 1)), 2)[:, 4:-4]
    centres = (np.arange(40) + 0.5) / 2 - 0.5
    assert np.allclose(up, np.tile(centres[4:-4], (12, 1)))


def test_downscale_antialiases_like_matlab():
    # MATLAB imresize(1/2) on a 1-pixel checkerboard gives (almost) flat grey: the
    # stretched kernel filters the Nyquist pattern. Plain subsampling would not.
    board = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    small = imresize(board, 0.5)
    assert small.shape == (8, 8)
    assert np.abs(small[2:-2, 2:-2].astype(int) - 128).max() <= 1


def test_ramp_downscale_interior_and_symmetric_borders():
    # Output j samples position 2j + 0.5: a ramp stays exact away from the borders, and
    # MATLAB's symmetric padding treats both ends alike (out[0] + out[-1] == 15).
    out = imresize(np.arange(16, dtype=np.float64)[None, :], 0.5)[0]
    assert np.allclose(out[2:-2], [4.5, 6.5, 8.5, 10.5])
    assert out[0] + out[-1] == pytest.approx(15.0)
    assert out[0] != pytest.approx(0.5)  # the mirrored border really enters


def test_differs_from_pil_bicubic():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(img).resize((16, 16), Image.BICUBIC))
    assert np.abs(imresize(img, 0.5).astype(int) - pil.astype(int)).max() > 2


def test_uint8_in_uint8_out_and_shape():
    img = np.zeros((15, 21, 3), np.uint8)
    assert imresize(img, 1 / 3).shape == (5, 7, 3)
    assert imresize(img, 1 / 3).dtype == np.uint8
    assert imresize(img.astype(np.float32), 2).dtype == np.float64


@pytest.mark.parametrize("scale", [2, 3, 0.5, 1.5])
def test_float32_work_follows_float64_within_a_ten_thousandth_of_a_level(scale):
    img = np.random.default_rng(1).random((24, 30)) * 255
    want = imresize(img, scale)
    got = imresize(img.astype(np.float32), scale, np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
    assert imresize(img.astype(np.float32), scale).dtype == np.float64  # the default stays
