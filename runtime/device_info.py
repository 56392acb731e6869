"""What the device is: architecture, CPU, memory, temperature, TVM version. stdlib only.

Registered on the RPC server as the global function ``edge_sr.device_info`` so the host
can check an artifact's architecture before uploading it and record device health.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


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
    raw = _read("/sys/class/thermal/thermal_zone0/temp")
    return int(raw) / 1000.0 if raw and raw.lstrip("-").isdigit() else None


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
        "cpu_freq_khz": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"),
        "python": platform.python_version(),
        "tvm": tvm_version,
    }


def register() -> None:
    """Register ``edge_sr.device_info`` (returns JSON text) as a TVM global function."""
    import tvm

    tvm.register_global_func("edge_sr.device_info", lambda: json.dumps(device_info()),
                             override=True)
