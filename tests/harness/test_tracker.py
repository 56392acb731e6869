"""The harness through an RPC tracker, with our runtime.server registered under a key."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from edge_sr.harness import BenchConfig, DeviceError, bench_device


@pytest.fixture
def tracker_with_server():
    from tvm.rpc.tracker import Tracker

    tracker = Tracker("127.0.0.1", port=9390, port_end=9399, silent=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime.server", "--port", "9400", "--port-end", "9409",
         "--tracker", f"127.0.0.1:{tracker.port}", "--key", "edge-sr-test"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(3)  # registration with the tracker
    yield f"127.0.0.1:{tracker.port}"
    server.terminate()
    server.wait(10)
    tracker.terminate()


@pytest.mark.slow
def test_bench_through_tracker(tracker_with_server, host_artifact, tmp_path):
    report = bench_device(BenchConfig(str(host_artifact), device=None,
                                      tracker=tracker_with_server, key="edge-sr-test",
                                      limit=1, repeat=2, out=str(tmp_path)))
    assert report["device"] == tracker_with_server
    assert report["device_info"]["machine"] == "x86_64"
    assert math.isinf(report["summary"]["psnr_vs_host_tvm"])


@pytest.mark.slow
def test_tracker_needs_a_key(tracker_with_server, host_artifact):
    with pytest.raises(DeviceError, match="--key"):
        bench_device(BenchConfig(str(host_artifact), device=None, tracker=tracker_with_server,
                                 limit=1))


def test_server_refuses_a_public_bind_without_the_flag():
    proc = subprocess.run([sys.executable, "-m", "runtime.server", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr
