"""Device health around a measurement: temperature, throttling, clock, before and after."""

from __future__ import annotations

# Raspberry Pi firmware starts throttling the ARM clock at 80 C (hard limit 85 C).
HOT_C = 80.0
KEYS = ("temperature_c", "cpu_freq_khz", "throttled")


def _pick(info: dict | None) -> dict | None:
    return None if info is None else {k: info.get(k) for k in KEYS}


def health(before: dict | None, after: dict | None) -> dict:
    """``{"before", "after", "throttled", "warnings"}`` from two device infos.

    A run counts as throttled when the firmware reports throttling or a frequency cap
    now (before or after), when such a flag appeared since boot during the run, or when
    the CPU was at or above ``HOT_C``. Absent sensors (emulated boards) give no warning.
    """
    warnings = []
    for when, info in (("before", before), ("after", after)):
        flags = (info or {}).get("throttled") or {}
        if flags.get("now"):
            warnings.append(f"throttled {when} the run: {', '.join(flags['now'])}")
        temp = (info or {}).get("temperature_c")
        if temp is not None and temp >= HOT_C:
            warnings.append(f"CPU at {temp:.1f} C {when} the run (>= {HOT_C:.0f} C)")
    new = set(((after or {}).get("throttled") or {}).get("since_boot", [])) - set(
        ((before or {}).get("throttled") or {}).get("since_boot", []))
    if new:
        warnings.append(f"throttling occurred during the run: {', '.join(sorted(new))}")
    f0, f1 = ((i or {}).get("cpu_freq_khz") for i in (before, after))
    if f0 and f1 and f1 < 0.9 * f0:
        warnings.append(f"CPU clock fell from {f0 // 1000} to {f1 // 1000} MHz during the run")
    return {"before": _pick(before), "after": _pick(after), "throttled": bool(warnings),
            "warnings": warnings}
