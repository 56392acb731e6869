"""``default_schedule``: every kernel of every conv kind scheduled, same output as TVM's
unscheduled kernel, for x86 and aarch64 targets."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax
from tvm.tirx import PrimFunc

import targets
from edge_sr.models import MODELS
from edge_sr.models.torch_passes import DEFAULT_TORCH_PASSES, run_torch_passes
from edge_sr.pipeline import default_schedule as ds
from edge_sr.pipeline.builder import export_program, import_relax
from edge_sr.pipeline.passes import passes_for, run_passes
from edge_sr.pipeline.vnni import has_vnni

X86 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
VNNI = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
RPI4 = targets.tvm_target(targets.TARGETS["rpi4"])
RPI5 = targets.tvm_target(targets.TARGETS["rpi5"])
HOST = targets.tvm_target(targets.TARGETS["host"])  # what every schedule is run on here
RNG = np.random.default_rng(0)


def _kernels(mod: tvm.IRModule) -> dict[str, PrimFunc]:
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, PrimFunc)}


def _float_module(model: nn.Module, channels: int, size, target) -> tvm.IRModule:
    spec = type("S", (), {"channels": channels})
    model = run_torch_passes(model.eval(), DEFAULT_TORCH_PASSES)
    return run_passes(import_relax(export_program(model, spec, size, False)), target,
                      passes_for(target))


def _zoo_module(name: str, target, size=(16, 32)) -> tvm.IRModule:
    torch.manual_seed(0)
    spec = MODELS[name]
    return _float_module(spec.deploy(spec.factory().eval()), spec.channels, size, target)


class _Strided(nn.Module):
    """A stride-2 conv and a 7x7 one with 3 channels: shapes no template takes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.b = nn.Conv2d(8, 3, 7, padding=3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _int8_module(target, layout: str) -> tvm.IRModule:
    """Two int8 convs (3x3 8 -> 8 and 1x1 8 -> 4) with a requantizing epilogue, as the
    quantizer lowers them, through the target's int8 passes (vnni_conv, dot4_conv)."""
    nhwc = layout == "NHWC"
    dtype = "int8" if nhwc else "uint8"
    lo, hi = (-128, 127) if nhwc else (0, 255)
    shape = (1, 8, 16, 32) if not nhwc else (1, 16, 32, 8)
    kw = dict(data_layout=layout, kernel_layout="OHWI" if nhwc else "OIHW", out_dtype="int32")

    def weight(o, k):
        shape = (o, k, k, 8) if nhwc else (o, 8, k, k)
        return relax.const(RNG.integers(-128, 128, size=shape).astype("int8"))

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, weight(8, 3), padding=1, **kw))
            y = bb.emit(relax.op.right_shift(y, relax.const(np.int32(6))))
            y = bb.emit(relax.op.astype(relax.op.clip(y, lo, hi), dtype))
            y = bb.emit(relax.op.nn.conv2d(y, weight(4, 1), **kw))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return run_passes(bb.get(), target, passes_for(target, layout, "int8"))


def _args(func: PrimFunc) -> list[np.ndarray]:
    out = []
    for p in func.params:
        shape, dtype = [int(s) for s in p.shape], str(p.dtype)
        if dtype.startswith(("int", "uint")):
            lo, hi = (0, 256) if dtype.startswith("uint") else (-128, 128)
            out.append(RNG.integers(lo, hi, size=shape).astype(dtype))
        else:
            out.append((RNG.random(shape, dtype=np.float32) - 0.5).astype(dtype))
    return out


def _run(func: PrimFunc, args: list[np.ndarray]) -> np.ndarray:
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    lib = tvm.compile(mod, target=HOST)
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*tensors)
    return tensors[-1].numpy()


def _check_every_kernel(mod: tvm.IRModule, target) -> None:
    """Every kernel gets a default schedule whose output equals the unscheduled one's
    (run here whatever the target: the schedule is plain TIR), and the scheduled module
    compiles for the target itself."""
    scheduled, count = ds.default_schedule(mod, target)
    kernels = _kernels(mod)
    assert count == len(kernels), f"{len(kernels) - count} kernels kept TVM's default"
    for name, func in kernels.items():
        new = _kernels(scheduled)[name]
        assert new.attrs["tirx.is_scheduled"]
        assert "parallel" in new.script(), f"{name}: no parallel loop"
        args = _args(func)
        want = _run(func, [a.copy() for a in args])
        got = _run(new, [a.copy() for a in args])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    relax.build(scheduled, target)


# The zoo's conv kinds: FSRCNN's conv_chain head, 5x5, 1x1 and 3x3 convs and the
# depth-to-space; ECBSR's 3x3s; XLSR's grouped convs; GhostSR's channel slices and
# concatenations; SRResNet's 9x9 convs and 64 -> 256 convs.
ZOO = ("fsrcnn_x2", "ecbsr_m4c16_x2", "xlsr_x3", "ghostsr_x2", "srresnet_b2_x4")


@pytest.mark.parametrize("target", [X86, AVX2, RPI4], ids=["avx512", "avx2", "rpi4"])
@pytest.mark.parametrize("name", ZOO)
def test_zoo_kernels_are_scheduled_and_exact(name, target):
    size = (16, 32) if not name.startswith(("ghostsr", "srresnet")) else (8, 16)
    _check_every_kernel(_zoo_module(name, target, size), target)


@pytest.mark.parametrize("target", [X86, RPI4], ids=["avx512", "rpi4"])
def test_strided_and_odd_convs_are_scheduled_and_exact(target):
    _check_every_kernel(_float_module(_Strided(), 3, (16, 24), target), target)


@pytest.mark.parametrize("target,layout", [(VNNI, "NCHW"), (X86, "NCHW"), (AVX2, "NCHW"),
                                           (RPI4, "NCHW"), (RPI5, "NHWC")],
                         ids=["vnni", "avx512", "avx2", "rpi4", "rpi5-dot4"])
def test_int8_kernels_are_scheduled_and_exact(target, layout):
    mod = _int8_module(target, layout)
    names = " ".join(_kernels(mod))
    if target in (VNNI, AVX2):  # vpdpbusd, vpmaddwd
        assert "vnni" in names
        if target is VNNI and not has_vnni(HOST):
            pytest.skip("this CPU has no AVX512-VNNI to run the vpdpbusd kernels")
    if target is RPI5:
        assert "dot4" in names
    _check_every_kernel(mod, target)


def test_template_convs_get_the_template():
    # FSRCNN's plain convs get the template's register tile: taps outside an unrolled
    # tile of 16-float vectors on AVX-512, 4-float ones on NEON (the sub-pixel conv: the
    # one with a bias and no activation)
    for target, vector in ((X86, "T.vectorized(T.int64(16))"), (RPI4, "T.vectorized(T.int64(4))")):
        scheduled, _ = ds.default_schedule(_zoo_module("fsrcnn_x2", target), target)
        conv = [f for n, f in _kernels(scheduled).items()
                if re.fullmatch(r"fused_conv2d\d*_add\d*", n)][0]
        assert vector in conv.script() and "T.unroll" in conv.script()


@pytest.mark.parametrize("shape", [(56, 360, 640), (12, 96, 96), (4, 8, 16), (3, 30, 40)])
def test_image_tiles_divide_the_image_and_feed_every_core(shape):
    conv = ds.Conv("c", *shape, None, None, None, ())
    for lanes in (4, 8, 16):
        from edge_sr.pipeline.templates import register_tiles

        for tile in register_tiles(conv, lanes, 32):
            c, rows, cols = ds.image_tile(conv, tile, lanes, cores=4)
            assert c == shape[0] and shape[1] % rows == 0 and shape[2] % cols == 0
            assert rows % tile[1] == 0 and cols % (tile[2] * lanes) == 0
            assert cols <= max(ds.TILE_COLUMNS, tile[2] * lanes)
            tiles = (shape[1] // rows) * (shape[2] // cols)
            assert tiles >= ds.TILES_PER_CORE * 4 or rows == tile[1]


def test_a_scheduled_kernel_is_left_alone():
    mod = _zoo_module("fsrcnn_tiny_x2", X86)
    once, n = ds.default_schedule(mod, X86)
    again, m = ds.default_schedule(once, X86)
    assert n == len(_kernels(mod)) and m == 0
    assert not any(f.attrs and f.attrs.get("tirx.is_scheduled") for f in _kernels(mod).values())


def test_gpu_targets_are_not_touched():
    mod = _zoo_module("fsrcnn_tiny_x2", X86)
    assert ds.schedule_func(next(iter(_kernels(mod).values())),
                            tvm.target.Target({"kind": "cuda", "arch": "sm_80"})) is None


def test_symbolic_shapes_keep_tvms_default():
    # a --dynamic build: no fixed tile fits a symbolic height and width
    from edge_sr.pipeline.builder import BuildConfig, lower

    low = lower(BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(48, 48),
                            dynamic=True, reference_dataset=""))
    kernels = _kernels(low.mod)
    _, count = ds.default_schedule(low.mod, low.target)
    assert kernels and count < len(kernels)
