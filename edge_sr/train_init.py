"""Where a run's weights start: fresh, another model's weights, a transfer or a pruning."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .models import ModelError, ModelSpec, Recipe, ghost_from_plain, load_model
from .models.srresnet import prune_blocks


def _source(name: str, path: str | Path | None) -> nn.Module:
    """The training form of model ``name`` with weights from ``path`` (default: committed);
    ``load_model``'s one-line ``ModelError`` when they are missing or do not fit."""
    return load_model(name, path or None, deploy=False)


def recorded_model(path: str | Path) -> str | None:
    """The model name an exported checkpoint records (``train`` writes it), else None."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable here; load_model reports it in one line
        return None
    return ckpt.get("model") if isinstance(ckpt, dict) else None


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
        init: A checkpoint path that overrides the recipe: weights of the model itself
            (a fine-tune: every tensor whose name and shape match), or of the recipe's
            ``init`` model, converted as the recipe says. A checkpoint that records
            ``spec.name`` is the model's own even where the recipe's model would load it
            too (fsrcnn_x4's weights fit fsrcnn_x2, whose transfer keeps the body only).

    Returns:
        The model to train (``model`` itself, or a converted one).
    """
    if init and (not rec.init or recorded_model(init) == spec.name):
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
