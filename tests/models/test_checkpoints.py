"""Other projects' checkpoints load into the zoo's architectures (``models.checkpoints``).

The source networks are written here in those projects' own layout and parameter names
(BasicSR's ECBSR keeps raw ``k0/b0/k1/b1`` tensors and an activation inside each block;
the PyTorch FSRCNN has ``first_part/mid_part/last_part``), with random weights: a
checkpoint loads when our model then computes what the source network computes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.models import ModelError, load_model
from edge_sr.models.checkpoints import to_model_keys

_EDGES = {  # BasicSR's fixed 3x3 edge filters, (row, column) -> value
    "sbx": {(0, 0): 1, (1, 0): 2, (2, 0): 1, (0, 2): -1, (1, 2): -2, (2, 2): -1},
    "sby": {(0, 0): 1, (0, 1): 2, (0, 2): 1, (2, 0): -1, (2, 1): -2, (2, 2): -1},
    "lpl": {(0, 1): 1, (1, 0): 1, (1, 2): 1, (2, 1): 1, (1, 1): -4},
}


def _pad_bias(y: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    y = F.pad(y, (1, 1, 1, 1))
    v = b.view(1, -1, 1, 1)
    y[:, :, :1], y[:, :, -1:], y[:, :, :, :1], y[:, :, :, -1:] = v, v, v, v
    return y


class BasicSeq(nn.Module):
    """BasicSR's SeqConv3x3: raw parameters, an edge branch as a scaled depthwise mask."""

    def __init__(self, kind: str, cin: int, cout: int):
        super().__init__()
        mid = 2 * cout if kind == "conv" else cout
        self.kind = kind
        self.k0 = nn.Parameter(torch.randn(mid, cin, 1, 1) * 0.3)
        self.b0 = nn.Parameter(torch.randn(mid) * 0.1)
        if kind == "conv":
            self.k1 = nn.Parameter(torch.randn(cout, mid, 3, 3) * 0.1)
            self.b1 = nn.Parameter(torch.randn(cout) * 0.1)
            return
        self.scale = nn.Parameter(torch.randn(cout, 1, 1, 1) * 0.1)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)
        mask = torch.zeros(cout, 1, 3, 3)
        for (r, c), v in _EDGES[kind].items():
            mask[:, 0, r, c] = v
        self.mask = nn.Parameter(mask, requires_grad=False)

    def forward(self, x):
        y0 = _pad_bias(F.conv2d(x, self.k0, self.b0), self.b0)
        if self.kind == "conv":
            return F.conv2d(y0, self.k1, self.b1)
        return F.conv2d(y0, self.scale * self.mask, self.bias, groups=self.mask.shape[0])


class BasicECB(nn.Module):
    def __init__(self, cin: int, cout: int, act: bool):
        super().__init__()
        self.conv3x3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1x1_3x3 = BasicSeq("conv", cin, cout)
        self.conv1x1_sbx = BasicSeq("sbx", cin, cout)
        self.conv1x1_sby = BasicSeq("sby", cin, cout)
        self.conv1x1_lpl = BasicSeq("lpl", cin, cout)
        self.act = nn.PReLU(cout) if act else None
        if act:
            nn.init.uniform_(self.act.weight, 0.0, 0.5)

    def forward(self, x):
        y = self.conv3x3(x) + sum(b(x) for b in (self.conv1x1_3x3, self.conv1x1_sbx,
                                                  self.conv1x1_sby, self.conv1x1_lpl))
        return self.act(y) if self.act is not None else y


class BasicECBSR(nn.Module):
    """BasicSR's ECBSR(num_in_ch=1, num_block=m, num_channel=c, with_idt=False, prelu)."""

    def __init__(self, m: int = 4, c: int = 16, scale: int = 2):
        super().__init__()
        blocks = [BasicECB(1, c, True)] + [BasicECB(c, c, True) for _ in range(m)]
        self.backbone = nn.Sequential(*blocks, BasicECB(c, scale * scale, False))
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.upsampler(self.backbone(x) + x)


class PytorchFSRCNN(nn.Module):
    """The PyTorch FSRCNN layout: first_part, mid_part, last_part."""

    def __init__(self, scale: int = 2, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.first_part = nn.Sequential(nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d))
        mid = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        self.mid_part = nn.Sequential(*mid, nn.Conv2d(s, d, 1), nn.PReLU(d))
        self.last_part = nn.ConvTranspose2d(d, 1, 9, stride=scale, padding=4,
                                            output_padding=scale - 1)

    def forward(self, x):
        return self.last_part(self.mid_part(self.first_part(x)))


def _save(tmp_path, net: nn.Module, wrap) -> str:
    path = tmp_path / "net_g.pth"
    torch.save(wrap(net.state_dict()), path)
    return str(path)


@pytest.mark.parametrize("name, net, wrap", [
    ("ecbsr_m4c16_x2", BasicECBSR, lambda sd: {"params_ema": sd}),
    ("ecbsr_m4c16_x2", BasicECBSR, lambda sd: {f"module.{k}": v for k, v in sd.items()}),
    ("fsrcnn_x2", PytorchFSRCNN, lambda sd: sd),
])
def test_a_foreign_checkpoint_loads_and_computes_what_its_network_does(tmp_path, name, net,
                                                                       wrap):
    torch.manual_seed(0)
    source = net().eval()
    model = load_model(name, _save(tmp_path, source, wrap))  # deploy form: fused convs
    x = torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=1e-5, rtol=1e-4)


def test_keys_already_the_models_are_kept_and_unknown_ones_left_to_the_loader():
    keys = {"body.0.weight"}
    assert to_model_keys({"body.0.weight": 1}, keys) == ({"body.0.weight": 1}, None)
    assert to_model_keys({"first_part.0.weight": 1}, keys) == ({"body.0.weight": 1},
                                                               "fsrcnn-pytorch")
    partial = {"first_part.0.weight": 1, "first_part.0.bias": 2}  # maps onto other keys
    assert to_model_keys(partial, keys) == (partial, None)


def test_a_foreign_checkpoint_of_another_size_names_the_keys(tmp_path):
    path = _save(tmp_path, BasicECBSR(m=2), lambda sd: {"params": sd})
    with pytest.raises(ModelError, match="does not fit model ecbsr_m4c16_x2: missing "):
        load_model("ecbsr_m4c16_x2", path)


@pytest.mark.slow
def test_a_basicsr_ecbsr_checkpoint_builds(tmp_path):
    from edge_sr.pipeline import BuildConfig, build
    from runtime.engine import load_local

    torch.manual_seed(0)
    source = BasicECBSR().eval()
    art = build(BuildConfig(model="ecbsr_m4c16_x2", target="host", size=(24, 32),
                            weights=_save(tmp_path, source, lambda sd: {"params_ema": sd}),
                            out=str(tmp_path / "a"), reference_dataset=""))
    assert json.loads((art / "manifest.json").read_text())["model"] == "ecbsr_m4c16_x2"
    import tvm

    x = np.random.default_rng(0).random((1, 1, 24, 32), dtype=np.float32)
    engine = load_local(art)
    got = engine.func(tvm.runtime.tensor(x, engine.device)).numpy()
    with torch.no_grad():
        want = source(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
