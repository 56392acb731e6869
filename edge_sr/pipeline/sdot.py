"""int8 convolutions shaped for 4-element dot-product instructions (Arm ``sdot``).

MetaSchedule tensorizes a loop nest with TVM's ``dot_4x4_i8i8s32_sdot`` intrinsic only when
each 4 x 4 weight tile it feeds is contiguous: ``C[i] += A[k] * B[i, k]`` with ``B`` a
compact 4 x 4 block. In the OHWI weights of an NHWC conv the 4 output channels of a tile
lie ``KH*KW*IC`` bytes apart, so the match fails ("Tensorize failed") and the tuned kernels
fall back to plain NEON multiply-adds. Here the weights are packed at build time as
``[OC/4, KH, KW, IC/4, 4 (oc), 4 (ic)]`` and the conv is computed over that layout; its
result is exactly the conv's (the same int32 sums, in another order of blocks).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi

from .packed_conv import conv_rewrite_pass, int8_conv_with_constant_weights

DOT = 4  # elements per sdot lane, and output channels per weight tile


def pack_weight(w: np.ndarray, data: str = "int8") -> np.ndarray:
    """OHWI int8 weights -> ``[OC/4, KH, KW, IC/4, 4, 4]`` (output then input channel);
    ``data``, the activations' dtype, is int8 here."""
    oc, kh, kw, ic = w.shape
    return np.ascontiguousarray(w.reshape(oc // DOT, DOT, kh, kw, ic // DOT, DOT)
                                .transpose(0, 2, 3, 4, 1, 5))


def conv2d_nhwc_dot4(data: te.Tensor, wp: te.Tensor, padding: tuple[int, int, int, int],
                     pad_value: float = 0.0, kernel: tuple[int, int] | None = None):
    """Stride-1 NHWC conv of int8 data with packed int8 weights, int32 out (NHWC); the
    border padded with ``pad_value`` (a quantized input's zero point). ``kernel`` (KH,
    KW) is in the packed weights already."""
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0],
                           pad_value=tvm.tirx.const(pad_value, data.dtype))
    n, h, w, _ = (int(x) for x in data.shape)
    oo, kh, kw, io, oi, ii = (int(x) for x in wp.shape)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    ro, ri = te.reduce_axis((0, io), "rc_o"), te.reduce_axis((0, ii), "rc_i")
    # Output channels as (block, lane): the lane and rc_i are the intrinsic's i and k.
    conv = te.compute(
        (n, h - kh + 1, w - kw + 1, oo, oi),
        lambda b, y, x, o, j: te.sum(
            data[b, y + ry, x + rx, ro * DOT + ri].astype("int32")
            * wp[o, ry, rx, ro, j, ri].astype("int32"), axis=[ry, rx, ro, ri]),
        name="conv2d_nhwc_dot4")
    return topi.reshape(conv, (n, h - kh + 1, w - kw + 1, oo * oi))


def _eligible(call: relax.Call) -> bool:
    if not int8_conv_with_constant_weights(call, "int8", ("NHWC", "OHWI")):
        return False
    shape = [int(s) for s in call.args[1].value.shape]
    return shape[0] % DOT == 0 and shape[3] % DOT == 0


# Every eligible int8 NHWC conv (stride 1, no groups, channels divisible by 4, constant
# weights) becomes ``conv2d_nhwc_dot4`` over packed weights; others are left as they are.
# Runs after constant folding (the weights must be constants, OHWI already baked).
dot4_conv = conv_rewrite_pass("Dot4Conv", _eligible, pack_weight, conv2d_nhwc_dot4, "conv2d_dot4")
