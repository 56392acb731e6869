"""Models from outside the registry (``--model MODULE:FACTORY`` or a ``.pt2`` file): what
the registry knows is probed from the model, and they build and run like zoo models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sr.models import ModelError, get_spec, load_model

HERE = "tests.models.test_external"


class ESPCN(nn.Module):
    """Shi et al.'s sub-pixel network: two tanh convs, then a conv to s^2*C, pixel shuffle."""

    def __init__(self, scale: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 32, 5, padding=2), nn.Tanh(),
                                  nn.Conv2d(32, 16, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(16, channels * scale * scale, 3, padding=1))
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.body(x))


class SplitAttention(nn.Module):
    """An IMDN-like block: channel split (one part refined, one kept), concat, pixel
    attention (PAN), residual, sub-pixel x2 upsampler."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(1, 16, 3, padding=1)
        self.refine = nn.Conv2d(8, 8, 3, padding=1)
        self.attention = nn.Conv2d(16, 16, 1)
        self.tail = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        f = F.leaky_relu(self.head(x), 0.05)
        kept, rest = torch.split(f, 8, dim=1)
        g = torch.cat([kept, F.leaky_relu(self.refine(rest), 0.05)], dim=1)
        g = g * torch.sigmoid(self.attention(g)) + f
        return F.pixel_shuffle(self.tail(g), 2)


class GlobalPool(nn.Module):
    """Channel attention over the whole image: cannot be tiled."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return F.pixel_shuffle(y * torch.sigmoid(y.mean((2, 3), keepdim=True)), 2)


def _seeded(make):
    def factory():
        torch.manual_seed(0)
        return make().eval()
    return factory


class ReluESPCN(ESPCN):
    """ESPCN with ReLUs: every op in it is one the int8 quantizer covers."""

    def __init__(self):
        super().__init__(2, 1)
        self.body[1], self.body[3] = nn.ReLU(), nn.ReLU()


class ShrinkESPCN(ESPCN):
    """ESPCN with a soft-shrink: an op TVM's FX importer has no converter for."""

    def forward(self, x):
        return self.shuffle(F.softshrink(self.body(x), 0.01))


class AnyChannels(nn.Module):
    """Channel-agnostic x2 (nearest neighbour, a learned gain): takes 1 or 3 channels."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest") * self.gain


espcn = _seeded(lambda: ESPCN(2, 1))
any_channels = _seeded(AnyChannels)
shrink_espcn = _seeded(lambda: ShrinkESPCN(2, 1))
relu_espcn = _seeded(ReluESPCN)
rgb_x3 = _seeded(lambda: ESPCN(3, 3))
split_attention = _seeded(SplitAttention)
global_pool = _seeded(GlobalPool)
not_a_module = lambda: 3  # noqa: E731


@pytest.mark.parametrize("factory, scale, colour", [("espcn", 2, "y"), ("rgb_x3", 3, "rgb"),
                                                    ("split_attention", 2, "y")])
def test_scale_and_colour_are_probed(factory, scale, colour):
    spec = get_spec(f"{HERE}:{factory}")
    assert (spec.scale, spec.colour, spec.name) == (scale, colour, factory)
    assert spec.source == f"{HERE}:{factory}"


def test_scale_and_colour_stated_where_the_probe_is_ambiguous(capsys):
    from edge_sr.cli import main
    from edge_sr.models import declare

    ref = f"{HERE}:any_channels"
    assert get_spec(ref).colour == "y"  # the probe takes the first channel count that works
    assert (declare(ref, colour="rgb").colour, get_spec(ref).channels) == ("rgb", 3)
    assert main(["eval", "--model", ref, "--colour", "rgb", "--limit", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["colour"] == "rgb"
    for argv, message in [(["--model", ref, "--scale", "3"], "upscales 2x, not --scale 3"),
                          (["--model", "fsrcnn_x2", "--colour", "rgb"],
                           "fsrcnn_x2 is --colour y, not rgb")]:
        assert main(["eval", *argv, "--limit", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("ref, message", [
    ("no_such_module_here:make", "cannot import no_such_module_here"),
    (f"{HERE}:nothing", "has no callable 'nothing'"),
    (f"{HERE}:not_a_module", "not an nn.Module"),
    ("missing.pt2", "no torch.export file"),
])
def test_a_bad_reference_is_one_line(ref, message):
    with pytest.raises(ModelError, match=message) as exc:
        get_spec(ref)
    assert "\n" not in str(exc.value)


def _pt2(tmp_path, dynamic: bool):
    model, x = espcn(), torch.rand(1, 1, 40, 48)
    shapes = ({2: torch.export.Dim("h", min=8, max=512), 3: torch.export.Dim("w", min=8,
                                                                            max=512)},)
    path = tmp_path / ("dyn.pt2" if dynamic else "static.pt2")
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes if dynamic
                                          else None), str(path))
    return path


def test_a_pt2_program_with_dynamic_size_is_a_model(tmp_path):
    path = _pt2(tmp_path, dynamic=True)
    spec = get_spec(str(path))
    assert (spec.scale, spec.colour, spec.name) == (2, "y", "dyn")
    x = torch.rand(1, 1, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(load_model(str(path))(x), espcn()(x))


def test_a_pt2_program_of_one_size_says_to_export_dynamic_sizes(tmp_path):
    with pytest.raises(ModelError, match="dynamic height and width"):
        get_spec(str(_pt2(tmp_path, dynamic=False)))


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"state_dict": sd},
                                  lambda sd: {"params_ema": sd, "params": {}},
                                  lambda sd: {"params": sd}])
def test_weights_load_from_our_plain_and_basicsr_checkpoints(tmp_path, wrap):
    trained = ESPCN(2, 1)
    torch.save(wrap(trained.state_dict()), tmp_path / "w.pth")
    model = load_model(f"{HERE}:espcn", tmp_path / "w.pth")
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained.eval()(x))


def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    state = ESPCN(2, 1).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["body.0.bias"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ModelError, match=r"missing body\.0\.bias; unexpected extra\.weight"):
        load_model(f"{HERE}:espcn", tmp_path / "w.pth")


@pytest.mark.slow
@pytest.mark.parametrize("ref", [f"{HERE}:split_attention", f"{HERE}:rgb_x3", "pt2"])
def test_builds_for_the_host_and_computes_what_pytorch_does(tmp_path, ref):
    from edge_sr.pipeline import BuildConfig, build
    from runtime.engine import load_local

    ref = str(_pt2(tmp_path, dynamic=True)) if ref == "pt2" else ref
    art = build(BuildConfig(model=ref, target="host", size=(32, 40), out=str(tmp_path / "a"),
                            reference_dataset=""))
    spec = get_spec(ref)
    assert art.name == f"{spec.name}-host-float32"
    assert json.loads((art / "manifest.json").read_text())["model"] == ref
    x = np.random.default_rng(0).random((1, spec.channels, 32, 40), dtype=np.float32)
    engine = load_local(art)
    import tvm

    got = engine.func(tvm.runtime.tensor(x, engine.device)).numpy()
    with torch.no_grad():
        want = load_model(ref)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_model_that_sees_the_whole_image_is_refused_in_one_line(tmp_path):
    from edge_sr.pipeline import BuildConfig, BuildError, build

    with pytest.raises(BuildError, match="cannot run in tiles"):
        build(BuildConfig(model=f"{HERE}:global_pool", target="host", size=(32, 32),
                          out=str(tmp_path), reference_dataset=""))
    assert not any(tmp_path.iterdir())  # nothing written


def test_eval_scores_an_external_model():
    from edge_sr.evaluate import EvalConfig, evaluate

    res = evaluate(EvalConfig(f"{HERE}:espcn", "set5"))
    assert res["mean"]["psnr"] > 0 and len(res["images"]) == 5


@pytest.mark.slow
def test_int8_of_an_op_neither_quantizer_nor_importer_has_names_it_in_one_line(tmp_path):
    from edge_sr.pipeline import BuildConfig, BuildError, build

    with pytest.raises(BuildError, match="unsupported op softshrink at node softshrink "):
        build(BuildConfig(model=f"{HERE}:shrink_espcn", target="host", size=(32, 32),
                          dtype="int8", out=str(tmp_path)))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("factory, ops", [
    ("espcn", ["body.1 (Tanh)", "body.3 (Tanh)"]),
    ("split_attention", ["leaky_relu", "split", "getitem", "getitem_1", "leaky_relu_1",
                         "sigmoid", "mul"]),
])
def test_int8_runs_ops_without_an_integer_form_in_float32(tmp_path, factory, ops):
    from edge_sr.pipeline import BuildConfig, build
    from runtime.engine import load_local

    ref = f"{HERE}:{factory}"
    art = build(BuildConfig(model=ref, target="host", size=(32, 32), dtype="int8",
                            out=str(tmp_path), calib_images=16))
    quality = json.loads((art / "manifest.json").read_text())["quality"]
    assert quality["float_ops"] == ops and quality["passed"]  # within the int8 guard
    engine = load_local(art)
    import tvm

    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    got = engine.func(tvm.runtime.tensor(x, engine.device)).numpy()
    with torch.no_grad():
        want = load_model(ref)(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 0.05  # 8-bit tensors in between, not float


@pytest.mark.device
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_runs_on_the_emulated_pi_equal_to_the_host_module(tmp_path, dtype):
    from edge_sr.harness import BenchConfig, bench_device
    from edge_sr.pipeline import BuildConfig, build

    art = build(BuildConfig(model=f"{HERE}:split_attention", target="rpi4", size=(48, 48),
                            out=str(tmp_path), dtype=dtype, calib_images=16,
                            reference_dataset="" if dtype == "float32" else "set5"))
    summary = bench_device(BenchConfig(str(art), limit=1, repeat=1))["summary"]
    assert summary["max_abs_diff_vs_host_tvm"] <= 1e-5
    # tiled on the device: exact but for rounding in float32, within 8 bits in int8
    assert summary["psnr_vs_torch"] > (50 if dtype == "float32" else 30)


@pytest.mark.slow
def test_int8_calibrates_on_the_users_folder(tmp_path):
    import shutil

    from edge_sr.data.datasets import DatasetError, list_images
    from edge_sr.pipeline import BuildConfig, build

    calib = tmp_path / "calib"
    calib.mkdir()
    for f in list_images("t91")[:4]:
        shutil.copy(f, calib / f.name)
    cfg = BuildConfig(model=f"{HERE}:relu_espcn", target="host", size=(32, 32), dtype="int8",
                      out=str(tmp_path / "a"), calib=str(calib), calib_images=8,
                      max_psnr_drop=50)
    manifest = json.loads((build(cfg) / "manifest.json").read_text())
    assert manifest["quantization"]["calibration_data"] == [str(calib)]
    assert manifest["quality"]["dataset"] == "set5"  # the same guard as every int8 build
    with pytest.raises(DatasetError):
        build(BuildConfig(**{**cfg.__dict__, "calib": str(tmp_path / "none")}))
