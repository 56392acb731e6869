"""Graph rewrites on the PyTorch deploy form, before export. Each is exact and tested.

``TORCH_PASSES`` maps a name to a function module -> module; the build records which ran.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .subpixel import convertible, subpixel_params


def subpixel_conv(deconv: nn.ConvTranspose2d) -> nn.Sequential | None:
    """The exact sub-pixel form of a stride-s ConvTranspose2d: conv to s^2*C, depth-to-space.

    TVM runs a strided deconvolution as zero insertion + dense conv (s^2 times the useful
    multiply-adds); the sub-pixel form computes only the taps that hit real inputs.

    Returns:
        ``Sequential(Conv2d, PixelShuffle)``, or None when the deconv is not of the
        "output = input * s" kind (k + output_padding - 2p == s, equal strides, groups 1).
    """
    if not convertible(deconv):
        return None
    with torch.no_grad():
        weight, bias, pad = subpixel_params(deconv)
    conv = nn.Conv2d(deconv.in_channels, weight.shape[0], weight.shape[-1], padding=pad,
                     bias=bias is not None, dtype=weight.dtype)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return nn.Sequential(conv, nn.PixelShuffle(deconv.stride[0]))


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
