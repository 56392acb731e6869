"""Quantization-aware fine-tuning: train through the same fake-quant as the int8 module.

The model is the traced deploy form (sub-pixel rewritten); activations use the calibrated
per-tensor scales of the plan, weights are quantized per channel from their live values
at every step, and gradients pass through the rounding unchanged (straight-through).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..models.ghostsr import shift2d
from .plan import QMAX, QMIN, ActQ, QuantPlan, apply_act, cat_dim, float_tensors, kind, module_of


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def fq_act(x: torch.Tensor, q: ActQ) -> torch.Tensor:
    """Fake-quantize an activation with a straight-through gradient."""
    return _ste(x, torch.clamp(torch.floor(x / q.scale + 0.5), QMIN[q.dtype], QMAX[q.dtype])
                * q.scale)


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
        self.floats = float_tensors(gm, plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {}
        gm, plan = self.gm, self.plan
        for node in gm.graph.nodes:
            k = kind(gm, node)
            arg = env.get(node.args[0].name) if node.args and isinstance(
                node.args[0], fx.Node) else None
            if k == "output":
                return arg
            if k == "input":
                v = x
            elif k == "conv":
                conv = module_of(gm, node)
                w = conv.weight
                if node.name not in plan.float_layers:
                    w, arg = fq_weight(w), fq_act(arg, plan.acts[node.args[0].name])
                v = nn.functional.conv2d(arg, w, conv.bias, conv.stride, conv.padding,
                                         conv.dilation, conv.groups)
            elif k == "act":
                v = apply_act(module_of(gm, node), arg)
            elif k == "move":
                v = module_of(gm, node)(arg)
            elif k == "shift":
                v = shift2d(arg, *node.args[1:])
            elif k == "add":
                v = env[node.args[0].name] + env[node.args[1].name]
            else:
                v = torch.cat([env[a.name] for a in node.args[0]], dim=cat_dim(node))
            if node.name not in plan.fused and node.name not in self.floats \
                    and k not in ("move", "shift"):
                v = fq_act(v, plan.acts[node.name])
            env[node.name] = v
        raise ValueError("graph has no output")
