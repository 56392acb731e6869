"""Winograd F(4x4, 3x3) convs on Arm: the transforms, the kernel against PyTorch's conv
for odd shapes and both vector widths, and where the rewrite applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, s_tir, te
from tvm.tirx import PrimFunc

import targets
from edge_sr.pipeline import winograd
from edge_sr.pipeline.default_schedule import default_schedule
from edge_sr.pipeline.passes import run_passes

HOST = targets.tvm_target(targets.TARGETS["host"])
RPI4 = targets.tvm_target(targets.TARGETS["rpi4"])
RNG = np.random.default_rng(0)


def test_shared_sum_rows_are_the_transform_matrices():
    col = list(RNG.random(6))
    np.testing.assert_allclose(winograd.input_rows(col), winograd.BT @ col, atol=1e-12)
    np.testing.assert_allclose(winograd.output_rows(col), winograd.AT @ col, atol=1e-12)


def test_the_transforms_compute_a_tile_of_the_conv():
    d, g = RNG.random((6, 6)), RNG.random((3, 3))
    u = winograd.transform_weight(g[None, None].astype(np.float32))[:, :, 0, 0]
    tile = winograd.AT @ (u * (winograd.BT @ d @ winograd.BT.T)) @ winograd.AT.T
    want = [[(d[i:i + 3, j:j + 3] * g).sum() for j in range(4)] for i in range(4)]
    np.testing.assert_allclose(tile, want, rtol=1e-5)


@pytest.mark.parametrize("cin, cout, h, w, pad, vp", [
    (16, 16, 20, 28, (1, 1, 1, 1), 4),   # ECBSR's body conv, NEON's 4 lanes
    (12, 12, 13, 17, (1, 1, 1, 1), 4),   # FSRCNN's mapping convs; no whole tiles
    (16, 4, 9, 70, (1, 1, 1, 1), 16),    # a tail conv, AVX-512's 16 lanes
    (8, 8, 11, 11, (0, 0, 0, 0), 8),     # no padding
])
def test_kernel_equals_the_direct_conv(cin, cout, h, w, pad, vp):
    data = te.placeholder((1, cin, h, w), name="x")
    u = te.placeholder((6, 6, cin, cout), name="u")
    out = winograd.conv2d_winograd(data, u, pad, vp=vp)
    sch = s_tir.Schedule(te.create_prim_func([data, u, out]))
    winograd.schedule_winograd(sch)
    lib = tvm.compile(sch.mod, target=HOST)
    x = RNG.random((1, cin, h, w), dtype=np.float32)
    wt = RNG.random((cout, cin, 3, 3), dtype=np.float32) - 0.5
    args = [tvm.runtime.tensor(a) for a in (x, winograd.transform_weight(wt),
                                            np.zeros([int(s) for s in out.shape], "float32"))]
    lib["main"](*args)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt),
                                      padding=(pad[0], pad[1])).numpy()
    np.testing.assert_allclose(args[2].numpy(), want, atol=2e-5 * cin)


def _conv_module(cin: int, cout: int, k: int = 3, groups: int = 1, stride: int = 1):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, 16, 24), "float32"))
    w = relax.const(RNG.random((cout, cin // groups, k, k), dtype=np.float32))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=stride, padding=k // 2, groups=groups))
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(
                RNG.random((1, cout, 1, 1), dtype=np.float32)))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _kernels(mod: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, PrimFunc)]


@pytest.mark.parametrize("cin, cout, k, groups, stride, rewritten", [
    (16, 16, 3, 1, 1, True), (16, 4, 3, 1, 1, True),
    (1, 16, 3, 1, 1, False),   # a one-channel head: the transforms would not pay
    (16, 2, 3, 1, 1, False), (16, 16, 5, 1, 1, False), (16, 16, 3, 4, 1, False),
    (16, 16, 3, 1, 2, False)])
def test_the_rewrite_takes_what_pays(cin, cout, k, groups, stride, rewritten):
    mod = run_passes(_conv_module(cin, cout, k, groups, stride), RPI4,
                     ["winograd_conv", "legalize", "annotate_op_pattern", "fuse_ops",
                      "fuse_tir"])
    names = _kernels(mod)
    assert any(winograd.OUT in n for n in names) == rewritten, names


def test_the_epilogue_is_fused_and_the_module_computes_the_conv():
    mod = _conv_module(16, 16)
    passes = ["winograd_conv", "legalize", "annotate_op_pattern", "fold_constant",
              "fuse_ops", "fuse_tir", "dead_code_elimination"]
    plain = run_passes(mod, RPI4, passes[1:])
    wino = run_passes(mod, RPI4, passes)
    assert _kernels(wino) == ["fused_conv2d_winograd_add_relu"]
    x = RNG.random((1, 16, 16, 24), dtype=np.float32)
    outs = []
    for m in (plain, wino):
        scheduled, _ = default_schedule(m, HOST)
        vm = relax.VirtualMachine(relax.build(scheduled, HOST), tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def test_only_arm_targets_rewrite():
    from edge_sr.pipeline.passes import passes_for

    assert "winograd_conv" in passes_for(RPI4)
    assert "winograd_conv" not in passes_for(HOST)
    assert "winograd_conv" not in passes_for(RPI4, dtype="int8")
    assert "winograd_conv" not in passes_for(RPI4, layout="NHWC")
