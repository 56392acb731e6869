"""ncnn as a bench peer: every architecture family of the registry converts through pnnx
and computes, in float32, what PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sr.baselines import ncnn_pnnx
from edge_sr.models import MODELS, load_model
from runtime.profile import ncnn_bench, ncnn_default_precision, ncnn_net

pytestmark = pytest.mark.skipif(
    not ncnn_pnnx.available(), reason="needs the ncnn extra (pip install -e '.[ncnn]')")

FAMILIES = ("fsrcnn_tiny_x2", "ecbsr_m4c16_x2", "xlsr_x3", "ghostsr_x2", "srresnet_b4_x4")


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_network_computes_the_pytorch_output(tmp_path, name):
    model = load_model(name)
    shape = (1, MODELS[name].channels, 20, 28)
    param = ncnn_pnnx.export_ncnn(model, shape, tmp_path / "m")
    assert param.suffix == ".param" and param.with_suffix(".bin").stat().st_size > 0
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    run, opt = ncnn_net(str(param), str(param.with_suffix(".bin")), threads=2)
    got = run(x)
    assert got.shape == want.shape
    # float32 weights and arithmetic: pnnx's fp16 weights alone differ by about 2e-3
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert opt.num_threads == 2 and not opt.use_fp16_arithmetic and not opt.use_fp16_storage


def test_bench_times_the_network_and_names_its_default_precision(tmp_path):
    shape = (1, 1, 12, 16)
    param = ncnn_pnnx.export_ncnn(load_model("fsrcnn_tiny_x2"), shape, tmp_path / "m")
    res = ncnn_bench(str(param), str(param.with_suffix(".bin")), list(shape), repeat=3)
    assert res["runs"] == 3 and 0 < res["min_ms"] <= res["median_ms"] <= res["p90_ms"]
    assert res["threads"] >= 1 and res["default_precision"] == ncnn_default_precision()


def test_a_model_pnnx_cannot_trace_fails_in_one_line(tmp_path):
    class Unsupported(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[0]

    with pytest.raises(RuntimeError,
                       match=r"^pnnx could not convert the model at \[1, 1, 4, 4\]: ") as err:
        ncnn_pnnx.export_ncnn(Unsupported(), (1, 1, 4, 4), tmp_path / "m")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.parametrize("rc, stderr, reason", [
    (-6, "terminate called after throwing an instance of 'std::bad_alloc'\n",
     "out of memory (bounded to 50% of RAM)"),
    (-9, "", "stopped by signal 9"),
    (1, "pnnx: unsupported op aten::foo\n----------------\n", "pnnx: unsupported op aten::foo")])
def test_a_failed_conversion_says_why(rc, stderr, reason):
    import subprocess

    proc = subprocess.CompletedProcess([], rc, stdout="", stderr=stderr)
    assert ncnn_pnnx._reason(proc) == reason
