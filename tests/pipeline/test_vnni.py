"""``vnni_conv``: int8 NCHW convs on x86 (``vpdpbusd`` with VNNI, ``vpmaddwd`` on AVX2),
exact to the int32 sum."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, te
from tvm.s_tir import meta_schedule as ms
from tvm.tirx import PrimFunc

import targets
from edge_sr.models import MODELS, load_model
from edge_sr.models.torch_passes import subpixel_deconv
from edge_sr.pipeline import templates, vnni
from edge_sr.pipeline.builder import BuildConfig, lower
from edge_sr.pipeline.default_schedule import default_schedule
from edge_sr.pipeline.passes import passes_for, run_passes
from edge_sr.quant.lower import lower_to_relax
from edge_sr.quant.plan import calibrate, int16_candidates, make_plan, trace, with_int16

VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
HOST = targets.tvm_target(targets.TARGETS["host"])
HOST_FORM = vnni.int8_form(HOST)
needs_form = pytest.mark.skipif(HOST_FORM is None, reason="this CPU is no x86 with AVX2")


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


RANGES = {"uint8": (0, 256), "int16": (-32767, 32768)}


@pytest.mark.parametrize("form", sorted(vnni.FORMS))
@pytest.mark.parametrize("dtype", vnni.DTYPES)
@pytest.mark.parametrize("cin,cout,k,pad", [
    (12, 12, 3, 1), (56, 4, 5, 0), (8, 16, 1, 0),
    (1, 56, 5, 2), (3, 8, 3, 1), (3, 8, 1, 0),  # the taps form: no whole group
])
def test_packed_conv_equals_the_int64_conv(cin, cout, k, pad, dtype, form):
    rng = np.random.default_rng(cin)
    x = rng.integers(*RANGES[dtype], (1, cin, 10, 16)).astype(dtype)
    w = rng.integers(-128, 128, (cout, cin, k, k), dtype=np.int8)
    wp = vnni.pack_weight(w, dtype, form)
    data = te.placeholder(x.shape, dtype, name="x")
    weights = te.placeholder(wp.shape, str(wp.dtype), name="w")
    out = vnni.conv2d_nchw_vnni(data, weights, (pad,) * 4, kernel=(k, k))
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([data, weights, out])}),
                      target=tvm.target.Target({"kind": "llvm"}))
    got = tvm.runtime.tensor(np.zeros([int(s) for s in out.shape], np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(wp), got)
    np.testing.assert_array_equal(got.numpy(), _conv_ref(x, w, pad))


@pytest.mark.parametrize("mcpu,form", [("cascadelake", "vnni"), ("alderlake", "vnni"),
                                       ("znver3", "avx2"), ("haswell", "avx2"),
                                       ("x86-64", None)])
def test_each_x86_cpu_gets_its_form(mcpu, form):
    # Alder Lake: AVX-VNNI without AVX-512; Zen 3 and Haswell: AVX2 only
    assert vnni.int8_form(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})) == form


def test_only_int8_nchw_on_x86_cpus_get_the_pass():
    assert "vnni_conv" in passes_for(VNNI, "NCHW", "int8")
    assert "vnni_conv" not in passes_for(VNNI, "NCHW", "float32")
    assert "vnni_conv" in passes_for(AVX2, "NCHW", "int8")
    for name in ("rpi4", "rpi5"):
        t = targets.tvm_target(targets.TARGETS[name])
        assert vnni.int8_form(t) is None
        assert "vnni_conv" not in passes_for(t, targets.TARGETS[name].layout("int8"), "int8")


@pytest.mark.parametrize("mcpu,instruction", [("cascadelake", r"\svpdpbusd"),
                                              ("alderlake", r"\{vex\}\s+vpdpbusd"),
                                              ("znver3", r"\svpmaddwd")])
def test_each_form_emits_its_instruction(mcpu, instruction):
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    mod = run_passes(_relax_conv(16, 16), target, passes_for(target, "NCHW", "int8"))
    mod, _ = default_schedule(mod, target)
    (func,) = _vnni_kernels(mod).values()
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target=target)
    assert re.search(instruction, lib.mod.inspect_source("asm"))


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
    (1, 16, "uint8", True),     # FSRCNN's head: the taps form
    (9, 16, "uint8", False),    # 81 taps: past MAX_TAPS, and no whole groups of four
    (12, 12, "uint8", False),   # a row that is no whole number of 8-pixel vectors
    (12, 16, "int16", True),    # the mixed build's 16-bit tensors: pairs of channels
    (3, 16, "int16", True),     # an odd channel count: the taps form
    (9, 16, "int16", False),    # 81 taps
    (12, 16, "int8", False),    # signed 8-bit data: vpdpbusd's data operand is unsigned
])
@pytest.mark.parametrize("form", sorted(vnni.FORMS))
def test_pass_rewrites_exactly_the_eligible_convs(cin, width, dtype, rewritten, form):
    mod = vnni.vnni_conv(form)(_relax_conv(cin, width, dtype))
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


def _mixed_fsrcnn(size=(24, 32)) -> tvm.IRModule:
    """FSRCNN x2 with every eligible tensor in 16 bits (the mixed build's fallback taken
    to its end), as Relax before any pass."""
    spec = MODELS["fsrcnn_x2"]
    gm = trace(subpixel_deconv(load_model("fsrcnn_x2")))
    xs = [torch.rand(4, 1, *size, generator=torch.Generator().manual_seed(i))
          for i in range(2)]
    stats = calibrate(gm, xs)
    plan = make_plan(gm, stats, "mse")
    plan = with_int16(plan, stats, int16_candidates(gm, plan))
    return lower_to_relax(gm, plan, (1, spec.channels, *size))


@pytest.fixture(scope="module")
def mixed():
    return _mixed_fsrcnn()


def _int16_kernels(mod: tvm.IRModule) -> list[str]:
    """The packed convs whose data (their first parameter) is 16-bit."""
    return [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, PrimFunc)
            and "vnni" in gv.name_hint and f.params[0].dtype == "int16"]


def test_mixed_build_runs_its_16_bit_convs_on_vnni(mixed):
    mod = run_passes(mixed, VNNI, passes_for(VNNI, "NCHW", "int8"))
    # shrink and the maps read 16-bit tensors in FSRCNN x2's fallback
    assert len(_int16_kernels(mod)) >= 2


@pytest.mark.slow
def test_fsrcnn_full_int8_has_four_kinds_of_vnni_kernel(fsrcnn):
    if HOST_FORM is None:
        pytest.skip("this CPU is no x86 with AVX2: the host build has no vnni_conv")
    kernels = [gv.name_hint for gv, f in fsrcnn.mod.functions.items() if isinstance(f, PrimFunc)]
    # head (taps form), shrink, maps (one kernel, four calls), expand, sub-pixel conv
    assert len([k for k in kernels if "conv2d_vnni" in k]) >= 5
    assert not [k for k in kernels if k.startswith("fused_conv2d_add")]  # no plain conv


@pytest.mark.slow
def test_zero_point_pads_run_inside_the_vnni_kernels(fsrcnn):
    # The quantizer pads each conv's input with its zero point; the packed kernels take
    # that pad in (bit-identity with the plain module is checked below).
    if HOST_FORM is None:
        pytest.skip("this CPU is no x86 with AVX2: the host build has no vnni_conv")
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
        if p.dtype in RANGES:
            out.append(rng.integers(*RANGES[p.dtype], shape).astype(p.dtype))
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


def _vnni_kernels(mod: tvm.IRModule) -> dict[str, PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions.items()
            if isinstance(f, PrimFunc) and "vnni" in gv.name_hint}


@pytest.mark.slow
@pytest.mark.parametrize("target", [VNNI, AVX2], ids=["vnni", "avx2"])
@pytest.mark.parametrize("build", ["full", "mixed"])
def test_template_spaces_tensorize_into_dot_instructions(build, target, mixed):
    # compiles for the CPU on any machine: the library must contain the instruction
    raw = _fsrcnn_int8(passes=["fold_constant"]).mod if build == "full" else mixed
    mod = run_passes(raw, target, passes_for(target, "NCHW", "int8")[build == "full":])
    kernels = _vnni_kernels(mod)
    assert kernels
    for name, func in kernels.items():
        # LLVM may emit vpdpwssd as vpmaddwd + vpaddd where it schedules that faster
        wanted = ("vpdpwssd", "vpmaddwd") if name in _int16_kernels(mod) else ("vpdpbusd",)
        if target is AVX2:
            wanted = ("vpmaddwd",)
        spaces, post = _template_spaces(func, target)
        assert spaces, name
        for space in spaces:
            assert all(p.apply(space) for p in post), name
        lib = tvm.compile(tvm.IRModule({"main": spaces[0].mod["main"].with_attr(
            "global_symbol", "main")}), target=target)
        asm = lib.mod.inspect_source("asm")
        assert any(w in asm for w in wanted), name


@pytest.mark.slow
@needs_form
@pytest.mark.parametrize("build", ["full", "mixed"])
def test_template_spaces_compute_the_kernel_exactly(build, fsrcnn, mixed):
    rng = np.random.default_rng(0)
    mod = fsrcnn.mod if build == "full" else run_passes(mixed, HOST, passes_for(HOST, "NCHW",
                                                                                "int8"))
    for gv, func in mod.functions.items():
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


@pytest.mark.slow
@needs_form
def test_int8_module_is_bit_identical_with_and_without_the_pass(fsrcnn):
    plain = _fsrcnn_int8(passes=[n for n in fsrcnn.passes if n != "vnni_conv"])
    x = np.random.default_rng(1).random((1, 1, 24, 32), dtype=np.float32)
    outs = []
    for low in (fsrcnn, plain):
        ex = relax.build(low.mod, HOST)
        outs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy())
    assert "vnni_conv" in fsrcnn.passes and "vnni_conv" not in plain.passes
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_form
def test_mixed_module_is_bit_identical_with_and_without_the_pass(mixed):
    x = np.random.default_rng(1).random((1, 1, 24, 32), dtype=np.float32)
    names = passes_for(HOST, "NCHW", "int8")
    outs = []
    for passes in (names, [n for n in names if n != "vnni_conv"]):
        ex = relax.build(run_passes(mixed, HOST, passes), HOST)
        outs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
