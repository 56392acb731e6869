"""SRResNet, the SRGAN generator (Ledig et al., CVPR 2017), with prunable residual blocks."""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a conv equal to ``bn(conv(x))`` in eval mode."""
    std = (bn.running_var + bn.eps).sqrt()
    gain = bn.weight / std
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                      padding=conv.padding, stride=conv.stride, dtype=conv.weight.dtype)
    fused.weight.data.copy_(conv.weight.detach() * gain.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data.copy_((bias - bn.running_mean) * gain + bn.bias)
    return fused


class ConvBN(nn.Module):
    """3x3 conv + batch-norm; ``fuse()`` folds the norm into the conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> nn.Conv2d:
        """Return the plain conv equal to this block in eval mode."""
        return fold_bn(self.conv, self.bn)


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN + identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvBN(channels), nn.PReLU(channels), ConvBN(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet on RGB with ``blocks`` residual blocks and x2 sub-pixel upsamplers.

    Args:
        scale: 2 or 4.
        blocks: Residual blocks (16 in the paper; pruned variants use 12/8/4/2).
        channels: Feature channels.
    """

    def __init__(self, scale: int = 4, blocks: int = 16, channels: int = 64):
        super().__init__()
        if scale not in (2, 4):
            raise ValueError("SRResNet supports x2 and x4")
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.body_tail = ConvBN(channels)
        ups: list[nn.Module] = []
        for _ in range({2: 1, 4: 2}[scale]):
            ups += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2),
                    nn.PReLU(channels)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        f = f + self.body_tail(self.body(f))
        return self.tail(self.upsample(f))

    def deploy(self) -> SRResNet:
        """Return an eval copy with every batch-norm folded into its conv."""
        out = copy.deepcopy(self).eval()

        def replace(parent: nn.Module) -> None:
            for name, child in parent.named_children():
                if isinstance(child, ConvBN):
                    setattr(parent, name, child.fuse())
                else:
                    replace(child)

        replace(out)
        return out


def prune_blocks(model: SRResNet, blocks: int) -> SRResNet:
    """A copy of ``model`` with ``blocks`` of its residual blocks, evenly spaced in depth.

    Head, body tail, upsampler and tail keep their weights; the blocks kept keep theirs.
    Fine-tune afterwards.
    """
    have = len(model.body)
    if not 1 <= blocks <= have:
        raise ValueError(f"cannot keep {blocks} of {have} residual blocks")
    out = copy.deepcopy(model)
    keep = sorted({round(i * (have - 1) / max(1, blocks - 1)) for i in range(blocks)})
    out.body = nn.Sequential(*(out.body[i] for i in keep))
    return out


class Discriminator(nn.Module):
    """The SRGAN discriminator: 8 conv layers (stride 1/2 alternating), LeakyReLU, dense head.

    Global average pooling replaces the fixed-size dense layer so any patch size works.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        cin = channels
        for i, cout in enumerate([channels, channels * 2, channels * 2, channels * 4,
                                  channels * 4, channels * 8, channels * 8]):
            stride = 2 if i % 2 == 0 else 1
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(cin, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
