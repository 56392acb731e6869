"""The sub-pixel form of a transposed conv: equal outputs and equal gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_sr.models.subpixel import convertible, subpixel_forward
from edge_sr.models.torch_passes import subpixel_conv

# (cin, cout, kernel, stride, padding, output_padding): FSRCNN x2/x3/x4, tiny, RGB
CASES = [(8, 1, 9, 2, 4, 1), (8, 1, 9, 3, 4, 2), (8, 1, 9, 4, 4, 3), (3, 1, 3, 2, 1, 1),
         (4, 3, 5, 2, 2, 1)]


@pytest.mark.parametrize("cin,cout,k,s,p,op", CASES)
def test_subpixel_form_equals_the_deconv_with_its_gradients(cin, cout, k, s, p, op):
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op).double()
    assert convertible(deconv)
    x = torch.randn(2, cin, 7, 6, dtype=torch.float64)
    grads = []
    for fn in (deconv, lambda t: subpixel_forward(deconv, t)):
        deconv.zero_grad()
        out = fn(x)
        out.square().sum().backward()
        grads.append((out.detach(), deconv.weight.grad.clone(), deconv.bias.grad.clone()))
    assert all(torch.allclose(a, b) for a, b in zip(*grads))
    with torch.no_grad():
        assert torch.allclose(subpixel_conv(deconv)(x), deconv(x))


def test_other_deconvs_are_left_alone():
    assert subpixel_conv(nn.ConvTranspose2d(4, 1, 4, stride=2, padding=0)) is None


@pytest.mark.parametrize("name", ["fsrcnn_x2", "fsrcnn_x3", "fsrcnn_tiny_x2"])
def test_fsrcnn_trains_through_the_form_it_evaluates(name):
    from edge_sr.models import MODELS

    torch.manual_seed(0)
    model = MODELS[name].factory()
    torch.nn.init.normal_(model.deconv.weight, std=0.05)
    x = torch.rand(1, 1, 9, 10)
    assert torch.allclose(model.train()(x), model.eval()(x), atol=1e-6)
