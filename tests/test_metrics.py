"""PSNR/SSIM conventions and the published bicubic baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_sr.data import imresize, list_images, load_image, make_pair, resolve_dataset
from edge_sr.metrics import psnr, ssim, to_uint8
from runtime.colour import rgb_to_y


def test_bt601_y_range():
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)


def test_psnr_known_value_and_identity():
    a = np.full((20, 20), 100, np.uint8)
    b = a.copy()
    assert math.isinf(psnr(a, b, 2))
    b[2:-2, 2:-2] += 5  # MSE 25 inside the crop
    assert psnr(a, b, 2) == pytest.approx(10 * math.log10(255**2 / 25))


def test_border_is_cropped():
    a = np.full((20, 20), 100, np.uint8)
    b = a.copy()
    b[:3, :] = 0
    assert math.isinf(psnr(a, b, 3)) and not math.isinf(psnr(a, b, 2))


def test_metrics_require_rounded_uint8():
    with pytest.raises(TypeError):
        psnr(np.zeros((8, 8)), np.zeros((8, 8)), 1)
    assert to_uint8(np.array([0.5 / 255, 1.2])).tolist() == [0, 255]  # round half to even


def test_ssim_identity_and_order():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    noisy = np.clip(a + rng.normal(0, 10, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, a, 2) == pytest.approx(1.0)
    assert 1.0 > ssim(noisy, a, 2) > ssim(noisier, a, 2)


def _bicubic(dataset: str, scale: int) -> tuple[float, float]:
    ps, ss = [], []
    for path in list_images(resolve_dataset(dataset)):
        pair = make_pair(load_image(path), scale, "y")
        bic = imresize(pair.lr, scale)
        ps.append(psnr(bic, pair.hr, scale))
        ss.append(ssim(bic, pair.hr, scale))
    return float(np.mean(ps)), float(np.mean(ss))


@pytest.mark.parametrize("scale,published", [(2, (33.66, 0.9299)), (3, (30.39, 0.8682)),
                                             (4, (28.42, 0.8104))])
def test_bicubic_reproduces_published_set5(scale, published):
    p, s = _bicubic("set5", scale)
    assert abs(p - published[0]) <= 0.05
    assert abs(s - published[1]) <= 0.002
