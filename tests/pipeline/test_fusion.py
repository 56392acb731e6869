"""What the default pass list leaves: every conv's bias, activation and (ECBSR) residual
add run inside the conv's kernel; no elementwise kernel of their own."""

from __future__ import annotations

import re

import pytest
import torch
import tvm

from edge_sr.models import MODELS
from edge_sr.models.torch_passes import DEFAULT_TORCH_PASSES, merge_heads, run_torch_passes
from edge_sr.pipeline.builder import export_program, import_relax
from edge_sr.pipeline.passes import passes_for, run_passes

HOST = tvm.target.Target({"kind": "llvm"})


def _kernels(name: str) -> list[str]:
    torch.manual_seed(0)
    spec = MODELS[name]
    model = run_torch_passes(spec.deploy(spec.factory().eval()), DEFAULT_TORCH_PASSES)
    mod = run_passes(import_relax(export_program(model, spec, (24, 24), False)), HOST,
                     passes_for(HOST))
    return sorted(gv.name_hint for gv, f in mod.functions.items()
                  if isinstance(f, tvm.tirx.PrimFunc))


@pytest.mark.parametrize("name", ["fsrcnn_x2", "ecbsr_m4c16_x2", "xlsr_x3", "ghostsr_x2"])
def test_bias_and_activation_live_in_the_conv_kernels(name):
    kernels = _kernels(name)
    convs = [k for k in kernels if "conv2d" in k]
    # bias fused (a conv_chain kernel holds its convs' biases and activations by design)
    assert convs and all(re.match(r"fused_conv2d\d*_(add|conv2d_chain)", k) for k in convs)
    lone = [k for k in kernels if "conv2d" not in k
            and re.fullmatch(r"(fused_)?(add|multiply|where|greater|relu|maximum)\d*(_.*)?", k)]
    assert not lone, f"elementwise kernels left unfused: {lone}"


def test_ecbsr_residual_add_is_fused_into_the_last_conv():
    kernels = _kernels("ecbsr_m4c16_x2")
    assert any(re.fullmatch(r"fused_conv2d\d*_add\d*_add\d*", k) for k in kernels)


@pytest.mark.parametrize("name", ["xlsr_x2", "xlsr_x3"])
def test_xlsr_heads_merge_into_one_conv_exactly(name):
    torch.manual_seed(0)
    model = MODELS[name].factory().eval()
    merged = merge_heads(model)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=0, atol=1e-6)
    assert len(merged.heads) == 1 and merged.heads[0].out_channels == 32
    assert len(model.heads) == 4  # the original is left alone
    # one head kernel, no concat of the four branches left in the compiled module
    kernels = _kernels(name)
    assert sum("concatenate" in k for k in kernels) == 1  # only the skip-branch concat


def test_merge_heads_leaves_models_without_heads_unchanged():
    torch.manual_seed(0)
    model = MODELS["fsrcnn_x2"].factory().eval()
    merged = merge_heads(model)
    assert str(merged) == str(model)
