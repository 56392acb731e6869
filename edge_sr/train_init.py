"""Where a run's weights start: fresh, another model's weights, a transfer or a pruning."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .models import ModelError, ModelSpec, Recipe, ghost_from_plain, load_model
from .models.srresnet import prune_blocks


def _source(name: str, path: str | Path | None) -> nn.Module:
    """The training form of model ``name`` with weights from ``path`` (default: committed);
    ``load_model``'s one-line ``ModelError`` when they are missing or do not fit."""
    return load_model(name, path or None, deploy=False)


def copy_matching(dst: nn.Module, src: nn.Module, prefix: str = "") -> int:
    """Copy every tensor whose name (starting with ``prefix``) and shape match; returns
    how many were copied."""
    mine = dst.state_dict()
    same = {k: v for k, v in src.state_dict().items()
            if k.startswith(prefix) and k in mine and mine[k].shape == v.shape}
    dst.load_state_dict(same, strict=False)
    return len(same)


def init_from(model: nn.Module, spec: ModelSpec, rec: Recipe, init: str = "") -> nn.Module:
    """The starting point of a new run of ``spec``.

    Args:
        model: A freshly built training-form model.
        spec: Its registry entry.
        rec: Its recipe (``init``/``init_fn`` say what it starts from).
        init: A checkpoint path that overrides the recipe (the same model, or the
            recipe's ``init`` model when ``init_fn`` needs one).

    Returns:
        The model to train (``model`` itself, or a converted one).
    """
    if init and not rec.init:
        copy_matching(model, _source(spec.name, init))
        return model
    if not rec.init:
        return model
    src = _source(rec.init, init or None)
    if rec.init_fn == "ghost_from_plain":
        return ghost_from_plain(src)
    if rec.init_fn == "prune_blocks":
        return prune_blocks(src, len(model.body))
    # "body": the feature layers only, the upsampler starts afresh (FSRCNN's transfer)
    if copy_matching(model, src, "body." if rec.init_fn == "body" else "") == 0:
        raise ModelError(f"{rec.init} shares no weights with {spec.name}")
    return model
