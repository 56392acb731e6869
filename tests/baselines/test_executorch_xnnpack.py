"""ExecuTorch's XNNPACK backend as a bench peer: every architecture family of the registry
lowers to it and computes what PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sr.baselines import executorch_xnnpack as et
from edge_sr.models import MODELS, load_model

pytestmark = pytest.mark.skipif(
    not et.available(), reason="needs the executorch extra (pip install -e '.[executorch]')")

# One model per architecture family; GhostSR's channel concat is the one operator XNNPACK
# leaves to ExecuTorch's portable kernels.
FAMILIES = {"fsrcnn_tiny_x2": [], "ecbsr_m4c16_x2": [], "xlsr_x3": [], "ghostsr_x2": ["cat"],
            "srresnet_b4_x4": []}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_program_computes_the_pytorch_output(tmp_path, name):
    model = load_model(name)
    shape = (1, MODELS[name].channels, 20, 28)
    assert et.export_pte(model, shape, tmp_path / "m.pte") == FAMILIES[name]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = et.session(tmp_path / "m.pte", threads=2)(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert et.thread_count() == 2


def _transposed_convs(program: torch.export.ExportedProgram) -> int:
    return sum(1 for n in program.graph.nodes if n.op == "call_function"
               and "convolution" in str(n.target) and n.args[6])


def test_a_deconvolution_is_exported_in_its_subpixel_form():
    model, x = load_model("fsrcnn_tiny_x2"), torch.rand(1, 1, 8, 8)
    assert _transposed_convs(torch.export.export(model, (x,)).run_decompositions()) == 1
    assert _transposed_convs(et.exported(model, x.shape).run_decompositions()) == 0


def test_calibration_crops_tile_to_the_program_shape():
    crops = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    tiled = et.tile_to(crops, (1, 1, 6, 10))
    assert tiled.shape == (2, 1, 6, 10)
    np.testing.assert_array_equal(tiled[:, :, 4:, 8:], crops[:, :, :2, :2])


@pytest.mark.slow
def test_int8_program_is_quantized_and_close_to_float(tmp_path):
    model, shape = load_model("fsrcnn_tiny_x2"), (1, 1, 24, 32)
    rng = np.random.default_rng(0)
    calib = rng.random((8, *shape[1:]), dtype=np.float32)
    assert et.export_pte(model, shape, tmp_path / "q.pte", calib=calib) == []
    x = calib[:1]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    err = et.session(tmp_path / "q.pte")(x) - want
    # 8-bit: off from float, but by a fraction of the signal
    assert 1e-4 < np.abs(err).max() and np.sqrt(np.mean(err ** 2)) < 0.02
