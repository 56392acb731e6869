"""Training: L1 (+ optional adversarial) loss, Adam with cosine decay, resumable, logged."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import TrainPatches
from .evaluate import evaluate_module, load_pairs
from .models import Discriminator, get_spec

LOG_FIELDS = ["iter", "loss", "lr", "val_psnr", "val_ssim", "elapsed_s"]


@dataclass
class TrainConfig:
    """Arguments of ``train``.

    Attributes:
        model: Registry name.
        iters: Total optimizer steps.
        batch: Patches per step.
        patch: HR patch size.
        lr: Initial Adam learning rate (cosine-decayed to 1% of it).
        seed: Seed for init and sampling; equal seeds give equal runs.
        out: Run folder for ``last.pt`` (resumable) and ``log.csv``.
        val_every: Validate on ``val_dataset`` and checkpoint every N steps.
        val_dataset: Validation dataset.
        datasets: Training datasets.
        export: Where to write the final weights (default: the committed location).
        init: Start from these weights (e.g. fine-tuning); ignored when resuming.
        adversarial: Add the SRGAN adversarial loss (RGB models).
        adv_weight: Weight of the adversarial term.
        threads: torch intra-op threads (0 = torch default).
        stop_after: Stop (with a checkpoint, no export) after this many steps in this
            invocation; rerun to continue. 0 = run to ``iters``.
        qat: Quantization-aware fine-tuning of the deploy form (starting from ``init`` or
            the committed weights) through the int8 fake-quant; exports a deploy-form
            checkpoint (default ``weights/MODEL.qat.pt``) with the learned activation
            scales, which ``build --dtype int8`` uses instead of calibrating.
        distill: QAT only: weight of the L1 distance to the float model's output (what
            the int8 guard measures) beside the L1 distance to the HR image.
    """

    model: str
    iters: int = 2000
    batch: int = 16
    patch: int = 64
    lr: float = 5e-4
    seed: int = 0
    out: str = ""
    val_every: int = 250
    val_dataset: str = "set5"
    datasets: list[str] = field(default_factory=lambda: ["t91", "bsd200"])
    export: str = ""
    init: str = ""
    adversarial: bool = False
    adv_weight: float = 1e-3
    threads: int = 0
    stop_after: int = 0
    qat: bool = False
    distill: float = 1.0


def _qat_model(cfg: TrainConfig, spec) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The fake-quant training module, calibrated from the trained float model (full
    int8, nearest rounding: what it trains through), and the frozen float teacher."""
    import copy

    from .models import load_model
    from .quant import QuantConfig, quantize
    from .quant.qat import FakeQuant

    float_model = load_model(cfg.model, cfg.init or None)
    gm, plan, _ = quantize(float_model, spec, QuantConfig(
        max_drop=float("inf"), fallback=False, report_culprits=False,
        weight_rounding="nearest"))
    teacher = copy.deepcopy(gm).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    for p in gm.parameters():
        p.requires_grad_(True)
    return FakeQuant(gm, plan), teacher


def _param_groups(model: torch.nn.Module) -> list[dict]:
    """QAT's log step sizes learn 10x faster than the weights: at the weights' fine-tuning
    rate they would move < 20% in a run (LSQ's step-size gradient scaling, simplified)."""
    scales = list(model.log_scales.parameters()) if hasattr(model, "log_scales") else []
    ids = {id(p) for p in scales}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    return groups + ([{"params": scales, "lr_mult": 10.0}] if scales else [])


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * step / cfg.iters)))


def _step(cfg: TrainConfig, step: int, model, disc, opt, opt_d, data: TrainPatches,
          teacher=None) -> float:
    """One optimizer step (generator, then discriminator when adversarial)."""
    for group in opt.param_groups + (opt_d.param_groups if opt_d else []):
        group["lr"] = _lr_at(cfg, step) * group.get("lr_mult", 1.0)
    lr_t, hr_t = (torch.from_numpy(a) for a in data.batch(cfg.batch))
    sr = model(lr_t)
    loss = F.l1_loss(sr, hr_t)
    if teacher is not None and cfg.distill:
        with torch.no_grad():
            target = teacher(lr_t)
        loss = loss + cfg.distill * F.l1_loss(sr, target)
    if disc is not None:
        loss = loss + cfg.adv_weight * F.softplus(-disc(sr)).mean()  # BCE(D(sr), real)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if disc is not None:
        d_loss = F.softplus(-disc(hr_t)).mean() + F.softplus(disc(sr.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
    return loss.item()


def train(cfg: TrainConfig) -> dict:
    """Train a registered model; resume from ``cfg.out/last.pt`` when it exists.

    Returns:
        The last validation result (``{"psnr", "ssim"}``) and the export path.
    """
    spec = get_spec(cfg.model)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out or f"runs/{cfg.model}")
    out.mkdir(parents=True, exist_ok=True)
    model, teacher = _qat_model(cfg, spec) if cfg.qat else (spec.factory(), None)
    deploy = (lambda m: m) if cfg.qat else spec.deploy
    disc = Discriminator() if cfg.adversarial else None
    if disc is not None and spec.colour != "rgb":
        raise ValueError("--adversarial needs an RGB model (the discriminator sees RGB)")
    opt = torch.optim.Adam(_param_groups(model), lr=cfg.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr) if disc is not None else None
    data = TrainPatches(cfg.datasets, spec.scale, spec.colour, cfg.patch, cfg.seed)
    val_pairs = load_pairs(cfg.val_dataset, spec.scale, spec.colour)
    start, last = 0, Path(out / "last.pt")
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=False)  # our own file
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if disc is not None and "disc" in state:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        data.rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])
        start = state["iter"]
    elif cfg.init and not cfg.qat:
        ckpt = torch.load(cfg.init, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt.get("state_dict", ckpt))
    log_path = out / "log.csv"
    new_log = not log_path.exists() or start == 0
    log_file = open(log_path, "w" if new_log else "a", newline="")
    log = csv.DictWriter(log_file, LOG_FIELDS)
    if new_log:
        log.writeheader()
    t0, val = time.time(), {"psnr": float("nan"), "ssim": float("nan")}
    bar = tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc=cfg.model,
               dynamic_ncols=True, mininterval=2.0)
    model.train()

    def checkpoint(done: int) -> None:
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "iter": done,
                 "data_rng": data.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        if disc is not None:
            state.update(disc=disc.state_dict(), opt_d=opt_d.state_dict())
        _save_atomic(state, last)

    done = start
    try:
        for step in bar:
            loss = _step(cfg, step, model, disc, opt, opt_d, data, teacher)
            done = step + 1
            if done % cfg.val_every == 0 or done == cfg.iters:
                model.eval()
                val = evaluate_module(deploy(model), spec, val_pairs)["mean"]
                model.train()
                bar.set_postfix(loss=f"{loss:.4f}", val_psnr=f"{val['psnr']:.2f}")
                log.writerow({"iter": done, "loss": round(loss, 6),
                              "lr": round(_lr_at(cfg, step), 8),
                              "val_psnr": round(val["psnr"], 4), "val_ssim": round(val["ssim"], 5),
                              "elapsed_s": round(time.time() - t0, 1)})
                log_file.flush()
                checkpoint(done)
            if cfg.stop_after and done - start >= cfg.stop_after and done < cfg.iters:
                checkpoint(done)
                log_file.close()
                return {"val": val, "weights": None, "log": str(log_path), "stopped_at": done}
    except KeyboardInterrupt:
        checkpoint(done)  # the step in flight finished or never started: state is consistent
        log_file.close()
        raise
    log_file.close()
    default = spec.weights_path.with_suffix(".qat.pt") if cfg.qat else spec.weights_path
    export = Path(cfg.export) if cfg.export else default
    export.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"state_dict": model.state_dict(), "model": cfg.model, "iters": cfg.iters,
            "val_psnr": val["psnr"]}
    if cfg.qat:  # the deploy form, sub-pixel rewritten, as the fake-quant graph holds it
        from .quant.qat import acts_state

        ckpt.update(state_dict=model.gm.state_dict(), form="deploy-subpixel",
                    quant={"acts": acts_state(model.learned_plan())})
    _save_atomic(ckpt, export)
    return {"val": val, "weights": str(export), "log": str(log_path)}
