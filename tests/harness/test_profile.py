"""Per-kernel profile: kernels timed where they run and mapped to the model's layers."""

from __future__ import annotations

import pytest

from edge_sr.harness.profile import format_profile, map_layers, profile_artifact


def test_local_profile_maps_conv_kernels_to_layers(host_artifact):
    prof = profile_artifact(host_artifact, repeat=2)
    rows = prof["rows"]
    convs = [r for r in rows if "conv2d" in r["kernel"]]
    assert [r["layer"] for r in convs] == ["body.0", "body.2", "deconv"]
    assert all(r["macs"] > 0 and r["ms"] > 0 for r in convs)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert "| **total** |" in format_profile(prof)


def test_profile_maps_the_layers_the_build_rewrote(tmp_path, random_weights):
    # XLSR's four head convs are one kernel after the build's merge_heads pass, and
    # conv_chain fuses it and each GBlock's grouped conv with the 1x1 that follows; the
    # layers are those of the rewritten model, not the checkpoint's
    from edge_sr.pipeline import BuildConfig, build

    art = build(BuildConfig(model="xlsr_x3", target="host", size=(24, 24), out=str(tmp_path),
                            weights=str(random_weights("xlsr_x3")), reference_dataset=""))
    layers = [r["layer"] for r in profile_artifact(art, repeat=1)["rows"] if r["macs"]]
    assert layers[:2] == ["heads.0+mix", "gblocks.0.conv+gblocks.0.mix"]
    assert layers[-1] == "tail" and len(layers) == 7


def test_unpaired_kernels_keep_their_names():
    calls = [{"kernel": "fused_conv2d_add", "args": [[1, 3, 8, 8]], "ms": 1.0},
             {"kernel": "fused_conv2d1_add", "args": [[1, 3, 8, 8]], "ms": 2.0}]
    rows = map_layers(calls, [{"layer": "only_one", "macs": 5, "out_shape": []}])
    assert [r["layer"] for r in rows] == ["-", "-"]  # counts differ: no guessing


@pytest.mark.device
def test_profile_on_the_emulated_pi(tmp_path):
    from edge_sr.pipeline import BuildConfig, build

    art = build(BuildConfig(model="fsrcnn_tiny_x2", target="arm", size=(32, 32),
                            out=str(tmp_path), reference_dataset=""))
    prof = profile_artifact(art, device="127.0.0.1:9090", repeat=2)
    assert prof["where"] == "127.0.0.1:9090"
    assert [r["layer"] for r in prof["rows"] if r["macs"]] == ["body.0", "body.2", "deconv"]


def test_onnxruntime_profile_refuses_a_device(host_artifact, capsys):
    from edge_sr.cli import main

    assert main(["profile", "--artifact", str(host_artifact), "--device", "127.0.0.1:1",
                 "--onnxruntime"]) == 2
    assert "this machine only" in capsys.readouterr().err
