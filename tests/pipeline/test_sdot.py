"""Packed-weight int8 convs for sdot: exact, applied only where eligible, and tensorized by
MetaSchedule into sdot (checked in the cross-built binary) where OHWI weights are not."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax, te, topi

import targets
from edge_sr.pipeline.passes import passes_for
from edge_sr.pipeline.sdot import conv2d_nhwc_dot4, dot4_conv, pack_weight

HOST = tvm.target.Target({"kind": "llvm"})
OBJDUMP = f"{targets.AARCH64_TRIPLE}-objdump"
RNG = np.random.default_rng(0)


def _int8(*shape) -> np.ndarray:
    return RNG.integers(-128, 128, size=shape).astype("int8")


def _reference(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """int32 NHWC x OHWI conv, stride 1, zero padding."""
    x = np.pad(x.astype(np.int64), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    oc, kh, kw, _ = w.shape
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((1, h, wd, oc), np.int64)
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("nhwc,oc->nhwo", x[:, dy:dy + h, dx:dx + wd], w[:, dy, dx])
    return out.astype(np.int32)


def test_packed_conv_equals_the_conv_exactly():
    x, w = _int8(1, 9, 11, 8), _int8(12, 3, 3, 8)
    data = te.placeholder(x.shape, "int8", "data")
    wp = te.placeholder(pack_weight(w).shape, "int8", "wp")
    out = conv2d_nhwc_dot4(data, wp, (1, 1, 1, 1))
    lib = tvm.compile(te.create_prim_func([data, wp, out]), HOST)
    y = tvm.runtime.tensor(np.zeros((1, 9, 11, 12), "int32"))
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(pack_weight(w)), y)
    np.testing.assert_array_equal(y.numpy(), _reference(x, w, 1))


def _module(ic: int) -> tvm.IRModule:
    """int8 NHWC conv (ic -> 8) then one with 8 -> 8; ic=3 makes the first ineligible."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 10, 10, ic), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            kw = dict(data_layout="NHWC", kernel_layout="OHWI", out_dtype="int32")
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(_int8(8, 3, 3, ic)), padding=1, **kw))
            y = bb.emit(relax.op.astype(relax.op.clip(y, -128, 127), "int8"))
            y = bb.emit(relax.op.nn.conv2d(y, relax.const(_int8(8, 1, 1, 8)), **kw))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    mod = tvm.transform.Sequential([relax.transform.LegalizeOps(),
                                    relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
    ex = relax.build(mod, HOST)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("ic, rewritten", [(8, 2), (3, 1)])
def test_pass_rewrites_eligible_convs_and_keeps_the_result(ic, rewritten):
    mod = _module(ic)
    out = dot4_conv(mod)
    text = out.script()
    assert text.count("conv2d_nhwc_dot4") >= rewritten
    assert text.count("R.nn.conv2d(") == 2 - rewritten
    x = _int8(1, 10, 10, ic)
    np.testing.assert_array_equal(_run(out, x), _run(mod, x))


def _padded(pad_width: list[int]) -> tvm.IRModule:
    """An explicit NHWC pad with a zero point of 5, then an unpadded 3x3 conv."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 10, 10, 8), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            p = bb.emit(relax.op.nn.pad(x, pad_width, pad_value=5.0))
            y = bb.emit_output(relax.op.nn.conv2d(
                p, relax.const(_int8(8, 3, 3, 8)), data_layout="NHWC", kernel_layout="OHWI",
                out_dtype="int32"))
        bb.emit_func_output(y)
    return bb.get()


@pytest.mark.parametrize("pad_width, absorbed", [
    ([0, 0, 1, 1, 2, 0, 0, 0], True),     # H and W only (uneven too): into the kernel
    ([1, 0, 1, 1, 1, 1, 0, 0], False),    # the batch padded: stays a pad of its own
])
def test_a_zero_point_pad_runs_inside_the_packed_kernel(pad_width, absorbed):
    mod = _padded(pad_width)
    out = relax.transform.DeadCodeElimination()(dot4_conv(mod))
    main = out["main"].script()
    assert "conv2d_nhwc_dot4" in out.script()
    assert ("R.nn.pad(" not in main) == absorbed
    x = _int8(1, 10, 10, 8)
    np.testing.assert_array_equal(_run(out, x), _run(mod, x))


def test_only_int8_nhwc_on_a_dotprod_target_gets_the_pass():
    rpi5 = targets.tvm_target(targets.get_target("rpi5"))
    rpi4 = targets.tvm_target(targets.get_target("rpi4"))
    names = passes_for(rpi5, "NHWC", "int8")
    assert names.index("dot4_conv") == names.index("fold_constant") + 1
    assert names.index("dot4_conv") < names.index("legalize")
    for args in [(rpi5, "NHWC", "float32"), (rpi5, "NCHW", "int8"), (rpi4, "NHWC", "int8"),
                 (HOST, "NHWC", "int8")]:
        assert "dot4_conv" not in passes_for(*args), args


def _tuned_sdot(prim: tvm.tirx.PrimFunc, tmp_path) -> int:
    """sdot count of the first design-space schedule MetaSchedule tensorizes, linked for
    aarch64 (0 when no schedule of the space could be tensorized)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.support import cc

    target = targets.tvm_target(targets.get_target("rpi5"))
    mod = tvm.IRModule({"main": prim})
    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply",
                         search_strategy="evolutionary", task_name="conv", num_threads=1,
                         rand_state=0)
    for sketch in ctx.space_generator.generate_design_space(mod):
        sch = tvm.s_tir.Schedule(mod)
        sketch.trace.apply_to_schedule(sch, remove_postproc=True)
        if not all(p.apply(sch) for p in ctx.space_generator.postprocs):
            continue
        lib = tmp_path / "k.so"
        try:  # some sampled candidates fail to build, as they do while tuning
            tvm.compile(sch.mod, target).export_library(
                str(lib), fcompile=cc.cross_compiler(f"{targets.AARCH64_TRIPLE}-gcc"))
        except tvm.error.InternalError:
            continue
        text = subprocess.run([OBJDUMP, "-d", str(lib)], capture_output=True, text=True,
                              check=True).stdout
        if "\tsdot\t" in text:
            return text.count("\tsdot\t")
    return 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(OBJDUMP) is None,
                    reason=f"{OBJDUMP} (binutils-aarch64-linux-gnu) not installed")
def test_metaschedule_tensorizes_the_packed_conv_into_sdot_and_not_the_ohwi_one(tmp_path):
    data = te.placeholder((1, 34, 34, 12), "int8", "data")
    packed = te.placeholder((3, 3, 3, 3, 4, 4), "int8", "wp")
    prim = te.create_prim_func([data, packed, conv2d_nhwc_dot4(data, packed, (0, 0, 0, 0))])
    assert _tuned_sdot(prim, tmp_path) > 0
    ohwi = te.placeholder((12, 3, 3, 12), "int8", "w")
    plain = topi.nn.conv(data, ohwi, 1, 0, 1, 1, "NHWC", "OHWI", "int32")
    assert _tuned_sdot(te.create_prim_func([data, ohwi, plain]), tmp_path) == 0
