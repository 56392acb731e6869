"""Quantization-aware fine-tuning: train through the same fake-quant as the int8 module.

The model is the traced deploy form (sub-pixel rewritten); activations use the calibrated
per-tensor scales of the plan, weights are quantized per channel from their live values
at every step, and gradients pass through the rounding unchanged (straight-through).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from .plan import ActQ, QuantPlan, fake_quant, interpret


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def fq_act(x: torch.Tensor, q: ActQ) -> torch.Tensor:
    """Fake-quantize an activation with a straight-through gradient."""
    return _ste(x, fake_quant(x, q))


def fq_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization (straight-through)."""
    scale = (w.detach().abs().flatten(1).max(1).values / 127.0).clamp_min(1e-12)
    scale = scale.view(-1, 1, 1, 1)
    return _ste(w, torch.clamp(torch.round(w / scale), -127, 127) * scale)


class FakeQuant(nn.Module):
    """A traced deploy model that computes like its int8 build, and trains."""

    def __init__(self, gm: fx.GraphModule, plan: QuantPlan):
        super().__init__()
        self.gm, self.plan = gm, plan

    def _conv(self, node: fx.Node, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        w = conv.weight
        if node.name not in self.plan.float_layers:
            w, x = fq_weight(w), fq_act(x, self.plan.acts[node.args[0].name])
        return nn.functional.conv2d(x, w, conv.bias, conv.stride, conv.padding,
                                    conv.dilation, conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpret(self.gm, self.plan, x, self._conv, fq_act)
