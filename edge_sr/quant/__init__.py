"""Post-training int8 quantization for TVM Relax: calibrate, plan, fall back, lower.

``quantize(model, spec, cfg)`` returns the traced graph, the plan (scales, int8 weights,
layers kept float) and a report; ``lower_to_relax`` turns them into a Relax module with
integer convolutions. See ``plan.py`` for the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..data import TrainPatches
from ..models import ModelSpec
from ..pipeline.torch_passes import subpixel_deconv
from .equalize import equalize
from .lower import lower_to_relax
from .plan import QuantError, QuantPlan, calibrate, kind, make_plan, simulate, trace

__all__ = ["QuantConfig", "QuantError", "QuantPlan", "lower_to_relax", "quantize"]


@dataclass
class QuantConfig:
    """Calibration and mixed-precision settings.

    Attributes:
        observer: ``minmax``, ``percentile`` or ``mse``.
        calib_images: Random LR crops from the training sets used for calibration.
        crop: LR crop size of those crops.
        max_drop: The build's PSNR guard (dB). Layers fall back to float until the
            calibration-set drop is under half of it: headroom for the test set.
        datasets: Calibration image folders (training sets, never the test sets).
        seed: Crop sampling seed.
        fallback: Keep sensitive layers float (mixed precision); False quantizes every
            layer (full int8, as NPUs require) and leaves the verdict to the guard.
        equalize: Cross-layer equalization before choosing scales (exact in float).
    """

    observer: str = "mse"
    calib_images: int = 64
    crop: int = 48
    max_drop: float = 0.1
    datasets: tuple[str, ...] = ("t91", "bsd200")
    seed: int = 1234
    fallback: bool = True
    equalize: bool = True


def _psnr(out: torch.Tensor, hr: torch.Tensor) -> float:
    """PSNR on [0,1] outputs rounded to 8 bits (the evaluation convention, any channels)."""
    a = torch.clamp(torch.floor(out * 255 + 0.5), 0, 255)
    mse = float(((a - torch.round(hr.double() * 255)) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def conv_layers(gm) -> list[str]:
    """Node names of the convolutions, in graph order."""
    return [n.name for n in gm.graph.nodes if kind(gm, n) == "conv"]


def layer_path(gm, name: str) -> str:
    """Module path (e.g. ``backbone.2``) of a node, for reports."""
    node = next(n for n in gm.graph.nodes if n.name == name)
    return str(node.target) if node.op == "call_module" else name


def quantize(model: nn.Module, spec: ModelSpec, cfg: QuantConfig) -> tuple:
    """Calibrate a deploy-form model and choose its int8 plan with float fallbacks.

    Returns:
        ``(gm, plan, report)``; the report has the calibration PSNRs (float, int8
        simulation), per-layer sensitivity (dB recovered by keeping the layer float) and
        the layers kept float.
    """
    gm = trace(subpixel_deconv(model))
    patches = TrainPatches(list(cfg.datasets), spec.scale, spec.colour, cfg.crop * spec.scale,
                           cfg.seed)
    lr, hr = patches.batch(cfg.calib_images)
    batches = [torch.from_numpy(lr[i : i + 16]) for i in range(0, len(lr), 16)]
    hr_t = torch.from_numpy(hr)
    stats = calibrate(gm, batches)
    equalized = equalize(gm, stats) if cfg.equalize else 0
    if equalized:
        stats = calibrate(gm, batches)  # ranges moved: measure again
    plan = make_plan(gm, stats, cfg.observer)
    lr_t = torch.from_numpy(lr)

    def chunked(fn) -> torch.Tensor:
        # float64 convs fall back to im2col: a batch of 64 crops through a 9x9 conv would
        # need ~100 GB, two at a time need ~3 GB.
        with torch.no_grad():
            return torch.cat([fn(lr_t[i : i + 2]).double() for i in range(0, len(lr_t), 2)])

    psnr_float = _psnr(chunked(gm), hr_t)

    def psnr_of(p: QuantPlan) -> float:
        return _psnr(chunked(lambda x: simulate(gm, p, x)), hr_t)

    psnr_int8 = psnr_of(plan)
    sensitivity: dict[str, float] = {}
    if not cfg.fallback and psnr_float - psnr_int8 > cfg.max_drop:  # culprits for the report
        sensitivity = {n: psnr_of(replace(plan, float_layers={n})) - psnr_int8
                       for n in conv_layers(gm)}
    history = [{"float_layers": [], "psnr_int8": psnr_int8}]
    while cfg.fallback and psnr_float - psnr_int8 > cfg.max_drop / 2:
        candidates = [n for n in conv_layers(gm) if n not in plan.float_layers]
        if not candidates:
            break
        gains = {}
        for name in candidates:  # leave-one-out: what keeping this layer float recovers
            trial = replace(plan, float_layers=plan.float_layers | {name})
            gains[name] = psnr_of(trial) - psnr_int8
        if not sensitivity:
            sensitivity = dict(gains)
        worst = max(gains, key=gains.get)
        plan.float_layers.add(worst)
        psnr_int8 += gains[worst]
        history.append({"float_layers": sorted(layer_path(gm, n) for n in plan.float_layers),
                        "psnr_int8": psnr_int8})
    report = {
        "observer": cfg.observer, "calibration_crops": int(len(lr)), "crop": cfg.crop,
        "equalized_pairs": equalized,
        "calibration_psnr_float32": psnr_float, "calibration_psnr_int8": psnr_int8,
        "layers": len(conv_layers(gm)),
        "float_layers": sorted(layer_path(gm, n) for n in plan.float_layers),
        "sensitivity_db": {layer_path(gm, n): round(g, 4) for n, g in
                           sorted(sensitivity.items(), key=lambda kv: -kv[1])},
        "fallback_steps": history,
    }
    return gm, plan, report
