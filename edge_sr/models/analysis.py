"""Structural facts about a model, measured rather than hand-maintained."""

from __future__ import annotations

import torch
from torch import nn

from . import ModelSpec

# A radius still growing with a probe this large means the output depends on the whole
# input (global pooling, attention over the image): such a model cannot be tiled.
MAX_PROBE = 384


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

    Raises:
        ValueError: The output depends on every input pixel (not tileable).
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
        if probe * 2 > MAX_PROBE:
            raise ValueError(f"{spec.source or spec.name}: every output pixel depends on the "
                             f"whole input (past {probe // 2} px: global pooling or "
                             "attention?), so it cannot run in tiles")
        return receptive_radius(spec, probe * 2, trials)
    return radius


def layer_macs(model: nn.Module, shape: tuple[int, ...]) -> list[dict]:
    """Convolution layers in execution order: ``{"layer", "out_shape", "macs"}``.

    A stride-s ConvTranspose counts Cin x Cout x k^2 per *input* pixel (its useful work),
    not the zero-inserted dense conv TVM's default lowering would run.
    """
    names = {m: n for n, m in model.named_modules()}
    layers = []

    def hook(mod, inputs, output):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        if isinstance(mod, nn.ConvTranspose2d):
            x = inputs[0]
            macs = x.shape[1] * mod.out_channels // mod.groups * k * x.shape[2] * x.shape[3]
        else:
            macs = (output.shape[1] * mod.in_channels // mod.groups * k
                    * output.shape[2] * output.shape[3])
        layers.append({"layer": names[mod], "out_shape": list(output.shape), "macs": int(macs)})

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return layers


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Useful multiply-accumulates of one forward pass (see ``layer_macs``)."""
    return sum(layer["macs"] for layer in layer_macs(model, shape))
