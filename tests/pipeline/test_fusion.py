"""What the default pass list leaves: every conv's bias, activation and (ECBSR) residual
add run inside the conv's kernel; no elementwise kernel of their own."""

from __future__ import annotations

import re

import pytest
import torch
import tvm

from edge_sr.models import MODELS
from edge_sr.pipeline.builder import export_program, import_relax
from edge_sr.pipeline.passes import passes_for, run_passes
from edge_sr.pipeline.torch_passes import subpixel_deconv

HOST = tvm.target.Target({"kind": "llvm"})


def _kernels(name: str) -> list[str]:
    torch.manual_seed(0)
    spec = MODELS[name]
    model = subpixel_deconv(spec.deploy(spec.factory().eval()))
    mod = run_passes(import_relax(export_program(model, spec, (24, 24), False)), HOST,
                     passes_for(HOST))
    return sorted(gv.name_hint for gv, f in mod.functions.items()
                  if isinstance(f, tvm.tirx.PrimFunc))


@pytest.mark.parametrize("name", ["fsrcnn_x2", "ecbsr_m4c16_x2", "xlsr_x3", "ghostsr_x2"])
def test_bias_and_activation_live_in_the_conv_kernels(name):
    kernels = _kernels(name)
    convs = [k for k in kernels if "conv2d" in k]
    assert convs and all(re.match(r"fused_conv2d\d*_add", k) for k in convs)  # bias fused
    lone = [k for k in kernels if "conv2d" not in k
            and re.fullmatch(r"(fused_)?(add|multiply|where|greater|relu|maximum)\d*(_.*)?", k)]
    assert not lone, f"elementwise kernels left unfused: {lone}"


def test_ecbsr_residual_add_is_fused_into_the_last_conv():
    kernels = _kernels("ecbsr_m4c16_x2")
    assert any(re.fullmatch(r"fused_conv2d\d*_add\d*_add\d*", k) for k in kernels)
