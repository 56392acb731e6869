"""Winograd F(4x4, 3x3) float32 convolutions on Arm CPUs: 36 multiply-adds per 16 outputs
per channel pair instead of 144.

A 3x3 stride-1 conv computes each 4x4 output tile from a 6x6 input tile. Winograd's
minimal filtering transforms the input tile (``V = Bt d B``), multiplies it element by
element with the transformed weights (``U = G g Gt``, computed at build time) summed over
the input channels (36 small matrix products, ``wino_gemm``), and transforms the result
back (``Y = At M A``). The transforms are short sums with constant coefficients (the
interpolation points 0, 1, -1, 2, -2) whose rows share their partial sums
(``input_rows``, ``output_rows``), so for 16 channels in and out the whole conv costs
about 2.3x fewer floating-point operations than the direct form.

Where it runs: float32 NCHW builds for aarch64 targets, convs with constant 3x3 weights,
stride and dilation 1, no groups, at least ``MIN_IN`` channels in and ``MIN_OUT`` out (a
one-channel head spends more on the transforms than the products save). Measured on the
emulated Pi (QEMU user-mode, rpi4 target, 128x128): an ECBSR 16 -> 16 conv 112 ms direct
(tuned), 36-41 ms here; its 16 -> 4 tail 31 -> 15 ms. Not on x86: on the host (AVX-512,
360x640, alternated in one process) a 16 -> 16 conv took 18.1 ms against 12.0 ms direct;
the direct kernels run near the FMA peak there, and the transforms' stride-4 gathers and
scatters cost more than the multiply-adds saved. F(6x6, 3x3) (ncnn's tile) is not used:
1.03-1.10x slower on the emulated Pi (docs/tuning.md).

The compute keeps the tiles of one tile row in blocks of ``vp`` (the target's float32
vector lanes) tiles, which are the vector lanes of every stage; ``schedule_winograd``
computes all stages per block inside one parallel loop, so a block's transformed tiles
stay in cache between stages.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx
from tvm.topi.nn.winograd_util import _cook_toom_convolution

from .packed_conv import conv_rewrite_pass, conv_with_constant_weights

M, R = 4, 3  # output tile, kernel size
ALPHA = M + R - 1  # input tile
# The interpolation points of the classic F(4x4, 3x3): small integer coefficients
A_, B_, G_ = _cook_toom_convolution(np.array([0, 1, -1, 2, -2], float), M, R)
BT, AT = B_.T, A_.T  # (6, 6), (4, 6)
MIN_IN, MIN_OUT = 8, 4  # channels a conv needs for the transforms to pay
OUT = "conv2d_winograd"  # the output block (its name marks a kernel for the schedule)
STAGES = ("wino_y", "wino_z", "wino_gemm", "wino_v", "wino_t1")


def transform_weight(w: np.ndarray, _dtype: str = "float32") -> np.ndarray:
    """OIHW 3x3 weights -> ``U = G g Gt`` as ``(alpha, alpha, I, O)`` float32."""
    u = np.einsum("ar,oirs,bs->abio", G_, w.astype(np.float64), G_)
    return np.ascontiguousarray(u.astype(np.float32))


def input_rows(d: list) -> list:
    """The rows of ``Bt d`` for a column ``d`` of 6 values, sharing their partial sums
    (14 operations instead of the matrix's 22 multiply-adds)."""
    s12, s34 = d[1] + d[2], d[3] + d[4]
    d12, d43, d42, d31 = d[1] - d[2], d[4] - d[3], d[4] - d[2], d[3] - d[1]
    return [d[0] * 4.0 - d[2] * 5.0 + d[4], s34 - s12 * 4.0, d43 + d12 * 4.0,
            d42 + d31 * 2.0, d42 - d31 * 2.0, d[1] * 4.0 - d[3] * 5.0 + d[5]]


def output_rows(m: list) -> list:
    """The rows of ``At m`` for a column ``m`` of 6 values, sharing their partial sums."""
    s12, d12, s34, d34 = m[1] + m[2], m[1] - m[2], m[3] + m[4], m[3] - m[4]
    return [m[0] + s12 + s34, d12 + d34 * 2.0, s12 + s34 * 4.0, d12 + d34 * 8.0 + m[5]]


def _row(idx: tirx.PrimExpr, rows: list) -> tirx.PrimExpr:
    """``rows[idx]`` for a loop variable ``idx``; the schedule unrolls that loop, so each
    copy keeps one row (and LLVM shares the rows' common partial sums)."""
    expr = rows[-1]
    for k in range(len(rows) - 2, -1, -1):
        expr = tirx.Select(idx == k, rows[k], expr)
    return expr


def conv2d_winograd(data: te.Tensor, u: te.Tensor, padding: tuple[int, int, int, int],
                    pad_value: float = 0.0, _window=None, vp: int = 4) -> te.Tensor:
    """3x3 stride-1 NCHW conv (batch 1) of ``data`` with transformed weights ``u``
    (``transform_weight``), padded by ``padding`` (top, left, bottom, right)."""
    _, c, h, w = (int(x) for x in data.shape)
    o = int(u.shape[3])
    top, left, bottom, right = padding
    ho, wo = h + top + bottom - R + 1, w + left + right - R + 1
    nh, nwb = -(-ho // M), -(-wo // (M * vp))  # tile rows, blocks of vp tiles per row

    def padded(ci, y, x):
        yy, xx = y - top, x - left
        inside = tirx.all(yy >= 0, yy < h, xx >= 0, xx < w)
        return tirx.if_then_else(inside, data[0, ci, yy, xx],
                                 tirx.const(pad_value, "float32"))

    t1 = te.compute((c, nh, nwb, ALPHA, ALPHA, vp), lambda ci, th, tb, e, s, v: _row(
        e, input_rows([padded(ci, th * M + r, (tb * vp + v) * M + s) for r in range(ALPHA)])),
        name="wino_t1")
    vt = te.compute((ALPHA, ALPHA, nh, nwb, c, vp), lambda e, n, th, tb, ci, v: _row(
        n, input_rows([t1[ci, th, tb, e, s, v] for s in range(ALPHA)])), name="wino_v")
    rc = te.reduce_axis((0, c), "rc")
    mm = te.compute((ALPHA, ALPHA, nh, nwb, o, vp), lambda e, n, th, tb, co, v: te.sum(
        u[e, n, rc, co] * vt[e, n, th, tb, rc, v], axis=rc), name="wino_gemm")
    z = te.compute((o, nh, nwb, M, ALPHA, vp), lambda co, th, tb, i, n, v: _row(
        i, output_rows([mm[e, n, th, tb, co, v] for e in range(ALPHA)])), name="wino_z")
    y = te.compute((o, nh, nwb, M, M, vp), lambda co, th, tb, i, j, v: _row(
        j, output_rows([z[co, th, tb, i, n, v] for n in range(ALPHA)])), name="wino_y")
    return te.compute((1, o, ho, wo), lambda b, co, yy, xx: y[
        co, yy // M, xx // (M * vp), yy % M, xx % M, xx // M % vp], name=OUT)


def schedule_winograd(sch: s_tir.Schedule, co_tile: int = 16) -> None:
    """All stages per block of tiles in one parallel loop over the blocks; the
    coefficient loops unrolled, the tiles of a block (the compute's ``vp``) as vector
    lanes; an elementwise epilogue (bias, activation) computed in the output stage, which
    is vectorized too (no branch per PReLU output; LLVM turns its strided lanes into a
    4x4 transpose and contiguous stores)."""
    from .templates import divisors  # late: templates imports this module

    vp = int(sch.get(sch.get_sblock("wino_y")).writes[0].source.shape[-1])
    names = [sch.get(rv).name_hint for rv in sch.get_child_blocks(sch.get_sblock("root"))]
    epilogue = names[names.index(OUT) + 1:]
    for name in [OUT, *epilogue][:-1]:  # the last block computes the kernel's output
        sch.compute_inline(sch.get_sblock(name))
    out = sch.get_sblock(([OUT, *epilogue])[-1])
    _, co, yy, xx = sch.get_loops(out)
    th, i = sch.split(yy, [None, M])
    tb, v, j = sch.split(xx, [None, vp, M])
    sch.reorder(th, tb, co, i, j, v)
    par = sch.fuse(th, tb)
    sch.parallel(par)
    for name in STAGES:
        sch.compute_at(sch.get_sblock(name), par, preserve_unit_loops=True)
    sch.unroll(i)
    sch.unroll(j)
    sch.vectorize(v)

    def loops(name: str) -> list:
        return sch.get_loops(sch.get_sblock(name))[2:]  # below the batch and block loops

    # the coefficient row each stage selects: t1 by e, v by n, z by i, y by j
    t1 = loops("wino_t1")
    sch.unroll(t1[3])
    sch.vectorize(t1[-1])
    e, n, _, _, ci, _ = loops("wino_v")
    sch.reorder(ci, e, n)
    vl = loops("wino_v")
    sch.unroll(vl[-2])
    sch.vectorize(vl[-1])
    z = loops("wino_z")
    sch.unroll(z[3])
    sch.vectorize(z[-1])
    yl = loops("wino_y")
    sch.unroll(yl[4])
    sch.vectorize(yl[-1])
    gemm = sch.get_sblock("wino_gemm")
    e, n, _, _, co, v, rc = loops("wino_gemm")
    coo, coi = sch.split(co, [None, max(divisors(int(sch.get(co).extent), co_tile))])
    sch.reorder(e, n, coo, rc, coi, v)
    sch.unroll(coi)
    sch.vectorize(v)
    sch.decompose_reduction(gemm, rc)


def lanes_of(target: tvm.target.Target) -> int:
    """float32 lanes of the target's vector unit (NEON: 4)."""
    from .templates import cpu_of  # late: templates imports this module

    cpu = cpu_of(target)
    return max(cpu.lanes) if cpu else 4


def eligible(call: relax.Call) -> bool:
    """A float32 NCHW conv with constant OIHW 3x3 weights, stride and dilation 1, no
    groups, batch 1, at least ``MIN_IN`` channels in and ``MIN_OUT`` out."""
    if not conv_with_constant_weights(call, "float32", "float32", "float32",
                                      ("NCHW", "OIHW")):
        return False
    shape = [int(s) for s in call.args[1].value.shape]
    dshape = call.args[0].ty.shape
    return (shape[2:] == [R, R] and shape[0] >= MIN_OUT and shape[1] >= MIN_IN
            and all(isinstance(d, tvm.tirx.IntImm) for d in dshape) and int(dshape[0]) == 1)


def winograd_conv() -> tvm.transform.Pass:
    """The rewrite for the target in scope (its vector lanes are the tile blocks)."""
    vp = lanes_of(tvm.target.Target.current())

    def compute(data, u, padding, pad_value, window):
        return conv2d_winograd(data, u, padding, pad_value, window, vp=vp)

    return conv_rewrite_pass("WinogradConv", eligible, transform_weight, compute, OUT)
