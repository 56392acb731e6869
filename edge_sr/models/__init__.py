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

from . import checkpoints, external
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
        int8_headroom: How many times under that drop the fallback aims on its
            validation images (whole T91 images, training data): the test set's drop runs
            1.4-2.1x the validation's for most models, 2.5-3.4x for fsrcnn_x3.
        source: For a model outside the registry, its ``--model`` reference
            (``models.external``); empty for registry models.
        kernels_of: Registry model whose tuning databases this one shares, its kernels
            being a subset of that model's (a pruned SRResNet's convs are the 16-block
            net's, shape for shape); empty: its own.
    """

    name: str
    factory: Callable[[], nn.Module]
    scale: int
    colour: str
    deploy: Callable[[nn.Module], nn.Module] = _eval_copy
    family: str = ""
    int8_goal: float = 0.1
    int8_headroom: float = 2.0
    source: str = ""
    kernels_of: str = ""

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
    # fsrcnn_x3's Set5 int8 drop ran 2.5-3.4x its validation drop in four builds (x2 and
    # x4: 1.4-1.6x), ECBSR's 2.1-2.2x: both past the default headroom's 2x (docs/int8.md)
    [ModelSpec(f"fsrcnn_x{s}", partial(FSRCNN, s, 56, 12, 4), s, "y", family="fsrcnn",
               int8_goal=0.05, int8_headroom=3.5 if s == 3 else 2.0) for s in (2, 3, 4)]
    + [
        ModelSpec("fsrcnn_s_x2", partial(FSRCNN, 2, 32, 5, 1), 2, "y", family="fsrcnn",
                  int8_goal=0.05),
        ModelSpec("fsrcnn_tiny_x2", partial(FSRCNNTiny, 2), 2, "y", family="fsrcnn",
                  int8_goal=0.05),
    ]
    + [ModelSpec(f"ecbsr_m{m}c{c}_x2", partial(ECBSR, 2, m, c), 2, "y", _method_deploy, "ecbsr",
                 int8_goal=0.05, int8_headroom=2.5) for m, c in ((4, 8), (4, 16), (10, 32))]
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
                 "srresnet", kernels_of="srresnet_b16_x4" if b != 16 else "")
       for b in (16, 12, 8, 4, 2)]
)


class ModelError(ValueError):
    """A model name or checkpoint problem, with a one-line message."""


_EXTERNAL: dict[str, ModelSpec] = {}


def _external_spec(ref: str) -> ModelSpec:
    """The spec of a model outside the registry, probed once per process."""
    if ref not in _EXTERNAL:
        declare(ref)
    return _EXTERNAL[ref]


def declare(ref: str, scale: int | None = None, colour: str | None = None) -> ModelSpec:
    """Resolve a model reference with what the user states of it (``--scale``,
    ``--colour``): an external model is probed with that colour's channel count and must
    upscale by that scale; a registry model must already be so.

    Raises:
        ModelError: the statement contradicts the model, in one line.
    """
    if colour is not None and colour not in external.COLOUR_CHANNELS:
        raise ModelError(f"unknown --colour {colour}: choose y or rgb")
    if not external.is_external(ref):
        spec = get_spec(ref)
        for flag, stated, known in (("--scale", scale, spec.scale),
                                    ("--colour", colour, spec.colour)):
            if stated is not None and stated != known:
                raise ModelError(f"{ref} is {flag} {known}, not {stated}")
        return spec
    make = external.factory(ref, ModelError)
    found, colour = external.probe(make, ref, ModelError, scale=scale, colour=colour)
    _EXTERNAL[ref] = ModelSpec(external.safe_name(ref, set(MODELS)), make, found, colour,
                               family="external", source=ref)
    return _EXTERNAL[ref]


def get_spec(name: str) -> ModelSpec:
    """Look up a model variant (or resolve a ``MODULE:FACTORY`` / ``.pt2`` reference, see
    ``models.external``), listing the valid names when it is unknown."""
    if external.is_external(name):
        return _external_spec(name)
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}"
        ) from None


def _some(keys: list[str], shown: int = 4) -> str:
    """``a, b, c, d and 5 more`` (or ``none``)."""
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_model(name: str, weights: str | Path | None = None, deploy: bool = True,
               require_weights: bool = True) -> nn.Module:
    """Build a model and load its checkpoint.

    Args:
        name: Registry name, or an external reference (``models.external``).
        weights: Checkpoint path; defaults to the committed one (an external model
            keeps the weights its factory or file gives it).
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
    if spec.source and not weights:
        pass  # an external model keeps the weights its factory or file gives it
    elif path.exists():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            state = external.state_dict(ckpt)
            if ckpt.get("form") == "deploy-subpixel":  # written by `train --qat`
                from .torch_passes import subpixel_deconv

                model = subpixel_deconv(spec.deploy(model.eval()))
                learned = ckpt.get("quant", {}).get("acts")
            state, _ = checkpoints.to_model_keys(state, set(model.state_dict()))
            keys = model.load_state_dict(state, strict=False)
        except Exception as exc:  # noqa: BLE001 - one line for any unreadable/mismatched file
            first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln),
                         external.first_line(exc))
            raise ModelError(f"checkpoint {path} does not fit model {name}: {first}") from None
        if keys.missing_keys or keys.unexpected_keys:
            raise ModelError(f"checkpoint {path} does not fit model {name}: "
                             f"missing {_some(keys.missing_keys)}; "
                             f"unexpected {_some(keys.unexpected_keys)}")
    elif require_weights:
        raise ModelError(f"no checkpoint for model {name}: {path} does not exist "
                         f"(train one with `edge-sr train --model {name}`)")
    model.eval()
    model = spec.deploy(model) if deploy else model
    if learned:  # read by `quantize`
        model.qat_acts = learned
    return model


__all__ = ["MODELS", "ModelSpec", "ModelError", "Recipe", "declare", "get_spec", "load_model",
           "ghost_from_plain", "Discriminator", "WEIGHTS_DIR"]
