"""Every registered model: forward shape, deploy form equal to training form."""

from __future__ import annotations

import pytest
import torch

from edge_sr.models import MODELS, ModelError, get_spec, load_model
from edge_sr.models.analysis import receptive_radius
from edge_sr.models.ecbsr import ECB, ECBSR


def _randomize(model: torch.nn.Module) -> None:
    """Give every parameter a non-trivial value (init leaves some branches near zero)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape(name):
    spec = MODELS[name]
    model = spec.factory().eval()
    x = torch.rand(2, spec.channels, 13, 17)
    assert model(x).shape == (2, spec.channels, 13 * spec.scale, 17 * spec.scale)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deploy_matches_training_form(name):
    spec = MODELS[name]
    model = spec.factory()
    _randomize(model)
    model = model.double().eval()  # re-parameterization is exact: check it in float64
    x = torch.rand(1, spec.channels, 20, 24, dtype=torch.float64)
    with torch.no_grad():
        ref, out = model(x), spec.deploy(model)(x)
    scale = max(1.0, float(ref.abs().max()))
    assert float((ref - out).abs().max()) <= 1e-9 * scale


def _conv_shapes(name: str) -> set[tuple]:
    spec = MODELS[name]
    deployed = spec.deploy(spec.factory())
    return {(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups,
             type(m).__name__) for m in deployed.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))}


@pytest.mark.parametrize("name", sorted(n for n, s in MODELS.items() if s.kernels_of))
def test_a_model_sharing_tuning_databases_has_only_that_models_convs(name):
    """Its builds apply the other model's databases: every conv must be one of its."""
    spec = MODELS[name]
    assert spec.kernels_of in MODELS and spec.scale == MODELS[spec.kernels_of].scale
    assert _conv_shapes(name) <= _conv_shapes(spec.kernels_of)


@pytest.mark.parametrize("cin,cout", [(1, 8), (16, 16), (16, 4)])
def test_ecb_fuse_is_one_plain_conv_equal_to_four_branches(cin, cout):
    block = ECB(cin, cout)
    _randomize(block)
    fused = block.fuse()
    assert type(fused) is torch.nn.Conv2d and fused.kernel_size == (3, 3)
    x = torch.randn(2, cin, 11, 9)
    assert torch.allclose(block.eval()(x), fused(x), atol=1e-5)


def test_ecb_trains_through_its_merged_kernel_with_the_branches_gradients():
    torch.manual_seed(0)
    block = ECB(8, 8)
    _randomize(block)
    x = torch.randn(2, 8, 10, 9)
    grads = []
    for training in (False, True):  # four branches, then the one merged conv
        block.zero_grad()
        out = block.train(training)(x)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in block.parameters()]))
    (ref, g_ref), (out, g_out) = grads
    assert torch.allclose(ref, out, atol=1e-4)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-3) for a, b in zip(g_ref, g_out))


def test_ecbsr_deploy_has_only_plain_convs():
    model = ECBSR(2, 4, 16)
    fused = model.deploy()
    assert not any(isinstance(m, ECB) for m in fused.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules()) == 6


@pytest.mark.parametrize("name,radius", [("fsrcnn_tiny_x2", 3), ("ecbsr_m4c16_x2", 6),
                                         ("fsrcnn_x2", 8)])
def test_receptive_radius(name, radius):
    assert receptive_radius(MODELS[name]) == radius


def test_registry_names_follow_the_convention():
    for name, spec in MODELS.items():
        assert name.endswith(f"_x{spec.scale}")
        assert spec.colour in ("y", "rgb")


def test_unknown_model_lists_valid_names():
    with pytest.raises(ModelError, match="valid models: .*fsrcnn_x2"):
        get_spec("fsrcnn_x9")


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(ModelError) as err:
        load_model("fsrcnn_x2", tmp_path / "none.pt")
    assert "fsrcnn_x2" in str(err.value) and "\n" not in str(err.value)


def test_mismatched_checkpoint_names_model_and_file(tmp_path, random_weights):
    path = random_weights("fsrcnn_s_x2")
    with pytest.raises(ModelError) as err:
        load_model("fsrcnn_x2", path)
    msg = str(err.value)
    assert "fsrcnn_x2" in msg and str(path) in msg and "\n" not in msg


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="does not fit"):
        load_model("fsrcnn_x2", bad)
