"""The model zoo: one registry, ``MODELS``, from variant name to a ``ModelSpec``.

Adding a model is adding an entry here: a factory, its scale and colour space, and the
function that turns the training form into the deploy form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .ecbsr import ECBSR
from .fsrcnn import FSRCNN, FSRCNNTiny
from .ghostsr import GhostSR, ghost_from_plain
from .recipe import DEFAULT_RECIPE, RECIPES, Recipe
from .srresnet import Discriminator, SRResNet
from .xlsr import XLSR

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _eval_copy(model: nn.Module) -> nn.Module:
    return model.eval()


def _method_deploy(model: nn.Module) -> nn.Module:
    return model.deploy()


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of edge-sr needs to know about one model variant.

    Attributes:
        name: Registry key, e.g. ``fsrcnn_s_x2``.
        factory: Builds the training-form module.
        scale: Upscaling factor.
        colour: ``"y"`` (one channel, BT.601 luma) or ``"rgb"``.
        deploy: Training form -> inference form (fused ECBSR, fixed GhostSR shifts,
            folded batch-norm). Must return a module in eval mode.
        family: Paper family, for grouping in tables.
        int8_goal: Set5 PSNR drop (dB) the int8 fallback aims under, when tighter than
            the build's guard (the project's goals: 0.05 for FSRCNN and ECBSR, 0.1 for
            the rest).
    """

    name: str
    factory: Callable[[], nn.Module]
    scale: int
    colour: str
    deploy: Callable[[nn.Module], nn.Module] = _eval_copy
    family: str = ""
    int8_goal: float = 0.1

    @property
    def channels(self) -> int:
        """Input (and output) channels."""
        return 1 if self.colour == "y" else 3

    @property
    def recipe(self) -> Recipe:
        """How this variant is trained (``recipe.RECIPES``; a short default elsewhere)."""
        return RECIPES.get(self.name, DEFAULT_RECIPE)

    @property
    def weights_path(self) -> Path:
        """Where the committed checkpoint of this variant lives."""
        return WEIGHTS_DIR / f"{self.name}.pt"


def _register(specs: list[ModelSpec]) -> dict[str, ModelSpec]:
    return {s.name: s for s in specs}


MODELS: dict[str, ModelSpec] = _register(
    [ModelSpec(f"fsrcnn_x{s}", partial(FSRCNN, s, 56, 12, 4), s, "y", family="fsrcnn",
               int8_goal=0.05) for s in (2, 3, 4)]
    + [
        ModelSpec("fsrcnn_s_x2", partial(FSRCNN, 2, 32, 5, 1), 2, "y", family="fsrcnn",
                  int8_goal=0.05),
        ModelSpec("fsrcnn_tiny_x2", partial(FSRCNNTiny, 2), 2, "y", family="fsrcnn",
                  int8_goal=0.05),
    ]
    + [ModelSpec(f"ecbsr_m{m}c{c}_x2", partial(ECBSR, 2, m, c), 2, "y", _method_deploy, "ecbsr",
                 int8_goal=0.05) for m, c in ((4, 8), (4, 16), (10, 32))]
    + [ModelSpec(f"xlsr_x{s}", partial(XLSR, s), s, "rgb", family="xlsr") for s in (2, 3)]
    + [
        ModelSpec("ghostsr_x2", partial(GhostSR, 2, 8, 32), 2, "y", _method_deploy, "ghostsr"),
        # The paper's route: a trained plain edsrlite_x2, k-means, fine-tuned.
        ModelSpec("ghostsr_km_x2", partial(GhostSR, 2, 8, 32), 2, "y", _method_deploy,
                  "ghostsr"),
        ModelSpec("edsrlite_x2", partial(GhostSR, 2, 8, 32, ghost=False), 2, "y",
                  _method_deploy, "ghostsr"),
    ]
    + [ModelSpec(f"srresnet_b{b}_x4", partial(SRResNet, 4, b), 4, "rgb", _method_deploy,
                 "srresnet") for b in (16, 12, 8, 4, 2)]
)


class ModelError(ValueError):
    """A model name or checkpoint problem, with a one-line message."""


def get_spec(name: str) -> ModelSpec:
    """Look up a model variant, listing the valid names when it is unknown."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}"
        ) from None


def load_model(name: str, weights: str | Path | None = None, deploy: bool = True,
               require_weights: bool = True) -> nn.Module:
    """Build a model and load its checkpoint.

    Args:
        name: Registry name.
        weights: Checkpoint path; defaults to the committed one.
        deploy: Return the inference form (eval mode, re-parameterized).
        require_weights: Raise if no checkpoint exists (else keep random init).

    Returns:
        The model.

    Raises:
        ModelError: Unknown name, missing file, or a checkpoint that does not fit.
    """
    spec = get_spec(name)
    model = spec.factory()
    path = Path(weights) if weights else spec.weights_path
    learned = None  # QAT's activation scales, when the checkpoint has them
    if path.exists():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt
            if ckpt.get("form") == "deploy-subpixel":  # written by `train --qat`
                from .torch_passes import subpixel_deconv

                model = subpixel_deconv(spec.deploy(model.eval()))
                learned = ckpt.get("quant", {}).get("acts")
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - one line for any unreadable/mismatched file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"checkpoint {path} does not fit model {name}: {first}") from None
    elif require_weights:
        raise ModelError(f"no checkpoint for model {name}: {path} does not exist "
                         f"(train one with `edge-sr train --model {name}`)")
    model.eval()
    model = spec.deploy(model) if deploy else model
    if learned:  # read by `quantize`
        model.qat_acts = learned
    return model


__all__ = ["MODELS", "ModelSpec", "ModelError", "Recipe", "get_spec", "load_model",
           "ghost_from_plain", "Discriminator", "WEIGHTS_DIR"]
