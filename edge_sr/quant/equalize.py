"""Cross-layer equalization (after Nagel et al., ICCV 2019), driven by activation ranges.

For conv_a -> PReLU/ReLU -> conv_b, scaling output channel c of conv_a by 1/s_c and input
channel c of conv_b by s_c leaves the float function unchanged (both activations are
positively homogeneous). Per-tensor activation scales suffer when channels have very
different ranges; choosing s_c = a_c^alpha / w_c^(1 - alpha) (a_c: the channel's calibrated
activation range, w_c: conv_b's weight range on that input channel; alpha = 0.5 balances the
two) keeps either quantizer from having to cover one outlier channel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .observers import Reservoir
from .plan import kind, module_of


def equalizable_pairs(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node, fx.Node]]:
    """(conv_a, act, conv_b) chains with single users, homogeneous act, dense conv_b."""
    pairs = []
    for conv_a in gm.graph.nodes:
        if kind(gm, conv_a) != "conv" or len(conv_a.users) != 1:
            continue
        (act,) = conv_a.users
        if not isinstance(module_of(gm, act), nn.PReLU | nn.ReLU) or len(act.users) != 1:
            continue
        (conv_b,) = act.users
        if kind(gm, conv_b) != "conv" or module_of(gm, conv_b).groups != 1:
            continue
        if module_of(gm, conv_a).groups != 1:
            continue
        pairs.append((conv_a, act, conv_b))
    return pairs


@torch.no_grad()
def equalize(gm: fx.GraphModule, stats: dict[str, Reservoir], alpha: float = 0.5) -> int:
    """Rescale every equalizable pair in place; returns how many pairs were changed."""
    count = 0
    for conv_a, act, conv_b in equalizable_pairs(gm):
        a = stats[act.name].channel_max
        if a is None:
            continue
        ma, mb = module_of(gm, conv_a), module_of(gm, conv_b)
        w = mb.weight.abs().amax(dim=(0, 2, 3)).double().numpy()
        ok = (a > 1e-8) & (w > 1e-8)
        s = np.ones_like(a, dtype=np.float64)
        s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
        s /= np.exp(np.mean(np.log(s[ok]))) if ok.any() else 1.0  # keep the overall level
        st = torch.from_numpy(s).to(ma.weight.dtype)
        ma.weight.div_(st.view(-1, 1, 1, 1))
        if ma.bias is not None:
            ma.bias.div_(st)
        mb.weight.mul_(st.view(1, -1, 1, 1))
        count += 1
    return count
