"""int8 convolutions on x86 VNNI (``vpdpbusd``): 32 multiply-adds per instruction.

On the host, an int8 conv (uint8 activations x int8 weights -> int32) vectorized along the
image row multiplies in 32-bit integers: an integer multiply and an add for each 8
multiply-adds, no faster than the fp32 FMAs it was meant to beat. ``vpdpbusd`` sums four
uint8 x int8 products into each int32 lane, but wants the four as adjacent bytes: four
consecutive input channels of one pixel. The activations stay NCHW between kernels; each
conv this pass rewrites packs its input tile into ``[C/4][y][x][4]`` bytes (computed per
tile by the template, so the repacked copy stays in cache) and reads weights packed at
build time as ``[O][C/4][KH][KW][4]``. One ``vpdpbusd`` then takes 8 pixels x 4 channels
of one tap against the four weights of one output channel, and the int32 sums are
exactly the conv's.

The default mixed build's 16-bit tensors (int16 x int8 convs) take the same path with
``vpdpwssd``: pairs of int16 channels against weights widened to int16 at build time,
16 multiply-adds per instruction. Left as plain kernels, those convs ran at half the
speed of the fp32 module's (FSRCNN x2 mixed int8 on the host: 72 ms against 35 ms
fp32), so the build that keeps the quality was the slow one.

A conv with too few input channels for whole groups (FSRCNN's head: one channel, a 5x5
window) takes the taps form: each output pixel's window is packed tap by tap
(``[T/4][y][x][4]`` over the ``T = C*KH*KW`` taps, zero weights past ``T``), and the
reduction runs over taps instead of channels. The head was a third of the full int8
FSRCNN x2 module as a plain kernel.

Two forms, by what the target has (``int8_form``): ``vnni`` with AVX512-VNNI and AVX512-VL,
or AVX-VNNI (Alder Lake and later client CPUs: the same instructions, VEX-encoded);
``avx2`` on every other x86 CPU with AVX2 (Haswell to Skylake, Zen 1-3). AVX2 has no
byte dot product that is exact (``vpmaddubsw`` saturates its 16-bit pair sums), so the
``avx2`` form packs uint8 activations widened to int16 and multiplies pairs of channels
with ``vpmaddwd`` (16 multiply-adds and an add per 8 int32 lanes: the int8 module still
reads bytes between kernels, and the sums stay exact). As plain kernels, int8 convs on
AVX2 ran slower than the fp32 module (FSRCNN x2 full int8 on a Zen 3 host: 75.6 ms against
53.7 ms fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.script import tirx as T
from tvm.tirx import PrimFunc

from .packed_conv import conv_rewrite_pass, int8_conv_with_constant_weights


@dataclass(frozen=True)
class Dot:
    """One dot-product form: ``dot`` adjacent ``packed`` x ``weight`` products summed into
    each of the 8 int32 lanes of a 256-bit vector by ``llvm``."""

    data: str  # activation dtype the conv reads
    packed: str  # dtype its input is packed in (widened where the instruction needs it)
    weight: str  # packed weight dtype (int8 weights widened where the form needs it)
    dot: int  # products summed into each int32 lane
    llvm: str  # the LLVM intrinsic
    intrin: str  # its TensorIntrin name (databases with these schedules name it)
    accumulates: bool = True  # the instruction adds into its accumulator (else one add)


LANES = 8  # int32 lanes of a 256-bit vector: pixels per instruction
_PAIRS_VNNI = Dot("int16", "int16", "int16", 2, "llvm.x86.avx512.vpdpwssd.256",
                  "edge_sr_dot_8x2_i16i16i32_vnni")
_PAIRS_AVX2 = Dot("int16", "int16", "int16", 2, "llvm.x86.avx2.pmadd.wd",
                  "edge_sr_dot_8x2_i16i16i32_avx2", accumulates=False)
# (form, data dtype) -> Dot. The mixed build's 16-bit tensors take pairs of channels
# against weights widened to int16 at build time in both forms.
FORMS: dict[str, dict[str, Dot]] = {
    "vnni": {"uint8": Dot("uint8", "uint8", "int8", 4, "llvm.x86.avx512.vpdpbusd.256",
                          "edge_sr_dot_8x4_u8i8i32_vnni"),
             "int16": _PAIRS_VNNI},
    "avx2": {"uint8": Dot("uint8", "int16", "int16", 2, _PAIRS_AVX2.llvm,
                          _PAIRS_AVX2.intrin, accumulates=False),
             "int16": _PAIRS_AVX2},
}
DTYPES = ("uint8", "int16")  # activation dtypes the rewrite takes
# every intrinsic once, by its TensorIntrin name
DOTS: dict[str, Dot] = {d.intrin: d for form in FORMS.values() for d in form.values()}
PACK, CONV = "vnni_pack", "conv2d_nchw_vnni"
MAX_TAPS = 64  # the taps form's largest window (input channels x KH x KW)


def _intrinsic(d: Dot) -> tuple[PrimFunc, PrimFunc]:
    """(description, implementation) of ``d`` on one tap: 8 pixels x ``d.dot`` channels
    against the ``d.dot`` weights of one output channel."""
    vec = LANES * d.dot

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((LANES, d.dot), d.packed, offset_factor=1),
             b: T.Buffer((d.dot,), d.weight, offset_factor=1),
             c: T.Buffer((LANES,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:LANES, 0:d.dot], b[0:d.dot])
            T.writes(c[0:LANES])
            for i, k in T.grid(LANES, d.dot):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vi, vk], "int32") * T.cast(b[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((LANES, d.dot), d.packed, offset_factor=1),
             b: T.Buffer((d.dot,), d.weight, offset_factor=1),
             c: T.Buffer((LANES,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:LANES], a[0:LANES, 0:d.dot], b[0:d.dot])
            T.writes(c[0:LANES])
            # vpdpbusd reads its uint8 operand as raw bytes; every form takes signed vectors
            pixels = T.reinterpret(a.vload([0, 0], f"{d.packed}x{vec}"),
                                   dtype=f"{d.weight}x{vec}")
            # the d.dot weights are 32 bits: one int32, broadcast to every lane
            weights = T.reinterpret(T.broadcast(T.reinterpret(
                b.vload([0], f"{d.weight}x{d.dot}"), dtype="int32"), LANES),
                dtype=f"{d.weight}x{vec}")
            acc = c.vload([0], "int32x8")
            if d.accumulates:  # resolved while parsing: vpdp* add into their accumulator
                c[T.ramp(T.int32(0), 1, LANES)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(d.llvm), acc, pixels, weights,
                    dtype="int32x8")
            else:  # vpmaddwd returns the pair sums
                c[T.ramp(T.int32(0), 1, LANES)] = acc + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(d.llvm), pixels, weights, dtype="int32x8")

    return desc, impl


# Parsed at import, like module-level prim_funcs: TVMScript reads a function's source
# from its file, which must be the one the process loaded.
_INTRINSICS = {name: _intrinsic(d) for name, d in DOTS.items()}


def register_intrinsic() -> None:
    """Register every ``DOTS`` intrinsic (once per process)."""
    from tvm.s_tir import TensorIntrin

    for name, funcs in _INTRINSICS.items():
        try:
            TensorIntrin.get(name)
        except (ValueError, RuntimeError):
            TensorIntrin.register(name, *funcs)


def int8_form(target: tvm.target.Target) -> str | None:
    """The x86 int8 form of an LLVM target: ``vnni`` (AVX512-VNNI with AVX512-VL, or
    AVX-VNNI), ``avx2`` (AVX2 without VNNI), or None (not x86, or no AVX2)."""
    from tvm.target import codegen

    if target.kind.name != "llvm" or str(target.attrs.get("mtriple", "") or "").startswith(
            ("aarch64", "arm", "riscv")):
        return None
    has = lambda f: codegen.target_has_features(f, target)  # noqa: E731
    if (has("avx512vnni") and has("avx512vl")) or has("avxvnni"):
        return "vnni"
    return "avx2" if has("avx2") else None


def has_vnni(target: tvm.target.Target) -> bool:
    """An x86 target with VNNI (``vpdpbusd``): AVX512-VNNI with AVX512-VL, or AVX-VNNI."""
    return int8_form(target) == "vnni"


def _taps(w_shape: tuple[int, ...], dot: int) -> bool:
    """Whether a conv takes the taps form: input channels that do not fill whole groups
    of ``dot`` (FSRCNN's one-channel head) are multiplied tap by tap instead."""
    return w_shape[1] % dot != 0


def pack_weight(w: np.ndarray, data: str = "uint8", form: str = "vnni") -> np.ndarray:
    """OIHW int8 weights -> ``[O][I/dot][KH][KW][dot]`` for ``data`` activations in
    ``form`` (widened to its weight dtype); in the taps form, ``[O][T/dot][1][1][dot]``
    over the ``T = I*KH*KW`` taps, zero-filled to whole groups."""
    d = FORMS[form][data]
    o, i, kh, kw = w.shape
    if _taps(w.shape, d.dot):
        taps = i * kh * kw
        flat = np.zeros((o, -(-taps // d.dot) * d.dot), w.dtype)
        flat[:, :taps] = w.reshape(o, taps)
        return np.ascontiguousarray(flat.reshape(o, -1, 1, 1, d.dot).astype(d.weight))
    packed = w.reshape(o, i // d.dot, d.dot, kh, kw).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(packed.astype(d.weight))


def conv2d_nchw_vnni(data: te.Tensor, wp: te.Tensor, padding: tuple[int, int, int, int],
                     pad_value: float = 0.0, kernel: tuple[int, int] | None = None):
    """Stride-1 NCHW conv of uint8 or int16 data with packed weights, int32 out (NCHW);
    the border padded with ``pad_value`` (a quantized input's zero point). ``kernel``
    (KH, KW): the conv's window, which the taps form's weights no longer show. Against
    int16 weights (pairs of channels) the input is packed as int16."""
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right],
                           pad_value=tvm.tirx.const(pad_value, data.dtype))
    n, c, h, w = (int(x) for x in data.shape)
    o, groups, kh, kw, dot = (int(x) for x in wp.shape)
    packed_dtype = "int16" if wp.dtype == "int16" else data.dtype
    if _taps((o, c), dot):  # the window's taps are the reduction (as pack_weight chose)
        window = tuple(kernel or (kh, kw))
        packed = _tap_pack(data, groups, dot, window, packed_dtype)
        h, w = h - window[0] + 1, w - window[1] + 1
    else:
        packed = te.compute(
            (n, groups, h, w, dot),
            lambda b, g, y, x, j: data[b, g * dot + j, y, x].astype(packed_dtype), name=PACK)
    g = te.reduce_axis((0, groups), "rc_o")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    j = te.reduce_axis((0, dot), "rc_i")
    return te.compute(
        (n, o, h - kh + 1, w - kw + 1),
        lambda b, f, y, x: te.sum(packed[b, g, y + ry, x + rx, j].astype("int32")
                                  * wp[f, g, ry, rx, j].astype("int32"), axis=[g, ry, rx, j]),
        name=CONV)


def _tap_pack(data: te.Tensor, groups: int, dot: int, window: tuple[int, int],
              dtype: str) -> te.Tensor:
    """``[N][T/dot][Ho][Wo][dot]``: each output pixel's window, tap ``t`` at ``t``
    (channel, row, column in the weights' order); taps past ``T`` read tap 0 (their
    weights are zero)."""
    n, c, h, w = (int(x) for x in data.shape)
    kh, kw = window
    taps = c * kh * kw

    def value(b, g, y, x, j):
        t = g * dot + j
        t = te.if_then_else(t < taps, t, 0)
        return data[b, t // (kh * kw), y + t % (kh * kw) // kw, x + t % kw].astype(dtype)

    return te.compute((n, groups, h - kh + 1, w - kw + 1, dot), value, name=PACK)


def _eligible(call: relax.Call, form: str) -> bool:
    data = str(call.args[0].ty.dtype)
    if data not in DTYPES or not int8_conv_with_constant_weights(call, data, ("NCHW", "OIHW")):
        return False
    shape = [int(s) for s in call.args[1].value.shape]
    width = call.ty.shape[3]
    if not (isinstance(width, tvm.tirx.IntImm) and int(width) % LANES == 0):
        return False
    # the taps form packs a window per output pixel: worth it for a few input channels
    return not _taps(shape, FORMS[form][data].dot) or shape[1] * shape[2] * shape[3] <= MAX_TAPS


def vnni_conv(form: str | None = None) -> tvm.transform.Pass:
    """Every eligible int8 NCHW conv (uint8 or int16 data, constant int8 weights, stride
    1, no groups, a static width divisible by 8, input channels divisible by the form's
    dot or a window of at most ``MAX_TAPS`` taps) becomes ``conv2d_nchw_vnni``; others
    are left as they are. Runs after constant folding.

    Args:
        form: ``vnni`` or ``avx2`` (None: the form of the target in scope).
    """
    if form is None:
        form = int8_form(tvm.target.Target.current(allow_none=False))
    if form not in FORMS:
        raise ValueError(f"vnni_conv needs an x86 target with AVX2 (form {form!r})")
    return conv_rewrite_pass(
        "VnniConv", lambda call: _eligible(call, form),
        lambda w, data: pack_weight(w, data, form), conv2d_nchw_vnni, "conv2d_vnni")
