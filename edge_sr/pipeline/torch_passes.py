"""Graph rewrites on the PyTorch deploy form, before export. Each is exact and tested.

``TORCH_PASSES`` maps a name to a function module -> module; the build records which ran.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def _phase_taps(k: int, s: int, p: int) -> list[list[tuple[int, int]]]:
    """For each output phase r, the (kernel tap, input offset) pairs of a 1-D deconv."""
    taps = []
    for r in range(s):
        taps.append([(kk, (r + p - kk) // s) for kk in range(k) if (r + p - kk) % s == 0])
    return taps


def subpixel_conv(deconv: nn.ConvTranspose2d) -> nn.Sequential | None:
    """The exact sub-pixel form of a stride-s ConvTranspose2d: conv to s^2*C, depth-to-space.

    TVM runs a strided deconvolution as zero insertion + dense conv (s^2 times the useful
    multiply-adds); the sub-pixel form computes only the taps that hit real inputs.

    Returns:
        ``Sequential(Conv2d, PixelShuffle)``, or None when the deconv is not of the
        "output = input * s" kind (k + output_padding - 2p == s, equal strides, groups 1).
    """
    (kh, kw), (sh, sw) = deconv.kernel_size, deconv.stride
    (ph, pw), (oh, ow) = deconv.padding, deconv.output_padding
    if sh != sw or deconv.groups != 1 or deconv.dilation != (1, 1):
        return None
    s = sh
    if kh + oh - 2 * ph != s or kw + ow - 2 * pw != s:
        return None
    ty, tx = _phase_taps(kh, s, ph), _phase_taps(kw, s, pw)
    pad = max(abs(d) for taps in ty + tx for _, d in taps)
    k = 2 * pad + 1
    cin, cout = deconv.in_channels, deconv.out_channels
    w = deconv.weight.detach()  # (cin, cout, kh, kw)
    weight = torch.zeros(cout * s * s, cin, k, k, dtype=w.dtype)
    for ry in range(s):
        for rx in range(s):
            rows = torch.arange(cout) * s * s + ry * s + rx
            for ky, dy in ty[ry]:
                for kx, dx in tx[rx]:
                    weight[rows, :, dy + pad, dx + pad] = w[:, :, ky, kx].T
    conv = nn.Conv2d(cin, cout * s * s, k, padding=pad, bias=deconv.bias is not None,
                     dtype=w.dtype)
    conv.weight.data.copy_(weight)
    if deconv.bias is not None:
        conv.bias.data.copy_(deconv.bias.detach().repeat_interleave(s * s))
    return nn.Sequential(conv, nn.PixelShuffle(s))


def subpixel_deconv(model: nn.Module) -> nn.Module:
    """Replace every convertible ConvTranspose2d of a copy of ``model`` by its sub-pixel form."""
    model = copy.deepcopy(model)

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.ConvTranspose2d):
                replacement = subpixel_conv(child)
                if replacement is not None:
                    setattr(parent, name, replacement)
            else:
                visit(child)

    visit(model)
    return model.eval()


def merge_heads(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose blocks with parallel head convs (XLSR's ``fuse_heads``)
    compute them as one conv."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "fuse_heads"):
            module.fuse_heads()
    return model.eval()


TORCH_PASSES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "subpixel_deconv": subpixel_deconv,
    "merge_heads": merge_heads,
}
DEFAULT_TORCH_PASSES = ["subpixel_deconv", "merge_heads"]


def run_torch_passes(model: nn.Module, names: list[str]) -> nn.Module:
    """Apply named PyTorch-level rewrites in order."""
    for name in names:
        model = TORCH_PASSES[name](model)
    return model
