"""The device harness against the emulated Pi (marked ``device``), and its failure modes."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_sr.harness import BenchConfig, DeviceError, bench_device
from edge_sr.pipeline import BuildConfig, build
from runtime.artifact import ArtifactError
from runtime.engine import load_local
from runtime.upscale import read_picture, upscale_picture

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"latency_ms_median", "latency_ms_p90", "psnr_hr", "psnr_bicubic",
                "psnr_vs_host_tvm", "psnr_vs_torch"}


@pytest.fixture(scope="module")
def arm_artifact(tmp_path_factory) -> Path:
    """fsrcnn_tiny_x2 with its committed weights, built for the Pi (rpi4) at 64x64."""
    out = tmp_path_factory.mktemp("arm")
    return build(BuildConfig(model="fsrcnn_tiny_x2", target="arm", size=(64, 64), out=str(out),
                             reference_dataset=""))


def test_dead_device_is_a_one_line_error(host_artifact):
    with pytest.raises(DeviceError, match="not answering") as err:
        bench_device(BenchConfig(str(host_artifact), device="127.0.0.1:9", limit=1))
    assert "\n" not in str(err.value)


def test_bad_device_address(host_artifact):
    with pytest.raises(DeviceError, match="HOST:PORT"):
        bench_device(BenchConfig(str(host_artifact), device="localhost", limit=1))


@pytest.mark.device
def test_device_output_equals_host_and_beats_bicubic(arm_artifact, tmp_path):
    report = bench_device(BenchConfig(str(arm_artifact), limit=2, repeat=3,
                                      out=str(tmp_path / "rep")))
    s = report["summary"]
    assert SUMMARY_KEYS <= set(s)
    assert report["device_info"]["machine"] == "aarch64"
    assert s["max_abs_diff_vs_host_tvm"] <= 1e-5 and math.isinf(s["psnr_vs_host_tvm"])
    assert s["psnr_vs_torch"] > 50  # tiles are exact: only float rounding differs
    assert s["psnr_hr"] > s["psnr_bicubic"]
    assert 0 < s["latency_ms_min"] <= s["latency_ms_median"] <= s["latency_ms_p90"]
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(s))
    assert "| img_001 |" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.device
def test_host_artifact_is_refused_by_the_arm_device(host_artifact):
    with pytest.raises(ArtifactError, match="cannot run on this aarch64 device"):
        bench_device(BenchConfig(str(host_artifact), limit=1))


@pytest.mark.slow
@pytest.mark.device
def test_cli_json(arm_artifact, tmp_path):
    proc = subprocess.run(["edge-sr", "bench-device", "--artifact", str(arm_artifact),
                           "--limit", "1", "--repeat", "2", "--json", "--out",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert {"artifact", "device", "images", "summary"} <= set(report)


@pytest.mark.slow
@pytest.mark.device
def test_upscale_on_the_device_matches_host(arm_artifact, tmp_path):
    src = tmp_path / "in.png"
    rgb = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src)
    out = tmp_path / "out.png"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "emulated-pi"), "upscale", str(src),
                           str(out), str(arm_artifact)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    device = np.asarray(Image.open(out)).astype(int)
    host = upscale_picture(read_picture(src), load_local(arm_artifact, which="host_library"))
    host_u8 = np.round(np.clip(host.rgb, 0, 1) * 255).astype(int)
    assert device.shape == (140, 180, 3)
    assert np.abs(device - host_u8).max() <= 1
