"""A ``frame`` function beside ``main``: one raw video frame in, the upscaled frame out.

``runtime.stream`` feeds raw ``yuv420p`` or ``rgb24`` frames. Done in numpy, the work
around the model (chroma upscaling, BT.601 conversions, rounding to bytes) runs on one
core beside the module's threads; compiled into the module it runs parallel and
vectorized, and the stream only moves bytes. The arithmetic is the numpy path's
(``runtime.stream.Upscaler``, ``runtime.colour``, ``runtime.imresize``) in the same order
and precision (float32; chroma of a uint8 plane in float32, where numpy uses float64:
for x2 both are exact), so a frame equals the numpy path's within one level, and for
``yuv420p`` x2 exactly.

``main`` is kept as it is (images, tiling, the reference quality): ``frame`` calls it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir, te

from runtime.colour import RGB2YCBCR, YCBCR2RGB, YCBCR_OFFSET
from runtime.imresize import bicubic_weights
from runtime.stream import PIX_FMTS, frame_bytes


def _phase_taps(s: int, n: int) -> list[list[tuple[int, float]]]:
    """MATLAB's bicubic x``s`` as taps: for each output phase ``p`` (output ``q*s + p``)
    the (offset from input ``q``, float32 weight) pairs, zero weights left out (they add
    nothing: numpy's sums are the same without them)."""
    idx, w = bicubic_weights(s, s)
    w = w.astype(np.float32)
    taps = [[(int(idx[p, t]) - 1, float(w[p, t])) for t in range(w.shape[1]) if w[p, t]]
            for p in range(s)]
    if n <= max(abs(o) for phase in taps for o, _ in phase):
        raise ValueError(f"a plane of {n} pixels is too small to upscale")
    return taps


def _mirror(k, n: int):
    """MATLAB's symmetric boundary: index -1 -> 0, n -> n - 1."""
    return tvm.tirx.Select(k < 0, -k - 1, tvm.tirx.Select(k >= n, 2 * n - 1 - k, k))


def _phase_sum(taps, load):
    """A phase's taps summed in numpy's order (left to right)."""
    acc = None
    for off, wt in taps:
        term = tvm.tirx.const(wt, "float32") * load(off)
        acc = term if acc is None else acc + term
    return acc


def _phases(o, taps, load):
    """Output ``o`` of an upscale: its phase's taps around input ``o // s`` summed, the
    phase chosen by ``o % s`` (``load(q, offset)`` reads the input)."""
    s = len(taps)
    q, p = o // s, o % s
    out = _phase_sum(taps[0], lambda off: load(q, off))
    for phase in range(1, s):
        out = tvm.tirx.Select(p == phase, _phase_sum(taps[phase], lambda off: load(q, off)),
                              out)
    return out


def _upscale_cols_prim(shape: tuple[int, int], s: int) -> tvm.tirx.PrimFunc:
    """``runtime.imresize._upscale_axis`` along the first axis: every output row is one
    phase of one input row, so a row's loop reads plain rows (the default schedule
    vectorizes it)."""
    n, cols = shape
    taps = _phase_taps(s, n)
    x = te.placeholder(shape, "float32", "x")

    y = te.compute((n * s, cols), lambda o, j: _phases(
        o, taps, lambda q, off: x[_mirror(q + off, n), j]), name="bicubic")
    return te.create_prim_func([x, y])


def _upscale_rows_prim(shape: tuple[int, int], s: int) -> tvm.tirx.PrimFunc:
    """The same along the last axis, scheduled here: the rows padded once (mirrored),
    then each output column's phases from plain shifted loads, rows in parallel and the
    phase loop unrolled, so that LLVM vectorizes the column loop with interleaved stores.
    With the phase chosen per element as along the first axis, 720x640 -> 720x1280 took
    1.25 ms (gathers) against 0.45."""
    rows, n = shape
    taps = _phase_taps(s, n)
    lo = -min(o for phase in taps for o, _ in phase)
    hi = max(o for phase in taps for o, _ in phase)
    x = te.placeholder(shape, "float32", "x")
    xp = te.compute((rows, n + lo + hi), lambda i, c: x[i, _mirror(c - lo, n)], name="pad")

    y = te.compute((rows, n * s), lambda i, f: _phases(
        f, taps, lambda q, off: xp[i, q + off + lo]), name="bicubic")
    sch = s_tir.Schedule(te.create_prim_func([x, y]))
    sch.parallel(sch.get_loops(sch.get_sblock("pad"))[0])
    i, f = sch.get_loops(sch.get_sblock("bicubic"))
    _, p = sch.split(f, [n, s])
    sch.parallel(i)
    sch.unroll(p)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _interleave_prim(shapes: list[tuple[int, int]], dtypes: list[str], channels: int,
                     pixel) -> tvm.tirx.PrimFunc:
    """HxW planes -> one flat HxWxC uint8 frame: channel ``k`` of a pixel is
    ``pixel(k, values)``, ``values`` the planes at that pixel. Scheduled here: rows in
    parallel, the channel loop unrolled, so that the planes are read once per pixel and
    LLVM's loop vectorizer sees one interleaved store group (shuffles on x86, ``st3`` on
    Arm). A vectorized flat loop gathers instead: 5.4 ms against 0.4 at 720x1280x3."""
    planes = [te.placeholder(sh, dt, f"p{i}") for i, (sh, dt) in enumerate(zip(shapes, dtypes))]
    h, w = shapes[0]

    def value(f):
        pix, k = f // channels, f % channels
        vals = [p[pix // w, pix % w] for p in planes]
        out = pixel(channels - 1, vals)
        for c in range(channels - 2, -1, -1):
            out = tvm.tirx.Select(k == c, pixel(c, vals), out)
        return out

    # flat, as the frame is returned (a reshape after it would be a copy of its own)
    y = te.compute((h * w * channels,), value, name="interleave")
    sch = s_tir.Schedule(te.create_prim_func([*planes, y]))
    (f,) = sch.get_loops(sch.get_sblock("interleave"))
    i, _, k = sch.split(f, [h, w, channels])
    sch.parallel(i)
    sch.unroll(k)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _ycbcr_prim(h: int, w: int) -> tvm.tirx.PrimFunc:
    """A flat HxWx3 uint8 frame -> the model's luma plane (1x1xHxW, Y / 255) and the
    Cb, Cr planes (0-255), ``runtime.colour.ycbcr_planes`` per pixel. Scheduled here as
    ``_interleave_prim`` is: LLVM vectorizes the column loop with interleaved loads."""
    frame = te.placeholder((h * w * 3,), "uint8", "frame")

    def value(i, j):
        rgb = [frame[(i * w + j) * 3 + k].astype("float32") / _c(255.0) for k in range(3)]
        ycc = [((rgb[0] * _c(row[0]) + rgb[1] * _c(row[1])) + rgb[2] * _c(row[2])) + _c(off)
               for row, off in zip(RGB2YCBCR, YCBCR_OFFSET)]
        return [ycc[0] / _c(255.0), ycc[1], ycc[2]]

    y, cb, cr = te.compute((h, w), value, name="ycbcr")
    sch = s_tir.Schedule(te.create_prim_func([frame, y, cb, cr]))
    sch.parallel(sch.get_loops(sch.get_sblock("ycbcr_v0"))[0])  # the three share loops
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _c(v: float) -> tvm.tirx.PrimExpr:
    return tvm.tirx.const(float(np.float32(v)), "float32")


def _u8_unit(v):
    """``runtime.upscale.to_uint8`` of one value: clip to [0, 1], x255, round (half to
    even, as ``np.round``), to uint8."""
    v = tvm.tirx.max(tvm.tirx.min(v, _c(1.0)), _c(0.0)) * _c(255.0)
    r = tvm.tirx.max(tvm.tirx.min(tvm.tirx.round(v), _c(255.0)), _c(0.0))
    return r.astype("uint8")


def _rgb_from_ycbcr(k: int, vals):
    """``runtime.colour.rgb_from_ycbcr_planes`` then ``to_uint8``, channel ``k`` of one
    pixel: ``vals`` are the model's luma on [0, 1] and the upscaled Cb, Cr (0-255)."""
    y, cb, cr = vals
    luma = (y * _c(255.0) - _c(16.0)) * _c(YCBCR2RGB[0, 0])
    _, to_cb, to_cr = YCBCR2RGB[k]
    return _u8_unit(luma + (cb - _c(128.0)) * _c(to_cb) + (cr - _c(128.0)) * _c(to_cr))


def _f32(v: float) -> relax.Constant:
    return relax.const(np.float32(v))


class _Ops:
    """Relax expressions emitted into one block, named as the numpy path's steps."""

    def __init__(self, bb: relax.BlockBuilder):
        self.bb = bb

    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    def slice(self, x, axis: int, begin: int, end: int) -> relax.Var:
        return self.emit(relax.op.strided_slice(x, [axis], [begin], [end]))

    def kernel(self, prim: tvm.tirx.PrimFunc, name: str, args: list, out_ty) -> relax.Var:
        """Call one of this module's TIR kernels, opaque to fusion (each is scheduled
        where it is made, or by the default rule on its own)."""
        gv = self.bb.add_func(prim.with_attrs({"op_pattern": 8, "global_symbol": name}), name)
        return self.emit(relax.call_tir(gv, args, out_ty))

    def upscale_axis(self, x, axis: int, s: int) -> relax.Var:
        """``runtime.imresize._upscale_axis`` of a 2-D float32 plane: output ``q*s + p``
        is phase ``p``'s few taps around input ``q`` (symmetric boundary), summed in
        numpy's order. One kernel of its own (opaque to fusion: inlined into the next
        axis, each of its values would be computed once per tap of that axis)."""
        shape = [int(d) for d in x.ty.shape]
        out_shape = list(shape)
        out_shape[axis] *= s
        prim = (_upscale_rows_prim if axis == 1 else _upscale_cols_prim)(tuple(shape), s)
        return self.kernel(prim, f"bicubic_x{s}_axis{axis}_{shape[0]}x{shape[1]}", [x],
                           relax.TensorType(out_shape, "float32"))

    def imresize(self, plane, s: int) -> relax.Var:
        """``imresize(plane, s)`` of a float32 HxW plane (rows first, as numpy)."""
        return self.upscale_axis(self.upscale_axis(plane, 0, s), 1, s)

    def to_u8_round(self, x) -> relax.Var:
        """``np.round``, then clip to [0, 255], as uint8 (``imresize`` of a uint8 plane)."""
        r = self.emit(relax.op.clip(self.emit(relax.op.round(x)), 0, 255))
        return self.emit(relax.op.astype(r, "uint8"))

    def interleave(self, planes: list, pixel, name: str) -> relax.Var:
        """HxW planes -> the flat HxWx3 uint8 frame, ``pixel(k, values)`` giving channel
        ``k``; one kernel of its own (``_interleave_prim``)."""
        shapes = [tuple(int(d) for d in p.ty.shape) for p in planes]
        h, w = shapes[0]
        prim = _interleave_prim(shapes, [p.ty.dtype for p in planes], 3, pixel)
        return self.kernel(prim, f"{name}_{h}x{w}", planes,
                           relax.TensorType((h * w * 3,), "uint8"))

    def to_u8_floor(self, x) -> relax.Var:
        """[0, 1] float -> uint8 as the module's uint8 I/O and the yuv420p stream:
        ``floor(clip(x, 0, 1) * 255 + 0.5)``."""
        t = self.emit(relax.op.multiply(self.emit(relax.op.clip(x, 0, 1)), _f32(255.0)))
        t = self.emit(relax.op.floor(self.emit(relax.op.add(t, _f32(0.5)))))
        return self.emit(relax.op.astype(t, "uint8"))


def _model(ops: _Ops, main: relax.GlobalVar, planes, dtype: str) -> relax.Var:
    """``main`` on float32 [0, 1] planes, float32 [0, 1] out, whatever ``main``'s I/O
    (a uint8 module gets its planes rounded, as ``Engine.upscale`` rounds them)."""
    if dtype == "uint8":
        planes = ops.to_u8_floor(planes)
    out = ops.emit(relax.Call(main, [planes]))
    if dtype == "uint8":
        out = ops.emit(relax.op.divide(ops.emit(relax.op.astype(out, "float32")),
                                       _f32(255.0)))
    return out


def _yuv420p(ops: _Ops, main, dtype: str, f, h: int, w: int, s: int) -> relax.Var:
    """Luma through the model, chroma upscaled from its 8-bit planes."""
    n = h * w
    y8 = ops.emit(relax.op.reshape(ops.slice(f, 0, 0, n), (1, 1, h, w)))
    if dtype == "uint8":  # the module takes the luma bytes as they are
        y = ops.emit(relax.Call(main, [y8]))
    else:
        planes = ops.emit(relax.op.divide(ops.emit(relax.op.astype(y8, "float32")),
                                          _f32(255.0)))
        y = ops.to_u8_floor(ops.emit(relax.Call(main, [planes])))
    outs = [ops.emit(relax.op.reshape(y, (h * s * w * s,)))]
    for k in range(2):
        c = ops.slice(f, 0, n + k * n // 4, n + (k + 1) * n // 4)
        c = ops.emit(relax.op.astype(ops.emit(relax.op.reshape(c, (h // 2, w // 2))),
                                     "float32"))
        up = ops.to_u8_round(ops.imresize(c, s))
        outs.append(ops.emit(relax.op.reshape(up, (h * s * w * s // 4,))))
    return ops.emit(relax.op.concat(outs, 0))


def _rgb24(ops: _Ops, main, dtype: str, colour: str, f, h: int, w: int,
           s: int) -> relax.Var:
    """``prepare_picture`` and ``finish_picture`` of an 8-bit RGB frame."""
    if colour != "y":
        rgb = ops.emit(relax.op.divide(
            ops.emit(relax.op.astype(ops.emit(relax.op.reshape(f, (h, w, 3))), "float32")),
            _f32(255.0)))
        planes = ops.emit(relax.op.expand_dims(
            ops.emit(relax.op.permute_dims(rgb, [2, 0, 1])), 0))
        out = _model(ops, main, planes, dtype)
        chans = [ops.emit(relax.op.reshape(ops.slice(out, 1, k, k + 1), (h * s, w * s)))
                 for k in range(3)]
        return ops.interleave(chans, lambda k, vals: _u8_unit(vals[k]), "rgb_out")
    ycc = ops.kernel(_ycbcr_prim(h, w), f"ycbcr_{h}x{w}", [f],
                     [relax.TensorType((h, w), "float32")] * 3)
    ycc = [ops.emit(relax.TupleGetItem(ycc, k)) for k in range(3)]
    planes = ops.emit(relax.op.reshape(ycc[0], (1, 1, h, w)))
    out = _model(ops, main, planes, dtype)
    chroma = [ops.imresize(c, s) for c in ycc[1:]]
    y = ops.emit(relax.op.reshape(out, (h * s, w * s)))
    return ops.interleave([y, *chroma], _rgb_from_ycbcr, "rgb_from_ycbcr")


def check_frame(pix_fmt: str, colour: str, h: int, w: int) -> None:
    """Refuse, in one line, a frame format a model of ``colour`` at HxW cannot take.

    Raises:
        ValueError: an unknown format, yuv420p for an RGB model or at an odd size.
    """
    if pix_fmt not in PIX_FMTS:
        raise ValueError(f"unknown --frame {pix_fmt}: choose {' or '.join(PIX_FMTS)}")
    if pix_fmt == "yuv420p" and colour != "y":
        raise ValueError("yuv420p frames need a Y-channel model; this one is RGB: use "
                         "--frame rgb24")
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ValueError(f"yuv420p frames need an even --size; got {h}x{w}")


def add_frame(mod: tvm.IRModule, pix_fmt: str, scale: int, colour: str) -> tvm.IRModule:
    """Add ``frame(f: uint8[frame bytes]) -> uint8[upscaled frame bytes]`` to ``mod``.

    Args:
        mod: The imported module; ``main`` takes (1, C, H, W) planes (float32 or uint8).
        pix_fmt: ``yuv420p`` (Y models) or ``rgb24``.
        scale: The model's upscaling factor.
        colour: ``"y"`` or ``"rgb"``.

    Raises:
        ValueError: a pixel format the model cannot take (``check_frame``).
    """
    (x,) = mod["main"].params
    _, _, h, w = (int(d) for d in x.ty.shape)
    check_frame(pix_fmt, colour, h, w)
    dtype = x.ty.dtype
    # a new builder: the imported module's GlobalVar for main still carries the
    # exported program's signature (weights as parameters)
    bb = relax.BlockBuilder()
    main = bb.add_func(mod["main"], "main")
    for gv, func in mod.functions_items():
        if gv.name_hint != "main":
            bb.add_func(func, gv.name_hint)
    f = relax.Var("frame", relax.TensorType((frame_bytes(w, h, pix_fmt),), "uint8"))
    with bb.function("frame", [f]):
        with bb.dataflow():
            ops = _Ops(bb)
            out = (_yuv420p(ops, main, dtype, f, h, w, scale) if pix_fmt == "yuv420p"
                   else _rgb24(ops, main, dtype, colour, f, h, w, scale))
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    return bb.get()


__all__ = ["add_frame", "check_frame"]
