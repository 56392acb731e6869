"""Post-training int8 quantization for TVM Relax: calibrate, plan, fall back, lower.

``quantize(model, spec, cfg)`` returns a ``Quantized``: the traced graph, the plan (scales,
int8 weights, layers kept float) and a report; ``lower_to_relax`` turns them into a Relax
module with integer convolutions. See ``plan.py`` for the arithmetic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..data import TrainPatches
from ..data.datasets import list_images, load_image, make_pair
from ..evaluate import run_torch
from ..metrics import psnr
from ..models import ModelSpec
from ..models.torch_passes import subpixel_deconv
from .equalize import equalize
from .gptq import conv_hessians, gptq_weights
from .lower import lower_to_relax
from .plan import (
    QuantError,
    QuantPlan,
    calibrate,
    float_nodes,
    int16_candidates,
    kind,
    make_plan,
    simulate,
    trace,
    with_int16,
)

__all__ = ["QuantConfig", "QuantError", "QuantPlan", "Quantized", "calibration_crops",
           "lower_to_relax", "quantize"]


@dataclass
class Quantized:
    """What ``quantize`` returns.

    Attributes:
        gm: The traced deploy-form graph (deconvolutions in sub-pixel form).
        plan: Its int8 plan: scales, int8 weights, 16-bit activations, float layers.
        report: Calibration and fallback record (validation PSNRs, per-layer
            sensitivity, layers kept float), written into the build's manifest.
    """

    gm: torch.fx.GraphModule
    plan: QuantPlan
    report: dict


@dataclass
class QuantConfig:
    """Calibration and mixed-precision settings.

    Attributes:
        observer: ``minmax``, ``percentile`` or ``mse``.
        calib_images: Random LR crops from the training sets used for calibration.
        crop: LR crop size of those crops.
        max_drop: The build's PSNR guard (dB). The fallback works until the validation
            drop is under it, or the model's own ``int8_goal`` when that is tighter,
            divided by the model's ``int8_headroom`` (2 by default): headroom for the
            test set.
        datasets: Calibration image folders (training sets, never the test sets).
        seed: Crop sampling seed.
        fallback: Keep sensitive layers float (mixed precision); False quantizes every
            layer (full int8, as NPUs require) and leaves the verdict to the guard.
        equalize: Cross-layer equalization before choosing scales (exact in float).
        validation: Training set whose whole images judge the fallback (see
            ``validation_pairs``).
        val_images: How many of its images.
        report_culprits: Measure per-layer sensitivity for the report even without
            fallback, when the drop exceeds half the guard.
        max_float_fraction: Most layers the fallback may keep float; a model that needs
            more fails the guard (an "int8" build that is mostly float would mislead).
        symmetric: Signed activations as int8 with zero point 0 instead of asymmetric
            uint8 (the ablation; asymmetric is finer for skewed PReLU outputs).
        weight_rounding: ``gptq`` (round to minimize each layer's output error on the
            calibration inputs, see ``gptq.py``) or ``nearest`` (the ablation).
        equalize_alpha: How equalization splits a channel's range between activation
            and weight: ``s_c = a_c^alpha / w_c^(1 - alpha)``. 0.5 balances them; with
            GPTQ absorbing most weight error, leaning to the activations pays (FSRCNN x2
            full int8 on Set5: 0.324 dB at 0.5, 0.293 at 0.75, 0.343 at 1.0; ECBSR,
            XLSR, GhostSR within 0.002 dB).
        int16_fallback: Before any layer falls back to float, sensitive activation
            tensors go to 16 bits (TFLite's 16x8 scheme: int16 x int8 -> int32 convs,
            still integer kernels), most helpful first, while that stays overflow-free.
            A layer kept float barely helps when the error is activation noise: its
            input is still an 8-bit tensor (FSRCNN x2: 0.002 dB per float layer).
            Only with ``fallback`` (full int8 means all 8-bit).
    """

    observer: str = "mse"
    calib_images: int = 64
    crop: int = 48
    max_drop: float = 0.1
    datasets: tuple[str, ...] = ("t91", "bsd200")
    seed: int = 1234
    fallback: bool = True
    equalize: bool = True
    symmetric: bool = False
    validation: str = "t91"
    val_images: int = 8
    report_culprits: bool = True
    max_float_fraction: float = 0.5
    weight_rounding: str = "gptq"
    equalize_alpha: float = 0.75
    int16_fallback: bool = True


WEIGHT_ROUNDING = ("gptq", "nearest")


@functools.lru_cache(maxsize=4)
def calibration_crops(datasets: tuple[str, ...], scale: int, colour: str, crop: int,
                      count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (LR, HR) training crops, cached: loading 291 images takes ~15 s."""
    patches = TrainPatches(list(datasets), scale, colour, crop * scale, seed)
    lr, hr = patches.batch(count)
    lr.flags.writeable = hr.flags.writeable = False  # shared between callers
    return lr, hr


@functools.lru_cache(maxsize=4)
def validation_pairs(dataset: str, scale: int, colour: str, count: int) -> tuple:
    """Whole training images, evenly spaced, for the fallback decision.

    Quantization noise adds a roughly fixed error power, so its cost in dB depends on
    the float model's error: on textured 48-pixel crops (~29 dB for FSRCNN x2) the int8
    drop is ~4.5x smaller than on Set5 (~35 dB). Whole T91 images sit near the test
    sets' error level (33.5 dB), so their drop predicts the guard's.
    """
    files = list_images(dataset)
    step = max(1, len(files) // count)
    return tuple(make_pair(load_image(f), scale, colour, f.stem) for f in files[::step][:count])


def _val_psnr(fn, pairs, spec: ModelSpec) -> float:
    """Mean PSNR (evaluation convention) of ``fn`` on whole images."""
    return float(np.mean([psnr(run_torch(lambda x: fn(x).float(), p.lr, spec.colour), p.hr,
                               spec.scale) for p in pairs]))


def conv_layers(gm) -> list[str]:
    """Node names of the convolutions, in graph order."""
    return [n.name for n in gm.graph.nodes if kind(gm, n) == "conv"]


def layer_path(gm, name: str) -> str:
    """Module path (e.g. ``backbone.2``) of a node, for reports."""
    node = next(n for n in gm.graph.nodes if n.name == name)
    return str(node.target) if node.op == "call_module" else name


def _learned_acts(plan: QuantPlan, learned: dict) -> dict:
    from .qat import acts_from_state

    if set(learned) != set(plan.acts):
        raise QuantError("the checkpoint's learned activation scales do not match the model "
                         "graph (trained on another version?); retrain with `train --qat`")
    return acts_from_state(learned)


@dataclass
class Calibrated:
    """The traced graph with its activation ranges (``calibrate_graph``)."""

    gm: torch.fx.GraphModule
    stats: dict
    batches: list[torch.Tensor]
    learned: dict | None  # a `train --qat` checkpoint's activation scales
    equalized: int
    crops: int


@dataclass
class Fallback:
    """What the fallback chose (``fall_back``): the final plan and its history."""

    plan: QuantPlan
    aim: float
    psnr_float: float
    psnr_int8: float
    int16: list[str]
    gain16: dict[str, float]
    sensitivity: dict[str, float]
    history: list[dict]
    validation_images: int


def calibrate_graph(model: nn.Module, spec: ModelSpec, cfg: QuantConfig) -> Calibrated:
    """Trace the sub-pixel deploy form, calibrate it on training crops, equalize
    cross-layer ranges (not for a QAT checkpoint: it trained equalized) and calibrate
    again."""
    learned = getattr(model, "qat_acts", None)
    gm = trace(subpixel_deconv(model))
    lr, _ = calibration_crops(tuple(cfg.datasets), spec.scale, spec.colour, cfg.crop,
                              cfg.calib_images, cfg.seed)
    batches = [torch.from_numpy(lr[i : i + 16].copy()) for i in range(0, len(lr), 16)]
    stats = calibrate(gm, batches)
    equalized = equalize(gm, stats, cfg.equalize_alpha) if cfg.equalize and not learned else 0
    if equalized:
        stats = calibrate(gm, batches)  # ranges moved: measure again
    return Calibrated(gm, stats, batches, learned, equalized, int(len(lr)))


def plan_weights(cal: Calibrated, cfg: QuantConfig) -> tuple[QuantPlan, str]:
    """The int8 plan (activation scales, rounded weights) and the weight rounding used."""
    plan = make_plan(cal.gm, cal.stats, cfg.observer, symmetric=cfg.symmetric)
    if cal.learned:
        plan.acts = _learned_acts(plan, cal.learned)
    # QAT trained its weights through nearest rounding: GPTQ would undo that adaptation
    # (measured on FSRCNN x2: Set5 int8 34.57 dB with GPTQ, 34.74 nearest).
    rounding = "nearest" if cal.learned else cfg.weight_rounding
    if rounding == "gptq":
        hessians = conv_hessians(cal.gm, cal.batches, cfg.seed)
        for name, (_, scale) in plan.weights.items():
            conv = cal.gm.get_submodule(layer_path(cal.gm, name))
            plan.weights[name] = (gptq_weights(conv, scale, hessians[name]), scale)
    return plan, rounding


def fall_back(cal: Calibrated, plan: QuantPlan, spec: ModelSpec, cfg: QuantConfig) -> Fallback:
    """16-bit activations, then float layers, while the validation drop exceeds the aim
    (see ``quantize``)."""
    gm = cal.gm
    pairs = validation_pairs(cfg.validation, spec.scale, spec.colour, cfg.val_images)

    def psnr_of(p: QuantPlan) -> float:
        return _val_psnr(lambda x: simulate(gm, p, x), pairs, spec)

    aim = min(cfg.max_drop, spec.int8_goal) / spec.int8_headroom
    psnr_float = _val_psnr(gm, pairs, spec)
    psnr_int8 = psnr_of(plan)
    int16, gain16 = [], {}

    def step() -> dict:  # one line of the report's fallback history
        return {"float_layers": sorted(layer_path(gm, n) for n in plan.float_layers),
                "int16_activations": [layer_path(gm, n) for n in int16],
                "psnr_int8": psnr_int8}

    history = [step()]
    if cfg.fallback and cfg.int16_fallback and psnr_float - psnr_int8 > aim:
        gain16 = {t: psnr_of(with_int16(plan, cal.stats, [t])) - psnr_int8
                  for t in int16_candidates(gm, plan)}
        for t in sorted(gain16, key=gain16.get, reverse=True):
            if psnr_float - psnr_int8 <= aim or gain16[t] <= 0:
                break
            plan = with_int16(plan, cal.stats, [t])
            int16.append(t)
            psnr_int8 = psnr_of(plan)
            history.append(step())
    sensitivity: dict[str, float] = {}
    if psnr_float - psnr_int8 > aim and (cfg.fallback or cfg.report_culprits):
        sensitivity = {n: psnr_of(replace(plan, float_layers={n})) - psnr_int8
                       for n in conv_layers(gm)}
    budget = int(cfg.max_float_fraction * len(conv_layers(gm)))
    for name in sorted(sensitivity, key=sensitivity.get, reverse=True):
        if not cfg.fallback or psnr_float - psnr_int8 <= aim:
            break
        if len(plan.float_layers) >= budget:  # past this it is a float model: say so
            break
        plan.float_layers.add(name)
        psnr_int8 = psnr_of(plan)
        history.append(step())
    return Fallback(plan, aim, psnr_float, psnr_int8, int16, gain16, sensitivity, history,
                    len(pairs))


def _report(cal: Calibrated, fb: Fallback, rounding: str, spec: ModelSpec,
            cfg: QuantConfig) -> dict:
    gm = cal.gm
    return {
        "observer": cfg.observer,
        "activations": "symmetric int8/uint8" if cfg.symmetric else "asymmetric uint8",
        "activation_scales": "learned (QAT checkpoint)" if cal.learned else "calibrated",
        "calibration_crops": cal.crops, "calibration_data": list(cfg.datasets),
        "crop": cfg.crop, "equalized_pairs": cal.equalized,
        "weight_rounding": rounding,
        "validation": f"{cfg.validation}: {fb.validation_images} whole images",
        "goal_db": spec.int8_goal, "aim_db": fb.aim,
        "validation_psnr_float32": fb.psnr_float, "validation_psnr_int8": fb.psnr_int8,
        "layers": len(conv_layers(gm)),
        "float_layers": sorted(layer_path(gm, n) for n in fb.plan.float_layers),
        "float_ops": float_nodes(gm),
        "int16_activations": [layer_path(gm, n) for n in fb.int16],
        "int16_gain_db": {layer_path(gm, n): round(g, 4) for n, g in
                          sorted(fb.gain16.items(), key=lambda kv: -kv[1])},
        "sensitivity_db": {layer_path(gm, n): round(g, 4) for n, g in
                           sorted(fb.sensitivity.items(), key=lambda kv: -kv[1])},
        "fallback_steps": fb.history,
    }


def quantize(model: nn.Module, spec: ModelSpec, cfg: QuantConfig) -> Quantized:
    """Calibrate a deploy-form model and choose its int8 plan with float fallbacks:
    ``calibrate_graph``, ``plan_weights``, ``fall_back``.

    Fallback, while the validation drop exceeds the aim (the guard or the model's
    ``int8_goal``, the tighter, divided by its ``int8_headroom``): first activation
    tensors go to 16 bits, in the order of their gain (each measured once alone); then
    every layer's leave-one-out gain (dB recovered by keeping it float) is measured once
    and layers join the float set in that order (n + k simulations for n candidates and
    k steps in each stage).

    Returns:
        The graph, its plan and the report (validation PSNRs of float and int8
        simulation, per-layer sensitivity, the layers kept float).
    """
    if cfg.weight_rounding not in WEIGHT_ROUNDING:
        raise QuantError(f"unknown weight rounding {cfg.weight_rounding!r}; choose from "
                         f"{', '.join(WEIGHT_ROUNDING)}")
    cal = calibrate_graph(model, spec, cfg)
    plan, rounding = plan_weights(cal, cfg)
    fb = fall_back(cal, plan, spec, cfg)
    return Quantized(cal.gm, fb.plan, _report(cal, fb, rounding, spec, cfg))
