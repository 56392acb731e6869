"""``vnni_conv``: int8 NCHW convs on x86 AVX512-VNNI (``vpdpbusd``), exact to the int32 sum."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, te
from tvm.s_tir import meta_schedule as ms
from tvm.tirx import PrimFunc

import targets
from edge_sr.pipeline import templates, vnni
from edge_sr.pipeline.builder import BuildConfig, lower
from edge_sr.pipeline.passes import passes_for, run_passes

VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
HOST = targets.tvm_target(targets.TARGETS["host"])
HOST_VNNI = vnni.has_vnni(HOST)
needs_vnni = pytest.mark.skipif(not HOST_VNNI, reason="this CPU has no AVX512-VNNI")


def _conv_ref(x: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """int64 NCHW conv, stride 1."""
    x = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, _, kh, kw = w.shape
    n, _, h, wd = x.shape
    out = np.zeros((n, o, h - kh + 1, wd - kw + 1), np.int64)
    for a in range(kh):
        for b in range(kw):
            out += np.einsum("nchw,oc->nohw", x[:, :, a:a + out.shape[2], b:b + out.shape[3]],
                             w[:, :, a, b].astype(np.int64))
    return out


@pytest.mark.parametrize("cin,cout,k,pad", [(12, 12, 3, 1), (56, 4, 5, 0), (8, 16, 1, 0)])
def test_packed_conv_equals_the_int64_conv(cin, cout, k, pad):
    rng = np.random.default_rng(cin)
    x = rng.integers(0, 256, (1, cin, 10, 16), dtype=np.uint8)
    w = rng.integers(-128, 128, (cout, cin, k, k), dtype=np.int8)
    data = te.placeholder(x.shape, "uint8", name="x")
    wp = te.placeholder(vnni.pack_weight(w).shape, "int8", name="w")
    out = vnni.conv2d_nchw_vnni(data, wp, (pad,) * 4)
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([data, wp, out])}),
                      target=tvm.target.Target({"kind": "llvm"}))
    got = tvm.runtime.tensor(np.zeros([int(s) for s in out.shape], np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(vnni.pack_weight(w)), got)
    np.testing.assert_array_equal(got.numpy(), _conv_ref(x, w, pad))


def test_only_int8_nchw_on_vnni_cpus_get_the_pass():
    assert "vnni_conv" in passes_for(VNNI, "NCHW", "int8")
    assert "vnni_conv" not in passes_for(VNNI, "NCHW", "float32")
    haswell = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    assert not vnni.has_vnni(haswell) and "vnni_conv" not in passes_for(haswell, "NCHW", "int8")
    for name in ("rpi4", "rpi5"):
        t = targets.tvm_target(targets.TARGETS[name])
        assert not vnni.has_vnni(t)
        assert "vnni_conv" not in passes_for(t, targets.TARGETS[name].layout("int8"), "int8")


def _relax_conv(cin: int, width: int, dtype: str = "uint8") -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, 8, width), dtype))
    w = relax.const(np.ones((4, cin, 3, 3), np.int8))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(x, w, padding=1, out_dtype="int32"))
        bb.emit_func_output(y)
    return bb.get()


@pytest.mark.parametrize("cin,width,dtype,rewritten", [
    (12, 16, "uint8", True),
    (1, 16, "uint8", False),    # FSRCNN's head: no group of four channels
    (12, 12, "uint8", False),   # a row that is no whole number of 8-pixel vectors
    (12, 16, "int16", False),   # the mixed build's 16-bit tensors
])
def test_pass_rewrites_exactly_the_eligible_convs(cin, width, dtype, rewritten):
    mod = vnni.vnni_conv(_relax_conv(cin, width, dtype))
    names = [gv.name_hint for gv in mod.functions]
    assert any("vnni" in n for n in names) == rewritten


def _fsrcnn_int8(size=(24, 32), passes=None) -> tvm.IRModule:
    cfg = BuildConfig(model="fsrcnn_x2", target="host", size=size, dtype="int8",
                      fallback=False, reference_dataset="", calib_images=8,
                      passes=passes or [])
    return lower(cfg)


@pytest.fixture(scope="module")
def fsrcnn():
    return _fsrcnn_int8()


def test_fsrcnn_full_int8_has_four_kinds_of_vnni_kernel(fsrcnn):
    if not HOST_VNNI:
        pytest.skip("this CPU has no AVX512-VNNI: the host build has no vnni_conv")
    kernels = [gv.name_hint for gv, f in fsrcnn.mod.functions.items() if isinstance(f, PrimFunc)]
    # shrink, maps (one kernel, four calls), expand, sub-pixel conv; the 1-channel head stays
    assert len([k for k in kernels if "conv2d_vnni" in k]) >= 4
    assert any("conv2d_add" in k or k.startswith("fused_conv2d_add") for k in kernels)


def test_zero_point_pads_run_inside_the_vnni_kernels(fsrcnn):
    # The quantizer pads each conv's input with its zero point; the packed kernels take
    # that pad in (bit-identity with the plain module is checked below).
    if not HOST_VNNI:
        pytest.skip("this CPU has no AVX512-VNNI: the host build has no vnni_conv")
    calls = [ln for ln in fsrcnn.mod["main"].script().splitlines() if "R.call_tir(" in ln]
    assert not [c for c in calls if "R.call_tir(cls.pad" in c or "call_tir(pad" in c]
    # quantize, head, shrink, four maps, expand, sub-pixel conv, depth-to-space
    assert len(calls) == 10


def _template_spaces(func: PrimFunc, target: tvm.target.Target) -> tuple[list, list]:
    ctx = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=target,
                         space_generator=templates.space_generator(target),
                         search_strategy="replay-trace", task_name="t")
    spaces = [s for s in ctx.generate_design_space() if templates.DONE[0] in s.mod.script()]
    return spaces, list(ctx.space_generator.postprocs)


def _args(func: PrimFunc, rng) -> list[np.ndarray]:
    out = []
    for p in func.params:
        shape = [int(s) for s in p.shape]
        if p.dtype == "uint8":
            out.append(rng.integers(0, 256, shape, dtype=np.uint8))
        elif p.dtype == "int8":
            out.append(rng.integers(-128, 128, shape, dtype=np.int8))
        elif p.dtype == "int32":
            out.append(rng.integers(-5000, 5000, shape, dtype=np.int32))
        else:
            out.append((rng.random(shape, dtype=np.float32) * 0.01).astype(p.dtype))
    return out


def _run(mod: tvm.IRModule, target, args) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": mod["main"].with_attr("global_symbol", "main")}),
                      target=target)
    t = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*t)
    return t[-1].numpy()


def test_template_spaces_tensorize_into_vpdpbusd():
    # compiles for a VNNI CPU on any machine: the library must contain the instruction
    mod = run_passes(_fsrcnn_int8(passes=["fold_constant"]).mod, VNNI,
                     passes_for(VNNI, "NCHW", "int8")[1:])
    kernels = {gv.name_hint: f for gv, f in mod.functions.items()
               if isinstance(f, PrimFunc) and "vnni" in gv.name_hint}
    assert kernels
    for name, func in kernels.items():
        spaces, post = _template_spaces(func, VNNI)
        assert spaces, name
        for space in spaces:
            assert all(p.apply(space) for p in post), name
        lib = tvm.compile(tvm.IRModule({"main": spaces[0].mod["main"].with_attr(
            "global_symbol", "main")}), target=VNNI)
        assert "vpdpbusd" in lib.mod.inspect_source("asm"), name


@needs_vnni
def test_template_spaces_compute_the_kernel_exactly(fsrcnn):
    rng = np.random.default_rng(0)
    for gv, func in fsrcnn.mod.functions.items():
        if not (isinstance(func, PrimFunc) and "vnni" in gv.name_hint):
            continue
        args = _args(func, rng)
        want = _run(tvm.IRModule({"main": func}), HOST, args)
        spaces, post = _template_spaces(func, HOST)
        assert spaces, gv.name_hint
        for space in spaces:
            assert all(p.apply(space) for p in post)
            np.testing.assert_array_equal(_run(space.mod, HOST, args), want,
                                          err_msg=gv.name_hint)


@needs_vnni
def test_int8_module_is_bit_identical_with_and_without_the_pass(fsrcnn):
    plain = _fsrcnn_int8(passes=[n for n in fsrcnn.passes if n != "vnni_conv"])
    x = np.random.default_rng(1).random((1, 1, 24, 32), dtype=np.float32)
    outs = []
    for low in (fsrcnn, plain):
        ex = relax.build(low.mod, HOST)
        outs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy())
    assert "vnni_conv" in fsrcnn.passes and "vnni_conv" not in plain.passes
    np.testing.assert_array_equal(outs[0], outs[1])
