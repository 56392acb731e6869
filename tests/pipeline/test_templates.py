"""``templates.ConvTemplate``: hand-written design spaces for direct NCHW convs on CPUs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.tirx import PrimFunc

import targets
from edge_sr.models import MODELS
from edge_sr.models.torch_passes import DEFAULT_TORCH_PASSES, run_torch_passes
from edge_sr.pipeline import templates
from edge_sr.pipeline.builder import export_program, import_relax
from edge_sr.pipeline.conv_chain import KERNEL_NAME
from edge_sr.pipeline.passes import passes_for, run_passes

X86 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
ARM = targets.tvm_target(targets.TARGETS["rpi4"])
HOST = targets.tvm_target(targets.TARGETS["host"])


def test_cpu_shapes():
    # the int8 form of vnni_conv's kernels: no VNNI on either, pairs on vpmaddwd
    assert templates.cpu_of(X86) == templates.Cpu((8, 16), 32, "avx2")
    assert templates.cpu_of(AVX2) == templates.Cpu((8,), 16, "avx2")
    cascadelake = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})
    assert templates.cpu_of(cascadelake) == templates.Cpu((8, 16), 32, "vnni")
    assert templates.cpu_of(ARM) == templates.Cpu((4,), 32)
    assert templates.cpu_of(tvm.target.Target({"kind": "cuda", "arch": "sm_80"})) is None
    # no template, no custom space: TVM's own default
    assert templates.space_generator(tvm.target.Target({"kind": "cuda", "arch": "sm_80"})) \
        == "post-order-apply"


@pytest.mark.parametrize("cpu", [templates.Cpu((8,), 16), templates.Cpu((4,), 32)])
@pytest.mark.parametrize("shape", [(12, 360, 640), (4, 128, 128), (56, 88, 88), (3, 30, 40)])
def test_register_tiles_fit_the_registers_and_divide_the_image(cpu, shape):
    c, h, w = shape
    conv = templates.Conv("conv", c, h, w, None, None, None, ())
    tiles = templates.register_tiles(conv, cpu.lanes[0], cpu.registers)
    if w % cpu.lanes[0]:
        assert tiles == []  # a row that is no whole number of vectors: no template
        return
    assert 1 <= len(tiles) <= templates.MAX_TILES
    for cr, yr, xr in tiles:
        assert cr * yr * xr <= cpu.registers - 4
        assert c % cr == 0 and h % yr == 0 and (w // cpu.lanes[0]) % xr == 0
    scores = [t[0] * t[1] * t[2] / (t[0] + t[1] * t[2]) for t in tiles]
    assert scores == sorted(scores, reverse=True)


def _kernels(name: str, target: tvm.target.Target, size=(24, 32)) -> dict[str, PrimFunc]:
    torch.manual_seed(0)
    spec = MODELS[name]
    model = run_torch_passes(spec.deploy(spec.factory().eval()), DEFAULT_TORCH_PASSES)
    mod = run_passes(import_relax(export_program(model, spec, size, False)), target,
                     passes_for(target))
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, PrimFunc)}


def _convs(func: PrimFunc) -> list[str]:
    sch = Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    return [sch.get(b).name_hint for b in sch.get_child_blocks(root)
            if templates.match_conv(sch, b) is not None]


# What the template takes in each registry model's host build: every stride-1 float32
# conv kernel, grouped ones included (GhostSR's channel shuffles stay with the default
# rules).
@pytest.mark.parametrize("name", sorted(MODELS))
def test_template_matches_the_plain_convs_of_every_model(name):
    kernels = _kernels(name, HOST)
    matched = {k: _convs(f) for k, f in kernels.items()}
    for kernel, convs in matched.items():
        assert len(convs) <= 1, f"{kernel}: one conv per kernel, got {convs}"
        if "conv2d" not in kernel:
            assert not convs, f"{kernel} has no conv but matched {convs}"
    assert any(matched.values()), f"{name}: no kernel the template takes"
    if name.startswith("xlsr"):  # its grouped convs, with the tile inside one group
        grouped = [k for k in kernels if "conv2d2" in k]
        assert grouped and all(matched[k] for k in grouped)
    if name.startswith("fsrcnn"):  # head+shrink chain, 4 maps convs, expand, sub-pixel conv
        chain = [k for k in kernels if k.startswith(KERNEL_NAME)]
        assert all(matched[k] == ["chain_pointwise"] for k in chain)
        assert all(matched[k] for k in kernels if "conv2d" in k)


def _design_spaces(func: PrimFunc, target: tvm.target.Target) -> list:
    ctx = ms.TuneContext(mod=tvm.IRModule({"main": func}), target=target,
                         space_generator=templates.space_generator(target),
                         search_strategy="replay-trace", task_name="t")
    return ctx.generate_design_space()


def _is_template(space) -> bool:
    return templates.DONE[0] in space.mod.script()


def _run(func_or_mod, target, args):
    mod = func_or_mod if isinstance(func_or_mod, tvm.IRModule) else \
        tvm.IRModule({"main": func_or_mod})
    mod = tvm.IRModule({"main": mod["main"].with_attr("global_symbol", "main")})
    lib = tvm.compile(mod, target=target)
    out = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*out)
    return out[-1].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name,target", [("fsrcnn_x2", HOST), ("fsrcnn_s_x2", HOST),
                                         ("ecbsr_m4c16_x2", HOST), ("srresnet_b4_x4", HOST),
                                         ("fsrcnn_x2", AVX2)],
                         ids=["fsrcnn-host", "fsrcnn_s-host", "ecbsr-host", "srresnet-host",
                              "fsrcnn-avx2"])
def test_every_template_space_computes_the_kernel(name, target):
    # each template space, with its postprocessors applied as the tuner does, builds and
    # gives the unscheduled kernel's output (random inputs, float tolerance)
    rng = np.random.default_rng(0)
    checked = 0
    for kernel, func in _kernels(name, HOST, size=(16, 32)).items():
        if not _convs(func):
            continue
        args = [(rng.random([int(s) for s in p.shape], dtype=np.float32) - 0.5)
                for p in func.params]
        want = _run(func, target, args)
        spaces = [s for s in _design_spaces(func, target) if _is_template(s)]
        assert spaces, f"{kernel}: no template space"
        for space in spaces:
            for post in ms.Postproc.create("llvm"):
                assert post.apply(space), f"{kernel}: postprocessor {type(post).__name__}"
            np.testing.assert_allclose(_run(space.mod, target, args), want,
                                       rtol=1e-5, atol=1e-5, err_msg=kernel)
            checked += 1
    assert checked


@pytest.mark.slow
def test_chain_producer_is_computed_inside_the_pointwise_tiles():
    # conv_chain's point: in the template's spaces the producer conv (a reduction, which
    # MetaSchedule's own rules never move) runs inside the 1x1 conv's parallel tiles
    kernels = _kernels("fsrcnn_x2", HOST)
    func = next(f for k, f in kernels.items() if k.startswith(KERNEL_NAME))
    spaces = [s for s in _design_spaces(func, HOST) if _is_template(s)]
    assert spaces
    for s in spaces:
        tile = s.get_loops(s.get_sblock("chain_pointwise_update"))[0]
        assert s.get(tile).kind == tvm.tirx.ForKind.PARALLEL
        for block in ("chain_acc_update", "chain_producer"):
            assert s.get(s.get_loops(s.get_sblock(block))[0]).same_as(s.get(tile)), block


@pytest.mark.slow
def test_arm_spaces_use_neon_vectors():
    kernels = _kernels("fsrcnn_x2", ARM, size=(16, 32))
    maps = next(f for k, f in kernels.items() if k.startswith("fused_conv2d_add"))
    spaces = [s for s in _design_spaces(maps, ARM) if _is_template(s)]
    assert spaces
    for s in spaces:
        inner = s.get_loops(s.get_sblock("conv2d_nchw_update"))[-1]
        assert s.get(inner).kind == tvm.tirx.ForKind.VECTORIZED
        assert int(s.get(inner).extent) == 4


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, stride=2)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.slow
def test_strided_convs_are_left_to_the_default_rules():
    program = torch.export.export(_Odd().eval(), (torch.rand(1, 4, 16, 16),))
    mod = run_passes(import_relax(program), HOST, passes_for(HOST))
    funcs = [f for f in mod.functions.values() if isinstance(f, PrimFunc)]
    assert funcs and not any(_convs(f) for f in funcs)
    assert not any(_is_template(s) for f in funcs for s in _design_spaces(f, HOST))
