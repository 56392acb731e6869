"""``conv_chain``: a cheap conv (+bias+activation) fused into the 1x1 conv reading it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from edge_sr.models import MODELS
from edge_sr.models.torch_passes import DEFAULT_TORCH_PASSES, run_torch_passes
from edge_sr.pipeline.builder import export_program, import_relax
from edge_sr.pipeline.conv_chain import KERNEL_NAME, conv_chain
from edge_sr.pipeline.passes import DEFAULT_PASSES, passes_for, run_passes

HOST = tvm.target.Target({"kind": "llvm"})


class _Net(nn.Module):
    """conv -> act -> 1x1 conv -> act, optionally with the first conv's output reused."""

    def __init__(self, cin=1, mid=8, out=4, k=5, act=nn.PReLU, bias=True, reuse=False,
                 stride2=1, k2=1, groups=1):
        super().__init__()
        self.a = nn.Conv2d(cin, mid, k, padding=k // 2, bias=bias, groups=groups)
        self.act_a = act(mid) if act is nn.PReLU else (act() if act else nn.Identity())
        self.b = nn.Conv2d(mid, out, k2, stride=stride2, padding=k2 // 2, bias=bias)
        self.act_b = act(out) if act is nn.PReLU else (act() if act else nn.Identity())
        self.reuse = reuse
        for p in self.parameters():  # PReLU slopes away from their 0.25 default
            p.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        t = self.act_a(self.a(x))
        y = self.act_b(self.b(t))
        return y + t[:, :1] if self.reuse else y


def _import(model: nn.Module, shape: tuple[int, ...]) -> tvm.IRModule:
    program = torch.export.export(model.eval(), (torch.rand(*shape),))
    return run_passes(import_relax(program), HOST, ["fold_constant"])


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    ex = relax.build(run_passes(mod, HOST, DEFAULT_PASSES), HOST)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _chains(mod: tvm.IRModule) -> int:
    return sum(gv.name_hint.startswith(KERNEL_NAME) for gv in mod.functions)


@pytest.mark.parametrize("kw", [
    {},                                                    # FSRCNN's head: 5x5 1->C, PReLU
    {"cin": 3, "k": 3, "act": nn.ReLU, "mid": 12},         # 3x3 3->C, ReLU
    {"act": None, "bias": False},                          # bare convs
    {"out": 8},                                            # as wide as the producer
    {"cin": 16, "mid": 16, "out": 16, "k": 3, "groups": 4, "act": nn.ReLU},  # XLSR's GBlock
], ids=["prelu", "relu", "bare", "level", "grouped"])
def test_chain_fuses_into_one_kernel_with_the_same_output(kw):
    torch.manual_seed(0)
    net = _Net(**kw)
    shape = (1, net.a.in_channels, 20, 28)
    mod = _import(net, shape)
    fused = conv_chain(mod)
    assert _chains(fused) == 1 and _chains(mod) == 0
    x = np.random.RandomState(0).rand(*shape).astype("float32")
    want = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(_run(fused, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_run(fused, x), _run(mod, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [
    {"reuse": True},                 # the activated image is read by someone else too
    {"cin": 16, "k": 3},             # producer too costly to recompute as one expression
    {"stride2": 2},                  # a strided consumer
    {"out": 12},                     # widening (8 -> 12)
    {"cin": 12, "k": 1, "mid": 16, "k2": 5},   # a consumer with a halo (FSRCNN's tail)
    {"cin": 8, "mid": 16, "k": 3, "groups": 4},  # groups of 2 channels in, 4 out: the
    # conv templates match equal groups only, so the fused kernel would go unscheduled
], ids=["reused", "costly", "strided", "widening", "halo", "grouped-uneven"])
def test_chain_leaves_what_it_cannot_fuse(kw):
    torch.manual_seed(0)
    net = _Net(**kw)
    mod = _import(net, (1, net.a.in_channels, 20, 28))
    assert _chains(conv_chain(mod)) == 0


def _kernels(name: str, target: tvm.target.Target = HOST) -> tvm.IRModule:
    torch.manual_seed(0)
    spec = MODELS[name]
    model = run_torch_passes(spec.deploy(spec.factory().eval()), DEFAULT_TORCH_PASSES)
    return run_passes(import_relax(export_program(model, spec, (24, 24), False)), target,
                      passes_for(target))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_cpu_pipeline_fuses_the_heads_and_gblocks(name):
    # FSRCNN's 5x5 head + 1x1 shrink; XLSR's 3x3 head + 1x1 and its three GBlocks (one
    # kernel shared by the three); FSRCNN's expand -> 5x5 sub-pixel conv has a halo, and
    # every other 3x3 conv has too many terms (ECBSR's 16 -> 16: 144)
    want = {"fsrcnn_x": 1, "fsrcnn_s": 1, "xlsr": 2}
    assert _chains(_kernels(name)) == next(
        (n for prefix, n in want.items() if name.startswith(prefix)), 0)


def test_chain_is_float_cpu_only():
    gpu = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    assert "conv_chain" not in passes_for(gpu)
    assert "conv_chain" not in passes_for(HOST, dtype="int8")
    assert "conv_chain" in passes_for(HOST)


def test_chain_in_a_dynamic_shape_build(tmp_path, random_weights):
    from edge_sr.models import load_model
    from edge_sr.pipeline import BuildConfig, build
    from edge_sr.pipeline.builder import lower
    from runtime.artifact import read_manifest
    from runtime.engine import load_local

    weights = str(random_weights("fsrcnn_s_x2"))
    cfg = BuildConfig(model="fsrcnn_s_x2", target="host", size=(40, 40), dynamic=True,
                      weights=weights, out=str(tmp_path), reference_dataset="",
                      use_tuning=False)
    assert _chains(lower(cfg).mod) == 1  # the symbolic-shape module has its chain kernel
    art = build(cfg)
    assert "conv_chain" in read_manifest(art)["passes"]
    engine, model = load_local(art), load_model("fsrcnn_s_x2", weights)
    for h, w in ((40, 40), (24, 36)):  # any size up to the bound
        x = np.random.default_rng(h).random((1, 1, h, w), dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(engine(x), want, rtol=1e-4, atol=1e-4)
