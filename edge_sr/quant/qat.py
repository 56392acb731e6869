"""Quantization-aware fine-tuning: train through the same fake-quant as the int8 module.

The model is the traced deploy form (sub-pixel rewritten, equalized); weights are
quantized per channel from their live values at every step and gradients pass through the
rounding unchanged (straight-through). Activation scales are learned too (LSQ, Esser et
al. 2020): the step size gets the straight-through gradient of ``round(x / s) * s``, so
each tensor trades clipping against resolution for the loss instead of for its own MSE.
Zero points stay the calibrated integers. The learned scales are saved with the weights
(``acts_state``) and an int8 build of the checkpoint uses them instead of calibrating.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .plan import ActQ, QuantPlan, interpret, map_acts


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def fq_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization (straight-through)."""
    scale = (w.detach().abs().flatten(1).max(1).values / 127.0).clamp_min(1e-12)
    scale = scale.view(-1, 1, 1, 1)
    return _ste(w, torch.clamp(torch.round(w / scale), -127, 127) * scale)


def fq_lsq(x: torch.Tensor, q: ActQ, scale: torch.Tensor) -> torch.Tensor:
    """Fake-quantize with the lowering's rounding and a learnable step ``scale``."""
    v = x / scale
    return torch.clamp(_ste(v, torch.floor(v + 0.5)), q.lo, q.hi) * scale


def acts_state(plan: QuantPlan) -> dict[str, list]:
    """The plan's activation quantization as checkpoint data: name -> [scale, dtype, zp]."""
    return {n: [float(q.scale), q.dtype, int(q.zero_point)] for n, q in plan.acts.items()}


def acts_from_state(state: dict[str, list]) -> dict[str, ActQ]:
    """Inverse of ``acts_state`` (tensors that shared one object share one again)."""
    memo: dict[tuple, ActQ] = {}
    return {n: memo.setdefault(tuple(v), ActQ(float(v[0]), str(v[1]), int(v[2])))
            for n, v in state.items()}


class FakeQuant(nn.Module):
    """A traced deploy model that computes like its int8 build, and trains."""

    def __init__(self, gm: fx.GraphModule, plan: QuantPlan):
        super().__init__()
        self.gm, self.plan = gm, plan
        # Parameters per distinct ActQ (moves share their producer's). ParameterDict keys
        # may not contain dots; node names never do.
        self.names = {id(q): n for n, q in reversed(list(plan.acts.items()))}
        inputs = {n.name for n in gm.graph.nodes if n.op == "placeholder"}
        # The input image sits on the exact 1/255 grid: its scale is not learned.
        self.log_scales = nn.ParameterDict({
            n: nn.Parameter(torch.tensor(float(np.log(plan.acts[n].scale))))
            for n in sorted(set(self.names.values()) - inputs)})

    def scale_of(self, q: ActQ) -> torch.Tensor:
        name = self.names[id(q)]
        if name not in self.log_scales:
            return torch.tensor(q.scale)
        return torch.exp(self.log_scales[name])

    def fq_act(self, x: torch.Tensor, q: ActQ) -> torch.Tensor:
        return fq_lsq(x, q, self.scale_of(q))

    def _conv(self, node: fx.Node, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        w = conv.weight
        if node.name not in self.plan.float_layers:
            w, x = fq_weight(w), self.fq_act(x, self.plan.acts[node.args[0].name])
        return nn.functional.conv2d(x, w, conv.bias, conv.stride, conv.padding,
                                    conv.dilation, conv.groups)

    def learned_plan(self) -> QuantPlan:
        """The plan with the learned activation scales."""
        return map_acts(self.plan, lambda q: replace(q, scale=float(self.scale_of(q).detach())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpret(self.gm, self.plan, x, self._conv, self.fq_act)
