"""Injected faults against a local (x86) RPC server: the harness survives them or reports
exactly what it could not measure; bad artifacts are refused before any upload."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_sr.harness import BenchConfig, DeviceError, Resilience, bench_device
from edge_sr.harness.health import health
from runtime.artifact import ArtifactError

ROOT = Path(__file__).resolve().parents[2]
FAST = Resilience(call_timeout=20, connect_timeout=10, retries=3, backoff=0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``python -m runtime.server`` in its own process group, killable and stoppable."""

    def __init__(self):
        self.port = _free_port()
        self.proc = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.server", "--port", str(self.port),
             "--port-end", str(self.port + 1)], cwd=ROOT, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("local RPC server did not start")

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def server():
    srv = LocalServer()
    srv.start()
    yield srv
    srv.signal(signal.SIGCONT)
    srv.kill()


def _bench(artifact, srv, tmp_path, **kw) -> dict:
    return bench_device(BenchConfig(str(artifact), device=srv.addr, limit=5, repeat=2,
                                    out=str(tmp_path), resilience=kw.pop("resilience", FAST),
                                    **kw))


@pytest.mark.slow
def test_server_dies_mid_benchmark_and_is_restarted(host_artifact, server, tmp_path):
    def on_image(i):
        if i == 1:
            server.kill()  # the server dies after two images

    report = _bench(host_artifact, server, tmp_path, on_image=on_image, restart=server.start)
    assert report["complete"] and len(report["images"]) == 5 and not report["not_measured"]
    assert report["reconnects"] == 1
    assert [f["recovered"] for f in report["faults"]] == [True]
    assert [im["name"] for im in report["images"]] == [f"img_00{i}" for i in range(1, 6)]


@pytest.mark.slow
def test_server_dies_and_stays_dead_keeps_what_was_measured(host_artifact, server, tmp_path):
    report = _bench(host_artifact, server, tmp_path,
                    on_image=lambda i: server.kill() if i == 2 else None)
    assert not report["complete"]
    assert [im["name"] for im in report["images"]] == ["img_001", "img_002", "img_003"]
    assert [im["name"] for im in report["not_measured"]] == ["img_004", "img_005"]
    assert all("reconnection attempts" in im["reason"] for im in report["not_measured"])
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert len(on_disk["images"]) == 3 and on_disk["not_measured"] == report["not_measured"]
    assert "not measured" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_hung_device_times_out_with_a_clear_message(host_artifact, server, tmp_path):
    policy = Resilience(call_timeout=5, connect_timeout=5, retries=1, backoff=0.1)
    start = time.monotonic()
    report = _bench(host_artifact, server, tmp_path, resilience=policy,
                    on_image=lambda i: server.signal(signal.SIGSTOP) if i == 0 else None)
    assert time.monotonic() - start < 120
    assert [im["name"] for im in report["images"]] == ["img_001"]
    assert len(report["not_measured"]) == 4
    assert "did not answer" in report["faults"][0]["error"]
    assert "\n" not in report["not_measured"][0]["reason"]


def _copy(artifact: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artifact"
    shutil.copytree(artifact, dst)
    return dst


def test_truncated_library_is_refused_before_connecting(host_artifact, tmp_path):
    art = _copy(host_artifact, tmp_path)
    lib = art / "model.so"
    lib.write_bytes(lib.read_bytes()[:1000])
    # A dead address: the refusal must come first, from the artifact check.
    with pytest.raises(ArtifactError, match="sha256") as err:
        bench_device(BenchConfig(str(art), device="127.0.0.1:9", limit=1))
    assert "\n" not in str(err.value)


def test_manifest_hash_mismatch_is_refused(host_artifact, tmp_path):
    art = _copy(host_artifact, tmp_path)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["library"]["sha256"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="sha256"):
        bench_device(BenchConfig(str(art), device="127.0.0.1:9", limit=1))


@pytest.mark.slow
def test_artifact_for_another_target_is_refused_before_upload(host_artifact, server, tmp_path):
    art = _copy(host_artifact, tmp_path)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["target"].update(name="rpi4", arch="aarch64")
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot run on this x86_64"):
        bench_device(BenchConfig(str(art), device=server.addr, limit=1))


@pytest.mark.slow
def test_two_runs_on_one_tracker_key_queue(host_artifact, tmp_path):
    from tvm.rpc.tracker import Tracker

    tracker = Tracker("127.0.0.1", port=9420, port_end=9429, silent=True)
    port = _free_port()
    srv = subprocess.Popen([sys.executable, "-m", "runtime.server", "--port", str(port),
                            "--port-end", str(port + 1), "--tracker",
                            f"127.0.0.1:{tracker.port}", "--key", "queue-test"], cwd=ROOT,
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)  # registration
        results: dict[int, object] = {}

        def run(i: int) -> None:
            try:
                results[i] = bench_device(BenchConfig(
                    str(host_artifact), device=None, tracker=f"127.0.0.1:{tracker.port}",
                    key="queue-test", limit=2, repeat=2, out=str(tmp_path / str(i))))
            except Exception as exc:  # noqa: BLE001 - reported by the assert below
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert all(isinstance(r, dict) and r["complete"] for r in results.values()), results
        assert len(results) == 2
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        tracker.terminate()


def test_health_flags_throttling_and_heat():
    cool = {"temperature_c": 55.0, "cpu_freq_khz": 1800000,
            "throttled": {"raw": "0x0", "now": [], "since_boot": []}}
    hot = {"temperature_c": 82.5, "cpu_freq_khz": 1000000,
           "throttled": {"raw": "0x40004", "now": ["throttled"], "since_boot": ["throttled"]}}
    assert health(cool, cool) == {"before": cool, "after": cool, "throttled": False,
                                  "warnings": []}
    h = health(cool, hot)
    assert h["throttled"] and len(h["warnings"]) == 4  # flag now, heat, new flag, clock fell
    assert health(None, None)["throttled"] is False  # no sensors: no claim either way


@pytest.mark.slow
def test_report_records_health_before_and_after(host_artifact, server, tmp_path):
    report = _bench(host_artifact, server, tmp_path)
    assert set(report["health"]) == {"before", "after", "throttled", "warnings"}
    assert report["health"]["before"] is not None and report["health"]["after"] is not None
    assert report["complete"] and report["faults"] == []


def test_every_call_has_a_deadline():
    from edge_sr.harness.session import DeviceFault, timed

    with pytest.raises(DeviceFault, match="within 1 s"):
        timed(time.sleep, 30, timeout=1, what="sleep")
    assert timed(lambda: 7, timeout=1) == 7
    with pytest.raises(DeviceError):
        timed(lambda: (_ for _ in ()).throw(DeviceError("x")), timeout=1)


@pytest.mark.slow
def test_a_session_gets_the_devices_thread_pool(monkeypatch):
    # connect() sets up the session's pool as load_local does on the device: with two
    # threads per core asked for, more than the cores TVM's default pool stops at.
    from edge_sr.device.rpc import connect
    from runtime.threads import physical_cores

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.setenv("EDGE_SR_THREADS_PER_CORE", "2")
    srv = LocalServer()
    srv.start()
    try:
        sess = connect(srv.addr, timeout=60)
        assert int(sess.get_function("runtime.NumThreads")()) == 2 * physical_cores()
    finally:
        srv.kill()
