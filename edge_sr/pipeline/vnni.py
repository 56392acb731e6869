"""int8 convolutions on x86 VNNI (``vpdpbusd``): 32 multiply-adds per instruction.

On the host, an int8 conv (uint8 activations x int8 weights -> int32) vectorized along the
image row multiplies in 32-bit integers: an integer multiply and an add for each 8
multiply-adds, no faster than the fp32 FMAs it was meant to beat. ``vpdpbusd`` sums four
uint8 x int8 products into each int32 lane, but wants the four as adjacent bytes: four
consecutive input channels of one pixel. The activations stay NCHW between kernels; each
conv this pass rewrites packs its input tile into ``[C/4][y][x][4]`` bytes (computed per
tile by the template, so the repacked copy stays in cache) and reads weights packed at
build time as ``[O][C/4][KH][KW][4]``. One ``vpdpbusd`` then takes 8 pixels x 4 channels
of one tap against the four weights of one output channel (``DOT_8x4``), and the int32
sums are exactly the conv's.

FSRCNN's head conv (one input channel) and the int16 tensors of the default mixed build
are left to the plain kernels. The rewrite runs on x86 targets with AVX512-VNNI and
AVX512-VL (the 256-bit form of the instruction) only.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.script import tirx as T

from .rewrite import conv_rewrite_pass, int8_conv_with_constant_weights

DOT = 4  # bytes summed into each int32 lane
LANES = 8  # int32 lanes of a 256-bit vector: pixels per instruction
INTRIN = "edge_sr_dot_8x4_u8i8i32_vnni"
PACK, CONV = "vnni_pack", "conv2d_nchw_vnni"


@T.prim_func(s_tir=True)
def _dot_desc(a: T.Buffer((LANES, DOT), "uint8", offset_factor=1),
              b: T.Buffer((DOT,), "int8", offset_factor=1),
              c: T.Buffer((LANES,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(c[0:LANES], a[0:LANES, 0:DOT], b[0:DOT])
        T.writes(c[0:LANES])
        for i, k in T.grid(LANES, DOT):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                c[vi] = c[vi] + T.cast(a[vi, vk], "int32") * T.cast(b[vk], "int32")


@T.prim_func(s_tir=True)
def _dot_vnni(a: T.Buffer((LANES, DOT), "uint8", offset_factor=1),
              b: T.Buffer((DOT,), "int8", offset_factor=1),
              c: T.Buffer((LANES,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(c[0:LANES], a[0:LANES, 0:DOT], b[0:DOT])
        T.writes(c[0:LANES])
        pixels = T.reinterpret(a.vload([0, 0], "uint8x32"), dtype="int8x32")
        weights = T.reinterpret(T.broadcast(T.reinterpret(b.vload([0], "int8x4"),
                                                          dtype="int32"), LANES),
                                dtype="int8x32")
        c[T.ramp(T.int32(0), 1, LANES)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.256"),
            c.vload([0], "int32x8"), pixels, weights, dtype="int32x8")


def register_intrinsic() -> None:
    """Register ``INTRIN`` (once per process; databases with VNNI schedules name it)."""
    from tvm.s_tir import TensorIntrin

    try:
        TensorIntrin.get(INTRIN)
    except (ValueError, RuntimeError):
        TensorIntrin.register(INTRIN, _dot_desc, _dot_vnni)


def has_vnni(target: tvm.target.Target) -> bool:
    """An x86 target with AVX512-VNNI and AVX512-VL."""
    from tvm.target import codegen

    if target.kind.name != "llvm" or str(target.attrs.get("mtriple", "") or "").startswith(
            ("aarch64", "arm", "riscv")):
        return False
    return all(codegen.target_has_features(f, target) for f in ("avx512vnni", "avx512vl"))


def pack_weight(w: np.ndarray) -> np.ndarray:
    """OIHW int8 weights -> ``[O][I/4][KH][KW][4]``."""
    o, i, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(o, i // DOT, DOT, kh, kw).transpose(0, 1, 3, 4, 2))


def conv2d_nchw_vnni(data: te.Tensor, wp: te.Tensor, padding: tuple[int, int, int, int],
                     pad_value: float = 0.0):
    """Stride-1 NCHW conv of uint8 data with packed int8 weights, int32 out (NCHW); the
    border padded with ``pad_value`` (a quantized input's zero point)."""
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right],
                           pad_value=tvm.tirx.const(pad_value, data.dtype))
    n, _, h, w = (int(x) for x in data.shape)
    o, groups, kh, kw, _ = (int(x) for x in wp.shape)
    packed = te.compute((n, groups, h, w, DOT),
                        lambda b, g, y, x, j: data[b, g * DOT + j, y, x], name=PACK)
    g = te.reduce_axis((0, groups), "rc_o")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    j = te.reduce_axis((0, DOT), "rc_i")
    return te.compute(
        (n, o, h - kh + 1, w - kw + 1),
        lambda b, f, y, x: te.sum(packed[b, g, y + ry, x + rx, j].astype("int32")
                                  * wp[f, g, ry, rx, j].astype("int32"), axis=[g, ry, rx, j]),
        name=CONV)


def _eligible(call: relax.Call) -> bool:
    if not int8_conv_with_constant_weights(call, "uint8", ("NCHW", "OIHW")):
        return False
    channels = int(call.args[1].value.shape[1])
    width = call.ty.shape[3]
    return (channels % DOT == 0 and isinstance(width, tvm.tirx.IntImm)
            and int(width) % LANES == 0)


# Every eligible int8 NCHW conv (uint8 data, constant int8 weights, stride 1, no
# groups, input channels divisible by 4, a static width divisible by 8) becomes
# ``conv2d_nchw_vnni``; others are left as they are. Runs after constant folding.
vnni_conv = conv_rewrite_pass("VnniConv", _eligible, pack_weight, conv2d_nchw_vnni, "conv2d_vnni")
