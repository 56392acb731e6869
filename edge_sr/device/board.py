"""What the serial console does on a board: describe it, start and stop its RPC server.

Only POSIX shell tools are assumed on the board (``cat``, ``grep``, ``uname``; ``base64``
and ``sha256sum`` to receive a file), plus the device runtime's Python for the TVM version,
the RPC server and the stream benchmark.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.device_info import parse_throttled
from runtime.server import LOOPBACK

from .console import ConsoleError, SerialConsole

# The runtime's Python: the venv of scripts/setup-real-pi.sh when present, else python3.
PYTHON = ("$( [ -x /opt/edge-sr/venv/bin/python ] && echo /opt/edge-sr/venv/bin/python "
          "|| echo python3 )")
RUNTIME_ENV = "TVM_USE_RUNTIME_LIB=1 PYTHONPATH=/opt/edge-sr${PYTHONPATH:+:$PYTHONPATH}"
# Where runtime commands start: the setup script's folder when present.
RUNTIME_CD = "cd /opt/edge-sr 2>/dev/null || cd /"


def _first(console: SerialConsole, command: str) -> str | None:
    res = console.run(command)
    out = res.output.strip()
    return out if res.ok and out else None


def board_info(console: SerialConsole) -> dict:
    """Kernel, CPU, cores, memory, temperatures, throttling, frequency, TVM version."""
    cpu = _first(console, "grep -m1 -E '^(model name|Model|Hardware)' /proc/cpuinfo "
                          "| cut -d: -f2-")
    mem = _first(console, "grep -m1 MemTotal /proc/meminfo")
    temps = _first(console, "cat /sys/class/thermal/thermal_zone*/temp 2>/dev/null")
    throttled = _first(console, "vcgencmd get_throttled 2>/dev/null")
    freq = _first(console, "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    tvm = _first(console, f"{RUNTIME_ENV} {PYTHON} -c 'import tvm; print(tvm.__version__)' "
                          "2>/dev/null | tail -n 1")
    temps_c = [int(t) / 1000 for t in (temps or "").split() if t.lstrip("-").isdigit()]
    cores = _first(console, "grep -c ^processor /proc/cpuinfo")
    return {
        "kernel": _first(console, "uname -r"), "machine": _first(console, "uname -m"),
        "cpu": cpu.strip() if cpu else None,
        "cores": int(cores) if cores and cores.isdigit() else None,
        "mem_total_mb": int(mem.split()[1]) // 1024 if mem else None,
        "temperature_c": max(temps_c) if temps_c else None,
        "cpu_freq_khz": int(freq) if freq and freq.isdigit() else None,
        "throttled": parse_throttled(throttled),
        "tvm": tvm,
    }


@dataclass
class RpcConfig:
    """The RPC server to start on the board.

    Attributes:
        port: Port to listen on.
        host: Address to bind (anything but loopback adds ``--allow-remote``).
        tracker: ``HOST:PORT`` of a tracker to register with (optional).
        key: Tracker key.
        wait: Seconds to wait until it listens (emulated boards start slowly).
    """

    port: int = 9090
    host: str = "127.0.0.1"
    tracker: str | None = None
    key: str = ""
    wait: float = 180.0


def _paths(port: int) -> tuple[str, str]:
    return f"/tmp/edge-sr-rpc-{port}.log", f"/tmp/edge-sr-rpc-{port}.pid"


def _listening(console: SerialConsole, port: int) -> bool:
    # /proc/net/tcp{,6}: local address column ends in the port in hex; state 0A = LISTEN.
    res = console.run(f"grep -qiE ':{port:04X} [0-9A-F:]+ 0A' /proc/net/tcp /proc/net/tcp6")
    return res.ok


def start_rpc(console: SerialConsole, cfg: RpcConfig) -> dict:
    """Start ``runtime.server`` in the background over the console; wait until it listens.

    Returns:
        ``{"port", "pid", "log"}``. Raises ``ConsoleError`` with the log's last lines when
        the server exits or does not listen within ``cfg.wait`` seconds.
    """
    log, pidfile = _paths(cfg.port)
    if _listening(console, cfg.port):
        pid = _first(console, f"cat {pidfile} 2>/dev/null")
        return {"port": cfg.port, "pid": int(pid) if pid and pid.isdigit() else None,
                "log": log, "already_running": True}
    args = f"--host {cfg.host} --port {cfg.port} --port-end {cfg.port + 1}"
    if cfg.host not in LOOPBACK:
        args += " --allow-remote"
    if cfg.tracker:
        args += f" --tracker {cfg.tracker} --key {cfg.key}"
    console.check(f"{RUNTIME_CD}; {RUNTIME_ENV} PYTHONUNBUFFERED=1 "
                  f"setsid nohup {PYTHON} -m runtime.server {args} > {log} 2>&1 < /dev/null "
                  f"& echo $! > {pidfile}")
    pid = int(console.check(f"cat {pidfile}").strip())
    deadline = time.monotonic() + cfg.wait
    while time.monotonic() < deadline:
        if _listening(console, cfg.port):
            return {"port": cfg.port, "pid": pid, "log": log, "already_running": False}
        if not console.run(f"kill -0 {pid}").ok:
            raise ConsoleError(f"RPC server on the board exited: {_log_tail(console, log)}")
        time.sleep(1)
    raise ConsoleError(f"RPC server did not listen on port {cfg.port} within {cfg.wait:.0f} s: "
                       f"{_log_tail(console, log)}")


def stop_rpc(console: SerialConsole, port: int = 9090) -> bool:
    """Stop the server started by ``start_rpc`` (its whole process group); True if one ran."""
    _, pidfile = _paths(port)
    pid = _first(console, f"cat {pidfile} 2>/dev/null")
    if not pid or not pid.isdigit() or not console.run(f"kill -0 {pid}").ok:
        return False
    console.run(f"kill -TERM -- -{pid} 2>/dev/null || kill -TERM {pid}")
    for _ in range(40):
        if not console.run(f"kill -0 {pid} 2>/dev/null").ok and not _listening(console, port):
            console.run(f"rm -f {pidfile}")
            return True
        time.sleep(0.5)
    console.run(f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}")
    return True


def _log_tail(console: SerialConsole, log: str) -> str:
    tail = _first(console, f"tail -n 3 {log}") or "no log output"
    return " | ".join(line.strip() for line in tail.splitlines())[:400]


# Where artifacts sent over the console go on the board (one folder per artifact name).
BOARD_ARTIFACTS = "/tmp/edge-sr-artifacts"


def upload_artifact(console: SerialConsole, artifact: str | Path,
                    root: str = BOARD_ARTIFACTS) -> str:
    """Copy an artifact's device files (manifest and library) to the board over the
    console; a library the board already holds (same sha256) is not sent again.

    Returns:
        The artifact's folder on the board.
    """
    artifact = Path(artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    remote = f"{root}/{artifact.name}"
    lib = manifest["library"]
    have = _first(console, f"sha256sum '{remote}/{lib['file']}' 2>/dev/null")
    if not have or have.split()[0] != lib["sha256"]:
        console.put((artifact / lib["file"]).read_bytes(), f"{remote}/{lib['file']}")
    console.put((artifact / "manifest.json").read_bytes(), f"{remote}/manifest.json")
    return remote


def stream_bench(console: SerialConsole, remote_artifact: str, size: tuple[int, int],
                 pix_fmt: str = "yuv420p", frames: int = 30, side_nice: int = 10,
                 timeout: float = 600) -> dict:
    """Run ``python -m runtime.stream --bench`` on the board over the console; its report.

    Raises:
        ConsoleError: the stream failed on the board (its one-line error) or timed out.
    """
    stats = f"/tmp/edge-sr-stream-{secrets.token_hex(4)}.json"
    res = console.run(
        f"{RUNTIME_CD}; {RUNTIME_ENV} {PYTHON} -m runtime.stream "
        f"--artifact '{remote_artifact}' --bench {frames} --size {size[0]}x{size[1]} "
        f"--pix-fmt {pix_fmt} --side-nice {side_nice} --stats {stats} --quiet "
        f"&& cat {stats}; status=$?; rm -f {stats}; exit $status", timeout)
    if not res.ok:
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        raise ConsoleError(f"the stream benchmark failed on the board: "
                           f"{(lines or ['no output'])[-1][:300]}")
    return json.loads(res.output[res.output.index("{"):])
