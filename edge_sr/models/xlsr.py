"""XLSR (Ayazoglu, Mobile AI 2021 winner): grouped-conv GBlocks built to survive int8."""

from __future__ import annotations

import torch
from torch import nn


class GBlock(nn.Module):
    """3x3 grouped conv (4 groups) + ReLU, then a 1x1 conv mixing the groups."""

    def __init__(self, channels: int = 32, groups: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.act = nn.ReLU()
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.act(self.conv(x)))


class XLSR(nn.Module):
    """XLSR on RGB: 4 x (3x3 conv 3->8 + ReLU) concatenated to 32, 1x1, 3 GBlocks,
    concat with a 3x3 skip conv of the input, 1x1 + ReLU, 3x3 to 3*s^2,
    depth-to-space and a clipped ReLU to [0, 1].

    Args:
        scale: Upscaling factor.
        channels: Width of the trunk (32 in the paper).
        skip_channels: Output channels of the input skip conv (8 here).
    """

    def __init__(self, scale: int, channels: int = 32, skip_channels: int = 8):
        super().__init__()
        quarter = channels // 4
        self.heads = nn.ModuleList(nn.Conv2d(3, quarter, 3, padding=1) for _ in range(4))
        self.act = nn.ReLU()
        self.mix = nn.Conv2d(channels, channels, 1)
        self.gblocks = nn.Sequential(*(GBlock(channels) for _ in range(3)))
        self.skip = nn.Conv2d(3, skip_channels, 3, padding=1)
        self.fuse_conv = nn.Conv2d(channels + skip_channels, channels, 1)
        self.tail = nn.Conv2d(channels, 3 * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        # Clipped ReLU: a bounded output range is what lets int8 keep full precision.
        self.clip = nn.Hardtanh(0.0, 1.0)

    def fuse_heads(self) -> None:
        """Merge the parallel 3->8 head convs into one 3->32 conv, in place.

        Exact: the concat of the heads' ReLUs is the ReLU of one conv whose filters are
        theirs stacked. One kernel instead of four plus a concat copy of the trunk.
        """
        if len(self.heads) == 1:
            return
        first = self.heads[0]
        merged = nn.Conv2d(first.in_channels, sum(h.out_channels for h in self.heads),
                           first.kernel_size, padding=first.padding)
        merged.weight.data.copy_(torch.cat([h.weight.detach() for h in self.heads]))
        merged.bias.data.copy_(torch.cat([h.bias.detach() for h in self.heads]))
        self.heads = nn.ModuleList([merged])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = [self.act(h(x)) for h in self.heads]
        y = heads[0] if len(heads) == 1 else torch.cat(heads, dim=1)
        y = self.gblocks(self.mix(y))
        y = torch.cat([y, self.skip(x)], dim=1)
        y = self.act(self.fuse_conv(y))
        return self.clip(self.shuffle(self.tail(y)))
