"""What the device is: architecture, CPU, memory, temperature, TVM version. stdlib only.

Registered on the RPC server as the global function ``edge_sr.device_info`` so the host
can check an artifact's architecture before uploading it and record device health.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

# Bits of the Raspberry Pi firmware's `vcgencmd get_throttled` (0-3 now, 16-19 since boot).
THROTTLE_BITS = ("under_voltage", "arm_freq_capped", "throttled", "soft_temp_limit")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "CPU part"):
            return value.strip()
    return None


def _mem_total_mb() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def _temperature_c() -> float | None:
    """The hottest thermal zone (a Pi has one; boards with several throttle on the max)."""
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        raw = _read(str(zone))
        if raw and raw.lstrip("-").isdigit():
            temps.append(int(raw) / 1000.0)
    return max(temps) if temps else None


def parse_throttled(text: str | None) -> dict | None:
    """``throttled=0x50005`` -> ``{"raw", "now": [...], "since_boot": [...]}`` (None if absent)."""
    if not text or "=" not in text:
        return None
    try:
        value = int(text.strip().split("=", 1)[1], 16)
    except ValueError:
        return None
    return {"raw": hex(value),
            "now": [n for i, n in enumerate(THROTTLE_BITS) if value >> i & 1],
            "since_boot": [n for i, n in enumerate(THROTTLE_BITS) if value >> (16 + i) & 1]}


def _throttled() -> dict | None:
    if not shutil.which("vcgencmd"):
        return None
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_throttled(out)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def device_info() -> dict:
    """A JSON-able description of this machine."""
    try:
        import tvm

        tvm_version = tvm.__version__
    except ImportError:
        tvm_version = None
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_mb": _mem_total_mb(),
        "temperature_c": _temperature_c(),
        "cpu_freq_khz": _int(_read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")),
        "throttled": _throttled(),
        "python": platform.python_version(),
        "tvm": tvm_version,
    }


def register() -> None:
    """Register ``edge_sr.device_info`` (returns JSON text) as a TVM global function."""
    import tvm

    tvm.register_global_func("edge_sr.device_info", lambda: json.dumps(device_info()),
                             override=True)


def register_all() -> None:
    """Every global function the host calls on the device (info, per-kernel profile,
    peer runtimes' timing, background load, thread pool set-up, stream benchmark)."""
    from runtime import load, profile, stream, threads

    register()
    threads.register()
    profile.register()
    profile.register_peers()
    load.register()
    stream.register()
