"""Evaluate a model (PyTorch, host) on a dataset: per-image and mean PSNR/SSIM vs bicubic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import (
    PairSample,
    imresize,
    list_images,
    load_image,
    make_pair,
    to_model_input,
)
from .metrics import psnr, ssim, to_uint8
from .models import ModelSpec, get_spec, load_model


@dataclass
class EvalConfig:
    """Arguments of ``evaluate``.

    Attributes:
        model: Registry name.
        dataset: Name under the datasets folder, or a folder of images.
        weights: Checkpoint path (default: the committed one).
        limit: Evaluate only the first N images (0 = all).
    """

    model: str
    dataset: str = "set5"
    weights: str | None = None
    limit: int = 0


def load_pairs(dataset: str | Path, scale: int, colour: str, limit: int = 0) -> list[PairSample]:
    """Load a dataset's images as evaluation pairs for one scale and colour space."""
    files = list_images(dataset)
    files = files[:limit] if limit else files
    return [make_pair(load_image(p), scale, colour, p.stem) for p in files]


def output_to_image(out: np.ndarray, colour: str) -> np.ndarray:
    """Model output CxHxW float -> uint8 image (HxW for Y, HxWx3 for RGB)."""
    return to_uint8(out[0]) if colour == "y" else to_uint8(out.transpose(1, 2, 0))


@torch.no_grad()
def run_torch(model: nn.Module, lr: np.ndarray, colour: str) -> np.ndarray:
    """Upscale one uint8 LR image with a PyTorch model; returns uint8."""
    x = torch.from_numpy(to_model_input(lr, colour))[None]
    return output_to_image(model(x)[0].numpy(), colour)


@torch.no_grad()
def self_ensemble(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean of ``model``'s outputs over the eight flips and 90-degree rotations of
    ``x`` (N, C, H, W), each mapped back and clipped to [0, 1]: EDSR's "+", at eight
    times the cost of one pass."""
    acc = torch.zeros(())
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(x, k, (2, 3))
            y = model(t.flip(3) if flip else t).clamp(0, 1)
            acc = acc + torch.rot90(y.flip(3) if flip else y, -k, (2, 3))
    return acc / 8


def score_images(pairs: list[PairSample], outputs: list[np.ndarray], scale: int) -> dict:
    """Per-image and mean PSNR/SSIM of outputs and of bicubic, in the JSON report layout."""
    images = []
    for pair, out in zip(pairs, outputs):
        bic = imresize(pair.lr, scale)
        images.append({
            "name": pair.name,
            "psnr": psnr(out, pair.hr, scale), "ssim": ssim(out, pair.hr, scale),
            "bicubic_psnr": psnr(bic, pair.hr, scale), "bicubic_ssim": ssim(bic, pair.hr, scale),
        })

    def mean(key: str) -> float:
        return float(np.mean([im[key] for im in images]))

    return {
        "mean": {"psnr": mean("psnr"), "ssim": mean("ssim")},
        "bicubic": {"psnr": mean("bicubic_psnr"), "ssim": mean("bicubic_ssim")},
        "images": images,
    }


def evaluate_module(model: nn.Module, spec: ModelSpec, pairs: list[PairSample]) -> dict:
    """Score an in-memory model on prepared pairs (used by training for validation)."""
    outputs = [run_torch(model, p.lr, spec.colour) for p in pairs]
    return score_images(pairs, outputs, spec.scale)


def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate a registered model with its checkpoint on a dataset.

    Returns:
        ``{"model", "dataset", "scale", "mean": {"psnr", "ssim"},
        "bicubic": {"psnr", "ssim"}, "images": [...]}``.
    """
    spec = get_spec(cfg.model)
    model = load_model(cfg.model, cfg.weights)
    pairs = load_pairs(cfg.dataset, spec.scale, spec.colour, cfg.limit)
    result = evaluate_module(model, spec, pairs)
    return {"model": cfg.model, "dataset": str(cfg.dataset), "scale": spec.scale,
            "colour": spec.colour, **result}


def format_table(result: dict) -> str:
    """A plain-text table of one evaluation result."""
    lines = [f"{result['model']} on {result['dataset']} (x{result['scale']}, Y channel)",
             f"{'image':<16}{'PSNR':>8}{'SSIM':>8}{'bic PSNR':>10}{'bic SSIM':>10}"]
    for im in result["images"]:
        lines.append(f"{im['name']:<16}{im['psnr']:>8.2f}{im['ssim']:>8.4f}"
                     f"{im['bicubic_psnr']:>10.2f}{im['bicubic_ssim']:>10.4f}")
    m, b = result["mean"], result["bicubic"]
    lines.append(f"{'mean':<16}{m['psnr']:>8.2f}{m['ssim']:>8.4f}{b['psnr']:>10.2f}{b['ssim']:>10.4f}")
    return "\n".join(lines)
