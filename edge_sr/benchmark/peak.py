"""The machine's fp32 and int8 peaks, for % of peak."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _field(text: str, key: str) -> str | None:
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() == key:
            return v.strip()
    return None


def cpu_peak(cores: int | None = None, ghz: float | None = None,
             machine: str | None = None, int8_dot: bool | None = None) -> dict:
    """fp32 peak = cores x FMA units x SIMD lanes x 2 FLOPs x clock; int8 peak = that x
    the 8-bit multiply-adds one 32-bit lane does per instruction.

    x86: 2 FMA units per core (every AVX2 core since Haswell/Zen); 16 fp32 lanes with
    AVX-512 on Intel, 8 with AVX2 (Zen 4 runs AVX-512 on 256-bit units: 8). aarch64
    (Cortex-A72/A76): 2 NEON pipes x 4 lanes. int8: 4 per lane with a 4-way dot product
    (x86 AVX512-VNNI ``vpdpbusd``, Arm ``sdot``), else 2 (16-bit pair products:
    ``vpmaddwd``, NEON widening multiply-adds). The clock is the nominal one from
    /proc/cpuinfo or cpufreq's max; turbo can exceed it, so fractions are approximate.
    Give ``cores``, ``ghz``, ``machine`` and ``int8_dot`` for another machine (a device).
    """
    text = _cpuinfo()
    cores = cores or os.cpu_count() or 1
    flags = set((_field(text, "flags") or "").split())
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        units, lanes, isa = 2, 4, "neon"
    elif "avx512f" in flags and "GenuineIntel" in (_field(text, "vendor_id") or ""):
        units, lanes, isa = 2, 16, "avx512"
    elif "avx2" in flags and "fma" in flags:
        units, lanes, isa = 2, 8, "avx2+fma"
    else:
        units, lanes, isa = 1, 4, "sse"
    if int8_dot is None:
        int8_dot = bool(flags & {"avx512_vnni", "avx_vnni", "asimddp"})
    if ghz is None:
        max_khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        mhz = _field(text, "cpu MHz")
        ghz = (int(max_khz.read_text()) / 1e6 if max_khz.exists()
               else float(mhz) / 1e3 if mhz else 1.0)
    fp32 = cores * units * lanes * 2 * ghz
    return {"cores": cores, "fma_units": units, "lanes": lanes, "isa": isa,
            "ghz": round(ghz, 3), "peak_gflops": round(fp32, 1),
            "int8_peak_gops": round(fp32 * (4 if int8_dot else 2), 1)}
