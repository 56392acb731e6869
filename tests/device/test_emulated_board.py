"""`edge-sr device` and the harness against the emulated Pi's serial console (marked
``serial``; scripts/test.sh starts the console with `scripts/emulated-pi serial-start`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edge_sr.device import (
    ConsoleConfig,
    RpcConfig,
    SerialConsole,
    rpc_restarter,
    start_rpc,
    stop_rpc,
)
from edge_sr.harness import BenchConfig, DeviceError, Resilience, bench_device
from edge_sr.harness.stream import StreamBenchConfig, bench_stream
from edge_sr.pipeline import BuildConfig, build

ROOT = Path(__file__).resolve().parents[2]
PORT = 9094  # not the emulated Pi's default 9090: these tests start and kill their own
pytestmark = pytest.mark.serial


def _status() -> dict:
    out = subprocess.run(["bash", str(ROOT / "scripts/emulated-pi"), "serial-status"],
                         capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def console() -> ConsoleConfig:
    st = _status()
    return ConsoleConfig(st["port"], user=st["user"],
                         password=Path(st["password_file"]).read_text().strip(), timeout=60)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_device_info_cli(console):
    st = _status()
    proc = subprocess.run(
        [sys.executable, "-m", "edge_sr", "device", "info", "--serial", st["port"],
         "--user", st["user"], "--password-file", st["password_file"], "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["machine"] == "aarch64" and info["tvm"] == "0.27.0.post1"
    assert info["cores"] >= 1 and info["mem_total_mb"] > 0 and info["kernel"]


@pytest.mark.slow
def test_start_rpc_survive_a_killed_server_stop_rpc(console, tmp_path):
    art = build(BuildConfig(model="fsrcnn_tiny_x2", target="arm", size=(64, 64),
                            out=str(tmp_path / "art"), reference_dataset=""))
    with SerialConsole(console) as con:
        stop_rpc(con, PORT)
        started = start_rpc(con, RpcConfig(port=PORT))
    assert not started["already_running"] and _listening(PORT)

    def kill_after_first(i: int) -> None:
        if i == 0:  # the board's server dies: killed over the console
            with SerialConsole(console) as con:
                assert stop_rpc(con, PORT)

    report = bench_device(BenchConfig(
        str(art), device=f"127.0.0.1:{PORT}", limit=3, repeat=2, out=str(tmp_path / "rep"),
        restart=rpc_restarter(console, RpcConfig(port=PORT)), on_image=kill_after_first,
        resilience=Resilience(call_timeout=300, connect_timeout=60, retries=2, backoff=0.5)))
    assert report["complete"] and len(report["images"]) == 3 and report["reconnects"] == 1
    assert report["device_info"]["machine"] == "aarch64"
    assert all(im["max_abs_diff_vs_host_tvm"] == 0 for im in report["images"])
    with SerialConsole(console) as con:
        assert stop_rpc(con, PORT)
    assert not _listening(PORT)


@pytest.mark.slow
def test_stream_bench_over_the_console_alone(console, tmp_path):
    """No RPC: the artifact travels over the console and the stream runs on the board."""
    art = build(BuildConfig(model="fsrcnn_tiny_x2", target="arm", size=(48, 64),
                            out=str(tmp_path / "art"), reference_dataset=""))
    cfg = StreamBenchConfig(str(art), size=(64, 48), frames=3, timeout=300, serial=console)
    rep = bench_stream(cfg)
    assert rep["via"] == "serial" and rep["frames"] == 3 and rep["dropped"] == 0
    assert rep["fps"] > 0 and rep["module_fps"] > 0 and rep["model"] == "fsrcnn_tiny_x2"
    lib = json.loads((Path(art) / "manifest.json").read_text())["library"]
    with SerialConsole(console) as con:
        held = con.check(f"sha256sum {rep['board_artifact']}/{lib['file']}").split()[0]
    assert held == lib["sha256"]
    with pytest.raises(DeviceError, match="even width and height"):
        bench_stream(replace(cfg, size=(63, 48)))
