"""runtime.colour: the plane-wise float32 conversions follow the float64 matrix forms."""

from __future__ import annotations

import numpy as np

from runtime.colour import rgb_from_ycbcr_planes, rgb_to_ycbcr, ycbcr_planes, ycbcr_to_rgb


def _rgb(shape=(17, 23)):
    return np.random.default_rng(0).random(shape + (3,))


def test_planes_equal_the_matrix_form():
    rgb = _rgb()
    planes = ycbcr_planes(rgb)
    want = rgb_to_ycbcr(rgb)
    for k, plane in enumerate(planes):
        assert plane.dtype == np.float32 and plane.shape == rgb.shape[:2]
        assert np.abs(plane - want[..., k]).max() < 1e-4  # 0-255 scale


def test_back_to_rgb_equals_the_matrix_form_clipped():
    ycc = rgb_to_ycbcr(_rgb()) * 1.1 - 5  # some values outside the RGB cube
    got = rgb_from_ycbcr_planes(*(ycc[..., k].astype(np.float32) for k in range(3)))
    want = np.clip(ycbcr_to_rgb(ycc), 0, 1)
    assert got.dtype == np.float32 and got.shape == ycc.shape
    assert got.min() >= 0 and got.max() <= 1
    assert np.abs(got - want).max() < 1e-6


def test_round_trip_keeps_8_bit_pixels():
    u8 = np.random.default_rng(2).integers(0, 256, (31, 7, 3), dtype=np.uint8)
    back = rgb_from_ycbcr_planes(*ycbcr_planes(u8 / 255.0))
    np.testing.assert_array_equal(np.round(back * 255).astype(np.uint8), u8)
