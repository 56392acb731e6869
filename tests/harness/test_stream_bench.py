"""``bench-device --stream`` against a local (x86) RPC server: the device runs the stream
pipeline itself and reports it against its module alone."""

from __future__ import annotations

import signal

import pytest

from edge_sr.harness import DeviceError
from edge_sr.harness.stream import StreamBenchConfig, bench_stream

from .test_faults import LocalServer


@pytest.fixture(scope="module")
def server():
    srv = LocalServer()
    srv.start()
    yield srv
    srv.kill()
    srv.signal(signal.SIGCONT)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "rgb24"])
def test_stream_bench_runs_on_the_device(host_artifact, server, pix_fmt):
    rep = bench_stream(StreamBenchConfig(host_artifact, device=server.addr, size=(48, 40),
                                         pix_fmt=pix_fmt, frames=4, timeout=120))
    assert rep["frames"] == 4 and rep["dropped"] == 0 and rep["pix_fmt"] == pix_fmt
    assert rep["fps"] > 0 and rep["module_fps"] > 0 and rep["ratio"] > 0
    assert set(rep["stages"]) == {"read", "prepare", "module", "finish"}
    assert rep["model"] == "fsrcnn_tiny_x2"


def test_bad_stream_size_on_the_device_is_one_error(host_artifact, server):
    with pytest.raises(DeviceError, match="even width and height"):
        bench_stream(StreamBenchConfig(host_artifact, device=server.addr, size=(47, 40),
                                       pix_fmt="yuv420p", frames=2, timeout=120))
