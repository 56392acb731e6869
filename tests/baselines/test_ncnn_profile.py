"""ncnn's per-layer profile of an artifact's model, beside ours, here and on the device."""

from __future__ import annotations

import json

import pytest

from edge_sr.baselines import ncnn_pnnx
from runtime.profile import ncnn_layers

needs_ncnn = pytest.mark.skipif(
    not ncnn_pnnx.available(), reason="needs the ncnn extra (pip install -e '.[ncnn]')")

PARAM = """7767517
5 6
Input                    in0                      0 1 in0
Split                    splitncnn_0              1 2 in0 1 2
Convolution              conv_0                   1 1 2 3 0=16 1=3 6=144
BinaryOp                 add_0                    2 1 3 1 4 0=0
PixelShuffle             pixelshuffle_1           1 1 4 out0 0=2 1=0
"""


def test_param_layers_keep_order_inputs_and_outputs(tmp_path):
    (tmp_path / "m.param").write_text(PARAM)
    layers = ncnn_layers(str(tmp_path / "m.param"))
    assert [la["type"] for la in layers] == ["Input", "Split", "Convolution", "BinaryOp",
                                             "PixelShuffle"]
    assert layers[1]["tops"] == ["1", "2"] and layers[3]["bottoms"] == ["3", "1"]
    assert layers[-1] == {"name": "pixelshuffle_1", "type": "PixelShuffle",
                          "bottoms": ["4"], "tops": ["out0"]}


def _layers(tmp_path) -> list[str]:
    """The names of fsrcnn_tiny_x2's ncnn layers at 24x24, as pnnx writes them."""
    from edge_sr.models import load_model

    param = ncnn_pnnx.export_ncnn(load_model("fsrcnn_tiny_x2"), (1, 1, 24, 24),
                                  tmp_path / "ref" / "m")
    return [la["name"] for la in ncnn_layers(str(param)) if la["type"] != "Input"]


def _check(prof: dict, names: list[str]) -> None:
    rows = prof["rows"]
    assert [r["layer"] for r in rows] == names and rows[-1]["output"][-2:] == [48, 48]
    convs = [r for r in rows if r["type"] == "Convolution"]
    assert convs and all(r["ms"] >= 0 for r in rows) and prof["total_ms"] > 0
    assert rows[-1]["cumulative_ms"] > 0
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


@needs_ncnn
def test_ncnn_profile_times_every_layer_here(tmp_path, capsys):
    from edge_sr.baselines.ncnn_profile import format_ncnn_profile, profile_ncnn
    from edge_sr.cli import main
    from edge_sr.pipeline import BuildConfig, build

    art = build(BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(24, 24),
                            out=str(tmp_path), reference_dataset=""))
    prof = profile_ncnn(art, repeat=2)
    _check(prof, _layers(tmp_path))  # every layer but the input, in order
    assert {r["type"] for r in prof["rows"]} >= {"Convolution", "PReLU"}
    assert "| **whole network** |" in format_ncnn_profile(prof)
    assert main(["profile", "--artifact", str(art), "--repeat", "1", "--ncnn", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"tvm", "ncnn"} and out["ncnn"]["where"] == "local"


@pytest.mark.device
@needs_ncnn
def test_ncnn_profile_on_the_emulated_pi(tmp_path):
    from edge_sr.baselines.ncnn_profile import profile_ncnn
    from edge_sr.pipeline import BuildConfig, build

    art = build(BuildConfig(model="fsrcnn_tiny_x2", target="arm", size=(24, 24),
                            out=str(tmp_path), reference_dataset=""))
    prof = profile_ncnn(art, device="127.0.0.1:9090", repeat=2)
    assert prof["where"] == "127.0.0.1:9090"
    _check(prof, _layers(tmp_path))
