"""PSNR and SSIM under the SR evaluation conventions (see shared/datasets/README.md).

Y channel of BT.601 (16-235), outputs rounded to uint8 first, ``scale`` pixels cropped
from each border, SSIM with an 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, range
255, valid-region filtering as in Wang et al.'s reference code. numpy only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from runtime.colour import rgb_to_y


def _prepare(img: np.ndarray, border: int) -> np.ndarray:
    """uint8 RGB / Y -> Y float64 on 0-255, border-cropped."""
    if img.dtype != np.uint8:
        raise TypeError("metrics take uint8 images: round the model output first")
    y = rgb_to_y(img)
    return y[border:-border, border:-border] if border else y


def psnr(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR (dB) on Y between two uint8 images (RGB HxWx3 or Y HxW)."""
    a, b = _prepare(sr, border), _prepare(hr, border)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def match_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR between two uint8 outputs over every pixel and channel, no crop, no Y
    conversion: how closely two runtimes agree (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@lru_cache(maxsize=16)
def _valid_gauss_matrix(n: int, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """(n - size + 1, n) banded matrix: 1-D 'valid' Gaussian filtering as a product."""
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    m = np.zeros((n - size + 1, n))
    for i in range(n - size + 1):
        m[i, i : i + size] = g
    return m


def _filter(x: np.ndarray) -> np.ndarray:
    gh, gw = _valid_gauss_matrix(x.shape[0]), _valid_gauss_matrix(x.shape[1])
    return gh @ x @ gw.T


def ssim(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """SSIM on Y between two uint8 images (RGB HxWx3 or Y HxW)."""
    a, b = _prepare(sr, border), _prepare(hr, border)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter(a), _filter(b)
    var_a = _filter(a * a) - mu_a**2
    var_b = _filter(b * b) - mu_b**2
    cov = _filter(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 with rounding, as the conventions require."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
