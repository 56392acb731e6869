"""Training recipes: how each registry model is trained (``ModelSpec.recipe``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# Training images and the held-out validation images (see ``edge_sr.data.HOLDOUT``).
TRAIN_SETS = ("t91", "bsd200:train")
VAL_SET = "bsd200:val"


@dataclass(frozen=True)
class Finish:
    """A last, short fine-tune once a model's schedule is complete (``edge-sr train
    --finish``; ``train-zoo`` runs it after the schedule).

    It trains in float32 (bf16 autocast rounds activations to 8 bits, which costs about
    0.02 dB late in a schedule) on the training images plus their downscaled copies
    (FSRCNN's augmentation), at a low learning rate, from the schedule's best weights.

    Attributes:
        iters: Steps (warm-up, then cosine to the recipe's ``final_lr``).
        lr: Peak learning rate.
        warmup: Linear warm-up steps.
        val_every: Validation interval.
        downscales: Extra images at these downscale factors (``Recipe.downscales``).
        lr_patch: LR patch side, if not the schedule's (x3/x4 schedules train on small
            patches, most of whose outputs see the zero padding).
    """

    iters: int = 12_000
    lr: float = 5e-5
    warmup: int = 200
    val_every: int = 1000
    downscales: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6)
    lr_patch: int | None = None


@dataclass(frozen=True)
class Recipe:
    """One model's training schedule.

    The learning rate warms up linearly over ``warmup`` steps to ``lr``, then follows a
    cosine down to ``lr * final_lr``.

    Attributes:
        iters: Optimizer steps of the whole schedule.
        batch: Patches per step.
        lr_patch: LR patch side in pixels (the HR patch is ``lr_patch * scale``).
        lr: Peak Adam learning rate.
        warmup: Linear warm-up steps.
        final_lr: Learning rate at the end, as a fraction of ``lr``.
        lr_mult: ``(name fragment, multiplier)`` pairs: parameters whose name contains the
            fragment learn at ``lr * multiplier`` (first match wins).
        val_every: Validate (held-out images) and checkpoint every N steps.
        init: Start from another model's committed weights (matching names and shapes
            only): the paper's transfer (FSRCNN x3/x4 from x2), pruning (SRResNet b12..b2
            from b16), conversion (GhostSR from its plain twin).
        init_fn: How ``init`` becomes this model: ``""`` (copy matching tensors),
            ``"body"`` (copy the ``body.*`` tensors only: the upsampler starts afresh),
            ``"ghost_from_plain"`` or ``"prune_blocks"``.
        bf16: Train under bfloat16 autocast where the CPU has native bf16 (the float32
            master weights and the last layer stay float32).
        downscales: Extra training images: each HR image bicubic-downscaled by these
            factors (FSRCNN's data augmentation; empty: the images as they are).
        finish: The fine-tune that follows the schedule, if any (``Finish``).
        compile: Run the training step's forward and backward through ``torch.compile``
            (on for the models it speeds up: FSRCNN 1.3x, ECBSR 1.5x on the host; XLSR
            runs slower compiled, SRResNet level, GhostSR's sampled shift breaks graphs).
        loss: Pixel loss, a key of ``edge_sr.train.CRITERIA``: ``"l1"``, or ``"mse"``
            (the squared error PSNR measures; not used by any recipe, docs/training.md).
        ema: Decay of an exponential moving average of the weights, which is what is
            validated, selected and exported (0: the weights themselves).
        teacher: Registry name of a model whose committed weights teach this one from
            the first step (``TrainConfig.teacher``); its schedule must be complete first.
        teacher_x8: The teacher's output is its self-ensemble (eight passes at start-up).
        seed: Seed of the weights' init and the patch sampler.
    """

    iters: int
    batch: int = 16
    lr_patch: int = 32
    lr: float = 5e-4
    warmup: int = 1000
    final_lr: float = 0.01
    lr_mult: tuple[tuple[str, float], ...] = ()
    val_every: int = 2000
    init: str = ""
    init_fn: str = ""
    bf16: bool = True
    compile: bool = False
    datasets: tuple[str, ...] = field(default=TRAIN_SETS)
    val_dataset: str = VAL_SET
    downscales: tuple[float, ...] = ()
    finish: Finish | None = None
    loss: str = "l1"
    ema: float = 0.0
    teacher: str = ""
    teacher_x8: bool = False
    seed: int = 0

    def schedule(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        keep = ("iters", "batch", "lr_patch", "lr", "warmup", "final_lr", "lr_mult",
                "datasets")
        d = asdict(self)
        out = {k: (list(map(list, d[k])) if k == "lr_mult" else
                   list(d[k]) if k == "datasets" else d[k]) for k in keep}
        if self.downscales:  # absent when unused, so runs stored without it still resume
            out["downscales"] = list(self.downscales)
        if self.loss != "l1":  # likewise
            out["loss"] = self.loss
        if self.ema:
            out["ema"] = self.ema
        return out

    def finish_recipe(self) -> Recipe:
        """The recipe of the ``finish`` stage: a plain float32 fine-tune of this model."""
        f = self.finish
        if f is None:
            raise ValueError("this recipe has no finishing fine-tune")
        return replace(self, iters=f.iters, lr=f.lr, warmup=f.warmup, val_every=f.val_every,
                       downscales=f.downscales, lr_patch=f.lr_patch or self.lr_patch,
                       bf16=False, init="", init_fn="", finish=None, teacher="",
                       teacher_x8=False)


# FSRCNN's paper trains its deconvolution at a tenth of the conv layers' rate.
_FSRCNN_MULT = (("deconv", 0.1),)
# The finishing fine-tune's float32 and downscaled copies each add (measured on fsrcnn_x2/x4
# and ecbsr_m4c16_x2, docs/training.md).
_FSRCNN = {"lr_mult": _FSRCNN_MULT, "compile": True, "finish": Finish()}
# x3/x4's schedules are short (60,000 steps) on small patches: their finish trains longer,
# at a higher rate, on 40-pixel LR patches (docs/training.md).
_FINISH_X34 = Finish(iters=30_000, lr=2e-4, warmup=500, val_every=2000, lr_patch=40)
# GhostSR's shift logits must move far from their zero init to pick a direction.
_GHOST_MULT = (("logits", 10.0),)

# Models without an entry (none in the registry today) train on this short schedule.
DEFAULT_RECIPE = Recipe(20_000)

RECIPES: dict[str, Recipe] = {
    "fsrcnn_x2": Recipe(150_000, lr=1.5e-3, lr_patch=32, **_FSRCNN),
    "fsrcnn_x3": Recipe(60_000, lr=1e-3, lr_patch=24, init="fsrcnn_x2", init_fn="body",
                        **{**_FSRCNN, "finish": _FINISH_X34}),
    "fsrcnn_x4": Recipe(60_000, lr=1e-3, lr_patch=20, init="fsrcnn_x2", init_fn="body",
                        **{**_FSRCNN, "finish": _FINISH_X34}),
    # float32: the smallest FSRCNN feels bf16's 8-bit activations all through a schedule
    # (20,000 steps at 5e-4 from the same weights: held-out 30.5475 float32, 30.5341 bf16),
    # and on its small convs bf16 is not much faster (docs/training.md).
    "fsrcnn_s_x2": Recipe(150_000, lr=2e-3, lr_patch=32, bf16=False, **_FSRCNN),
    "fsrcnn_tiny_x2": Recipe(60_000, lr=2e-3, lr_patch=32, val_every=5000, compile=True),
    "ecbsr_m4c8_x2": Recipe(100_000, lr=1e-3, lr_patch=48, compile=True),
    # taught from the first step: the same net reaches 31.007 held-out at 20,000 steps
    # where untaught it stood at 30.912, and no later schedule closes the gap
    # (docs/training.md; seed 11 is the committed checkpoint's run)
    "ecbsr_m4c16_x2": Recipe(200_000, lr=1e-3, lr_patch=48, warmup=2000, compile=True,
                             downscales=(0.9, 0.8, 0.7, 0.6), ema=0.999,
                             teacher="edsrlite_x2", teacher_x8=True, seed=11),
    "ecbsr_m10c32_x2": Recipe(100_000, lr=1e-3, lr_patch=48, compile=True),
    "xlsr_x2": Recipe(150_000, lr=2e-3, lr_patch=32, warmup=2000),
    "xlsr_x3": Recipe(150_000, lr=2e-3, lr_patch=32, warmup=2000),
    "ghostsr_x2": Recipe(150_000, lr=5e-4, lr_patch=48, lr_mult=_GHOST_MULT),
    "ghostsr_km_x2": Recipe(30_000, lr=2e-4, lr_patch=48, lr_mult=_GHOST_MULT, warmup=500,
                            init="edsrlite_x2", init_fn="ghost_from_plain"),
    "edsrlite_x2": Recipe(150_000, lr=5e-4, lr_patch=48),
    # Sized for two CPU cores (about 4.5 h at 2.5 steps/s), not the paper's 10^6 steps: the
    # pruning study needs a finished b16 to start from. float32: late in the schedule bf16
    # scored 0.023 dB under it on the held-out images (docs/training.md).
    "srresnet_b16_x4": Recipe(40_000, lr=2e-4, lr_patch=24, val_every=2500, bf16=False),
}
# validated every 500 steps: a fine-tune recovers most of its loss in its first thousand
for _b in (12, 8, 4, 2):
    RECIPES[f"srresnet_b{_b}_x4"] = Recipe(
        10_000, lr=1e-4, lr_patch=24, warmup=500, val_every=500, init="srresnet_b16_x4",
        init_fn="prune_blocks", bf16=False)
