"""Training: each model's recipe, L1 (+ optional adversarial) loss, resumable, logged.

A run lives in one folder: ``last.pt`` (model, optimizer, sampler and RNG state, the
schedule it follows, elapsed seconds), ``best.pt`` (the weights that scored best on the
held-out validation images), ``log.csv`` and ``recipe.json``. Rerunning the same command
continues the same schedule, on this machine or another: training time adds up across
invocations. The committed checkpoint is replaced only by weights that beat it on the
validation images.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import threading
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .data import TrainPatches
from .errors import EdgeSRError
from .evaluate import evaluate_module, load_pairs, self_ensemble
from .models import Discriminator, ModelError, ModelSpec, Recipe, checkpoints, get_spec, load_model
from .train_init import init_from, recorded_model

# The pixel losses a recipe may name (``Recipe.loss``).
CRITERIA = {"l1": F.l1_loss, "mse": F.mse_loss}
LOG_FIELDS = ["iter", "loss", "lr", "val_psnr", "val_ssim", "elapsed_s"]
# QAT fine-tunes a trained model: a short schedule at a low rate, without the recipe's
# teacher and moving average, which are float training's (unless given).
QAT_DEFAULTS = {"iters": 2000, "lr": 1e-4, "warmup": 0, "val_every": 250, "teacher": "",
                "teacher_x8": False, "ema": 0.0}


class TrainError(EdgeSRError):
    """A run that cannot start or continue as asked, with a one-line message."""


@dataclass
class TrainConfig:
    """Arguments of ``train``. Fields left ``None`` take the model's recipe value.

    Attributes:
        model: Registry name.
        iters: Total optimizer steps of the schedule.
        batch: Patches per step.
        lr_patch: LR patch side (the HR patch is ``lr_patch * scale``).
        lr: Peak Adam learning rate.
        warmup: Linear warm-up steps.
        seed: Seed for init and sampling; equal seeds give equal runs (``None``: the
            recipe's).
        out: Run folder (default ``runs/MODEL``).
        val_every: Validate and checkpoint every N steps.
        val_dataset: Validation images (default: the held-out training images).
        datasets: Training datasets.
        downscales: Extra training images at these downscale factors (``Recipe``).
        lr_mult: ``"NAME=F"`` strings replacing the recipe's per-layer learning-rate
            multipliers (``Recipe.lr_mult``): parameters whose name contains NAME learn
            at ``lr * F``; empty: every layer at ``lr``.
        finish: Run the recipe's finishing fine-tune (``Recipe.finish``) from ``init``
            (default: the committed weights) instead of its schedule; ``out`` defaults
            to ``runs/MODEL/finish``.
        export: Where the best weights go (default: the committed location). They are
            written only when they beat what that file holds on the validation images.
        init: Start from these weights (fine-tuning); ignored when resuming. Default:
            the recipe's ``init`` model's committed weights, if any.
        adversarial: Add the SRGAN adversarial loss (RGB models).
        adv_weight: Weight of the adversarial term.
        threads: torch intra-op threads (0 = torch default).
        stop_after: Stop (with a checkpoint) after this many steps in this invocation.
        minutes: Stop (with a checkpoint) after this many minutes in this invocation.
        device: ``"cpu"`` or ``"cuda"``.
        bf16: bfloat16 autocast (``None``: the recipe's choice, where the device has
            native bf16 arithmetic).
        compile: ``torch.compile`` the training forward (``None``: the recipe's choice).
        loss: Pixel loss, a key of ``CRITERIA`` (``None``: the recipe's).
        ema: Decay of the weights' moving average that is validated and exported, in
            [0, 1) (``None``: the recipe's; 0: off). Not with ``qat``.
        qat: Quantization-aware fine-tuning of the deploy form (starting from ``init`` or
            the committed weights) through the int8 fake-quant; exports a deploy-form
            checkpoint (default ``weights/MODEL.qat.pt``) with the learned activation
            scales, which ``build --dtype int8`` uses instead of calibrating.
        teacher: Registry name of a model of the same scale and colour whose committed
            weights teach this one: its output on every training image (computed once)
            is a second target, at weight ``distill``. Not with ``qat``. ``None``: the
            recipe's (none for ``qat`` and ``finish``); ``""``: none.
        distill: Weight of the distance to the teacher's output, in the run's pixel loss
            (with ``qat``: the L1 distance to the float model's).
        teacher_x8: The teacher's output is its self-ensemble (``self_ensemble``: eight
            passes per image, once, at start-up) instead of one pass (``None``: the
            recipe's, with the recipe's teacher).
    """

    model: str
    iters: int | None = None
    batch: int | None = None
    lr_patch: int | None = None
    lr: float | None = None
    warmup: int | None = None
    seed: int | None = None
    out: str = ""
    val_every: int | None = None
    val_dataset: str | None = None
    datasets: list[str] | None = None
    downscales: list[float] | None = None
    lr_mult: list[str] | None = None
    export: str = ""
    init: str = ""
    adversarial: bool = False
    adv_weight: float = 1e-3
    threads: int = 0
    stop_after: int = 0
    minutes: float = 0.0
    device: str = "cpu"
    bf16: bool | None = None
    compile: bool | None = None
    loss: str | None = None
    ema: float | None = None
    qat: bool = False
    distill: float = 1.0
    teacher: str | None = None
    teacher_x8: bool | None = None
    finish: bool = False

    def recipe(self, spec: ModelSpec) -> Recipe:
        """The model's recipe with this config's overrides applied."""
        over = {k: getattr(self, k) for k in ("iters", "batch", "lr_patch", "lr", "warmup",
                                               "val_every", "val_dataset", "bf16", "compile",
                                               "loss", "ema", "seed", "teacher",
                                               "teacher_x8")
                if getattr(self, k) is not None}
        if self.datasets is not None:
            over["datasets"] = tuple(self.datasets)
        if self.downscales is not None:
            over["downscales"] = tuple(self.downscales)
        if self.lr_mult is not None:
            over["lr_mult"] = tuple(_lr_mult(text) for text in self.lr_mult)
        if self.qat:  # a short fine-tune at a low rate, float32 fake-quant
            for key, value in QAT_DEFAULTS.items():
                over.setdefault(key, value)
            over["bf16"] = over["compile"] = False
        base = spec.recipe
        if self.finish:
            if base.finish is None:
                raise TrainError(f"{spec.name}'s recipe has no finishing fine-tune")
            base = base.finish_recipe()
        if over.get("teacher", base.teacher) != base.teacher and self.teacher_x8 is None:
            over["teacher_x8"] = False  # another teacher: one pass unless asked
        rec = replace(base, **over)
        if min(rec.iters, rec.batch, rec.lr_patch, rec.val_every) < 1 or rec.lr <= 0:
            raise TrainError("iters, batch, lr-patch and val-every must be >= 1 and lr > 0")
        if not 0 <= rec.ema < 1:
            raise TrainError(f"ema: expected a decay in [0, 1), got {rec.ema}")
        if self.qat and rec.ema:
            raise TrainError("--ema is for float training, not --qat")
        if rec.loss not in CRITERIA:
            raise TrainError(f"unknown loss {rec.loss!r}; expected one of {', '.join(CRITERIA)}")
        return rec


def _lr_mult(text: str) -> tuple[str, float]:
    """``"deconv=0.1"`` -> ``("deconv", 0.1)``."""
    name, _, value = text.partition("=")
    try:
        factor = float(value)
    except ValueError:
        factor = 0.0
    if not name or not factor > 0:
        raise TrainError(f"lr-mult: expected NAME=F with F > 0, got {text!r}")
    return name, factor


def lr_at(rec: Recipe, step: int) -> float:
    """Learning rate of step ``step``: linear warm-up, then cosine to ``final_lr``."""
    if step < rec.warmup:
        return rec.lr * (step + 1) / rec.warmup
    span = max(1, rec.iters - rec.warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - rec.warmup) / span)))
    return rec.lr * (rec.final_lr + (1 - rec.final_lr) * cos)


def native_bf16(device: str) -> bool:
    """Whether bf16 autocast runs in hardware here (AVX512-BF16/AMX CPUs, CUDA)."""
    if device.startswith("cuda"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The layer that writes the model's output: its last child with weights (the last
    one inside it, when that child is a ``Sequential``)."""
    with_params = [m for m in model.children() if any(True for _ in m.parameters())]
    last = with_params[-1]
    if isinstance(last, torch.nn.Sequential):
        last = [m for m in last if any(True for _ in m.parameters())][-1]
    return last


def keep_float32(module: torch.nn.Module, device: str) -> None:
    """Run ``module`` outside autocast, in float32.

    Under bf16 its output would carry 8 significant bits: about 0.002 on a pixel of 0.5,
    the size of the errors a 37 dB model still makes.
    """
    module.autocast_device = device.split(":")[0]
    # A bound method, so that deep copies (deploy forms) call their own weights.
    module.forward = types.MethodType(_float32_forward, module)


def _float32_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(self.autocast_device, enabled=False):
        return type(self).forward(self, x.float())


def _param_groups(model: torch.nn.Module, rec: Recipe) -> list[dict]:
    """One group per learning-rate multiplier: the recipe's name fragments, and QAT's
    log step sizes at 10x (LSQ's step-size gradient scaling, simplified)."""
    scales = {id(p) for p in model.log_scales.parameters()} if hasattr(model, "log_scales") \
        else set()
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        mult = 10.0 if id(p) in scales else next(
            (m for frag, m in rec.lr_mult if frag in name), 1.0)
        groups.setdefault(mult, []).append(p)
    return [{"params": ps, "lr_mult": m} for m, ps in groups.items()]


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _qat_model(cfg: TrainConfig, spec) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The fake-quant training module, calibrated from the trained float model (full
    int8, nearest rounding: what it trains through), and the frozen float teacher."""
    from .quant import QuantConfig, quantize
    from .quant.qat import FakeQuant

    float_model = load_model(cfg.model, cfg.init or None)
    q = quantize(float_model, spec, QuantConfig(
        max_drop=float("inf"), fallback=False, report_culprits=False,
        weight_rounding="nearest"))
    gm, plan = q.gm, q.plan
    teacher = copy.deepcopy(gm).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    for p in gm.parameters():
        p.requires_grad_(True)
    return FakeQuant(gm, plan), teacher


@dataclass
class _Run:
    """Everything one training step touches."""

    cfg: TrainConfig
    rec: Recipe
    spec: ModelSpec
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    data: TrainPatches
    disc: torch.nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    teacher: torch.nn.Module | None = None
    bf16: bool = False
    channels_last: bool = False
    forward: torch.nn.Module | None = None  # the model, or its compiled wrapper
    prior: dict | None = None  # a continued run: steps and seconds behind its start weights
    averaged: AveragedModel | None = None  # the weights' moving average (``Recipe.ema``)

    def __post_init__(self) -> None:
        # The wrapper shares the model's parameters; checkpoints and validation use the
        # plain module (no recompilation for eval mode or whole-image shapes).
        self.forward = torch.compile(self.model) if self.rec.compile else self.model
        if self.rec.ema:
            self.averaged = AveragedModel(self.model, use_buffers=True,
                                          multi_avg_fn=get_ema_multi_avg_fn(self.rec.ema))
            # its first update copies: the average starts at the weights the run starts from
            self.averaged.update_parameters(self.model)

    @property
    def scored(self) -> torch.nn.Module:
        """The weights that are validated, selected and exported."""
        return self.averaged.module if self.averaged is not None else self.model

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        lr_t, hr_t = (torch.from_numpy(a).to(self.cfg.device)
                      for a in self.data.batch(self.rec.batch))
        if self.channels_last:
            lr_t = lr_t.contiguous(memory_format=torch.channels_last)
        return lr_t, hr_t

    def step(self, step: int) -> float:
        """One optimizer step (generator, then discriminator when adversarial)."""
        lr = lr_at(self.rec, step)
        for group in self.opt.param_groups + (self.opt_d.param_groups if self.opt_d else []):
            group["lr"] = lr * group.get("lr_mult", 1.0)
        if hasattr(self.model, "anneal"):
            self.model.anneal(step / self.rec.iters)
        lr_t, hr_t = self.batch()
        with torch.autocast(self.cfg.device.split(":")[0], torch.bfloat16, enabled=self.bf16):
            sr = self.forward(lr_t).float()
        crit = CRITERIA[self.rec.loss]
        if self.rec.teacher:  # the HR patches carry the teacher's output after the HR pixels
            hr_t, taught = hr_t.split(self.spec.channels, dim=1)
            loss = crit(sr, hr_t) + self.cfg.distill * crit(sr, taught)
        else:
            loss = crit(sr, hr_t)
        if self.teacher is not None and self.cfg.distill:
            with torch.no_grad():
                target = self.teacher(lr_t)
            loss = loss + self.cfg.distill * F.l1_loss(sr, target)
        if self.disc is not None:
            loss = loss + self.cfg.adv_weight * F.softplus(-self.disc(sr)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        if self.disc is not None:
            d_loss = (F.softplus(-self.disc(hr_t)).mean()
                      + F.softplus(self.disc(sr.detach())).mean())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        return loss.item()

    def state(self, done: int, elapsed: float) -> dict:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "iter": done,
                 "data_rng": self.data.rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "elapsed_s": elapsed,
                 "schedule": self.schedule(), "prior": self.prior}
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), opt_d=self.opt_d.state_dict())
        if self.averaged is not None:
            state["ema"] = self.averaged.state_dict()
        return state

    def schedule(self) -> dict:
        extra = {"teacher": self.rec.teacher, "distill": self.cfg.distill} \
            if self.rec.teacher else {}
        if self.rec.teacher_x8:  # recorded only when set: older runs' schedules still match
            extra["teacher_x8"] = True
        return {**self.rec.schedule(), "seed": self.rec.seed, "qat": self.cfg.qat,
                "adversarial": self.cfg.adversarial, **extra}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["ema"])
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.data.rng.bit_generator.state = state["data_rng"]
        torch.set_rng_state(state["torch_rng"])


def _check_schedule(stored: dict | None, wanted: dict, last: Path) -> None:
    """Refuse to continue a run under another schedule (its learning rate would jump)."""
    if stored is None:
        return
    keys = list(wanted) + [k for k in stored if k not in wanted]  # set on one side only
    diff = [f"{k}={stored.get(k)!r} (asked {wanted.get(k)!r})" for k in keys
            if stored.get(k) != wanted.get(k)]
    if diff:
        raise TrainError(f"{last} follows another schedule: {', '.join(diff)}; rerun with "
                         f"the same settings, or pass a new --out to start afresh")


def _build(cfg: TrainConfig, spec: ModelSpec, rec: Recipe, resuming: bool,
           complete: bool = False) -> _Run:
    model, teacher = _qat_model(cfg, spec) if cfg.qat else (spec.factory(), None)
    if cfg.adversarial and spec.colour != "rgb":
        raise TrainError("--adversarial needs an RGB model (the discriminator sees RGB)")
    if not resuming and not cfg.qat:
        model = init_from(model, spec, rec, cfg.init)
    disc = Discriminator() if cfg.adversarial else None
    dev = cfg.device
    channels_last = dev == "cpu" and not cfg.qat  # oneDNN's fast conv layout
    model = model.to(dev, memory_format=torch.channels_last if channels_last
                     else torch.preserve_format)
    if teacher is not None:
        teacher = teacher.to(dev)
    opt = torch.optim.Adam(_param_groups(model, rec), lr=rec.lr)
    opt_d = None
    if disc is not None:
        disc = disc.to(dev)
        opt_d = torch.optim.Adam(disc.parameters(), lr=rec.lr)
    # a bad teacher is refused before the training images load; a complete run takes no
    # step, so it skips the teacher's outputs (minutes for a self-ensemble)
    taught = _teacher(rec.teacher, spec, rec.teacher_x8) if rec.teacher and not complete \
        else None
    patch = rec.lr_patch * spec.scale
    data = TrainPatches(list(rec.datasets), spec.scale, spec.colour, patch, rec.seed,
                        rec.downscales)
    if taught is not None:
        data.add_teacher(taught)
    bf16 = rec.bf16 and native_bf16(dev)
    if bf16:
        keep_float32(output_layer(model), dev)
    return _Run(cfg, rec, spec, model, opt, data, disc, opt_d, teacher, bf16, channels_last)


def _teacher(name: str, spec: ModelSpec, x8: bool = False):
    """``name``'s committed deploy form as a function of one LR array (float32, clipped
    to the image range, as the images it is compared with); ``x8``: its self-ensemble."""
    try:
        t_spec = get_spec(name)
        model = load_model(name)
    except ModelError as err:
        raise TrainError(f"--teacher {name}: {err}") from None
    if (t_spec.scale, t_spec.colour) != (spec.scale, spec.colour):
        raise TrainError(f"--teacher {name} is x{t_spec.scale} {t_spec.colour}; "
                         f"{spec.name} is x{spec.scale} {spec.colour}")

    @torch.no_grad()
    def predict(lr):
        x = torch.from_numpy(lr)[None]
        return (self_ensemble(model, x) if x8 else model(x).clamp(0, 1))[0].numpy()

    return predict


def _committed_score(path: Path, name: str, spec: ModelSpec, pairs) -> float:
    """Validation PSNR of the checkpoint at ``path`` (-inf when there is none)."""
    if not path.exists():
        return float("-inf")
    try:
        return evaluate_module(load_model(name, path), spec, pairs)["mean"]["psnr"]
    except ModelError:
        return float("-inf")


def train(cfg: TrainConfig) -> dict:
    """Train a registered model on its recipe; resume from ``cfg.out/last.pt``.

    Returns:
        ``{"val", "best_psnr", "weights", "log", "iter", "done"}``: the last validation,
        the best validation PSNR, where weights were exported (``None`` if not this time),
        the log path, the step reached and whether the schedule is complete.
    """
    spec = get_spec(cfg.model)
    rec = cfg.recipe(spec)
    if rec.teacher and cfg.qat:
        raise TrainError("--teacher is for float training; --qat distills from the float "
                         "model itself")
    if rec.teacher_x8 and not rec.teacher:
        raise TrainError("--teacher-x8 needs --teacher")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(rec.seed)
    if cfg.finish and not cfg.init:
        cfg = replace(cfg, init=str(spec.weights_path))
    out = Path(cfg.out or (f"runs/{cfg.model}/finish" if cfg.finish else f"runs/{cfg.model}"))
    last = out / "last.pt"
    stored = torch.load(last, map_location="cpu", weights_only=False) if last.exists() else None
    run = _build(cfg, spec, rec, stored is not None,
                 complete=stored is not None and stored["iter"] >= rec.iters)
    # a finish, or a run from a checkpoint of the model itself (committed or a run's
    # best), continues its training: the cost behind those weights counts (a transfer
    # from another model's does not)
    if cfg.finish or (cfg.init and recorded_model(cfg.init) == spec.name):
        run.prior = stored.get("prior") if stored else checkpoints.training_cost(
            torch.load(cfg.init, map_location="cpu", weights_only=True))
    _check_schedule(stored and stored.get("schedule"), run.schedule(), last)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(
        {"model": cfg.model, **run.schedule(), "val_dataset": rec.val_dataset,
         "val_every": rec.val_every, "bf16": run.bf16}, indent=1))
    start, elapsed0, best = 0, 0.0, float("-inf")
    if stored is not None:
        run.restore(stored)
        start, elapsed0 = stored["iter"], stored.get("elapsed_s", 0.0)
        best = stored.get("best_psnr", best)
    val_pairs = load_pairs(rec.val_dataset, spec.scale, spec.colour)
    default = spec.weights_path.with_suffix(".qat.pt") if cfg.qat else spec.weights_path
    export = Path(cfg.export) if cfg.export else default
    to_beat = float("-inf") if cfg.qat else _committed_score(export, cfg.model, spec, val_pairs)
    with _sigterm_as_interrupt():
        return _loop(run, out, start, elapsed0, best, val_pairs, export, to_beat)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops a run like Ctrl-C: with a checkpoint. (Background jobs started from a
    non-interactive shell ignore SIGINT, so ``kill`` is how they are stopped.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _loop(run: _Run, out: Path, start: int, elapsed0: float, best: float, val_pairs,
          export: Path, to_beat: float) -> dict:
    cfg, rec, spec = run.cfg, run.rec, run.spec
    log_path = out / "log.csv"
    new_log = not log_path.exists() or start == 0
    with open(log_path, "w" if new_log else "a", newline="") as log_file:
        log = csv.DictWriter(log_file, LOG_FIELDS)
        if new_log:
            log.writeheader()
        t0, val, exported = time.time(), {"psnr": float("nan"), "ssim": float("nan")}, None
        clock = _Clock(elapsed0)
        bar = tqdm(range(start, rec.iters), initial=start, total=rec.iters, desc=cfg.model,
                   dynamic_ncols=True, mininterval=2.0)
        deploy = (lambda m: m) if cfg.qat else spec.deploy
        done = start
        run.model.train()
        try:
            for step in bar:
                loss = run.step(step)
                done = step + 1
                clock.tick()
                if done % rec.val_every == 0 or done == rec.iters:
                    val = _validate(run, deploy, val_pairs)
                    bar.set_postfix(loss=f"{loss:.4f}", val_psnr=f"{val['psnr']:.2f}")
                    elapsed = clock.tick()
                    log.writerow({"iter": done, "loss": round(loss, 6),
                                  "lr": round(lr_at(rec, step), 8),
                                  "val_psnr": round(val["psnr"], 4),
                                  "val_ssim": round(val["ssim"], 5),
                                  "elapsed_s": round(elapsed, 1)})
                    log_file.flush()
                    if val["psnr"] > best:
                        best = val["psnr"]
                        weights = _weights(run, done, val, elapsed)
                        _save_atomic(weights, out / "best.pt")
                        if not cfg.qat and best > to_beat:
                            _save_atomic(weights, export)
                            exported, to_beat = str(export), best
                    _save_atomic({**run.state(done, elapsed), "best_psnr": best}, out / "last.pt")
                if _budget_spent(cfg, start, done, t0) and done < rec.iters:
                    break
        except KeyboardInterrupt:
            # the step in flight finished or never started: the state is consistent
            _save_atomic({**run.state(done, clock.tick()), "best_psnr": best}, out / "last.pt")
            raise
        _save_atomic({**run.state(done, clock.tick()), "best_psnr": best}, out / "last.pt")
    if cfg.qat and done == rec.iters:
        _save_atomic(_weights(run, done, val, clock.tick()), export)
        exported = str(export)
    return {"val": val, "best_psnr": best, "weights": exported, "log": str(log_path),
            "iter": done, "done": done == rec.iters}


# A step or a validation never takes this long; a longer gap between two steps is a pause
# (the run stopped with SIGSTOP while something else is timed) and is not training time.
PAUSE_S = 300.0


class _Clock:
    """Training time for the logs and checkpoints: the wall time between steps, gaps
    longer than ``PAUSE_S`` left out."""

    def __init__(self, start: float = 0.0):
        self.last, self.total = time.time(), start

    def tick(self) -> float:
        now = time.time()
        if now - self.last < PAUSE_S:
            self.total += now - self.last
        self.last = now
        return self.total


def _budget_spent(cfg: TrainConfig, start: int, done: int, t0: float) -> bool:
    if cfg.stop_after and done - start >= cfg.stop_after:
        return True
    return bool(cfg.minutes) and time.time() - t0 >= 60 * cfg.minutes


def _validate(run: _Run, deploy, pairs) -> dict:
    """Score the deploy form on the validation images (on the CPU, in float32)."""
    model = run.scored if run.cfg.device == "cpu" else copy.deepcopy(run.scored).cpu()
    try:
        return evaluate_module(deploy(model.eval()), run.spec, pairs)["mean"]
    finally:
        run.model.train()


def _weights(run: _Run, done: int, val: dict, elapsed: float) -> dict:
    """A checkpoint ``load_model`` reads: the training form's weights, their validation
    score and what they cost (steps, seconds over every invocation, device)."""
    ckpt = {"state_dict": {k: v.detach().cpu().contiguous()
                           for k, v in run.scored.state_dict().items()},
            "model": run.cfg.model, "iter": done, "val_psnr": val["psnr"],
            "val_dataset": run.rec.val_dataset, "schedule": run.schedule(),
            "elapsed_s": elapsed, "device": run.cfg.device.split(":")[0]}
    if run.prior:
        ckpt["prior"] = run.prior
    if run.cfg.qat:  # the deploy form, sub-pixel rewritten, as the fake-quant graph holds it
        from .quant.qat import acts_state

        ckpt.update(state_dict=run.model.gm.state_dict(), form="deploy-subpixel",
                    quant={"acts": acts_state(run.model.learned_plan())})
    return ckpt


__all__ = ["LOG_FIELDS", "TrainConfig", "TrainError", "lr_at", "native_bf16", "train"]
