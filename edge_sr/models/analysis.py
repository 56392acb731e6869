"""Structural facts about a model, measured rather than hand-maintained."""

from __future__ import annotations

import torch

from . import ModelSpec


def receptive_radius(spec: ModelSpec, probe: int = 48, trials: int = 3) -> int:
    """LR-pixel radius of input that one output pixel depends on.

    Measured by back-propagating from the output pixels of the centre LR pixel of a
    randomly initialized deploy-form model (union over a few random inputs and inits, so
    dead ReLUs cannot hide a dependency). Used as the tile overlap.

    Args:
        spec: The model.
        probe: LR size of the probe input; must exceed twice the radius.
        trials: Random restarts.

    Returns:
        The radius in LR pixels.
    """
    gen = torch.Generator().manual_seed(0)
    c, s = probe // 2, spec.scale
    reach = torch.zeros(probe, probe, dtype=torch.bool)
    for seed in range(trials):
        torch.manual_seed(seed)
        model = spec.deploy(spec.factory().eval()).double()
        x = torch.rand(1, spec.channels, probe, probe, generator=gen, dtype=torch.float64)
        x.requires_grad_(True)
        y = model(x)
        y[..., c * s : (c + 1) * s, c * s : (c + 1) * s].sum().backward()
        reach |= x.grad[0].abs().sum(0) > 0
    ys, xs = reach.nonzero(as_tuple=True)
    radius = int(max((ys - c).abs().max(), (xs - c).abs().max()))
    if radius >= c - 1:
        return receptive_radius(spec, probe * 2, trials)
    return radius
