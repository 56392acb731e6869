"""Where a tuning database was tuned, and whether a build is for that CPU.

A tuned schedule is fast on the CPU that measured it. Each record in MetaSchedule's
database names the target it was tuned for (its ``mcpu``); ``tuned_on.json`` beside the
records says what did the measuring (this machine, a board over RPC, an emulated board).
``foreign_note`` turns a mismatch into one line with the command that tunes for the CPU
at hand: the build still applies the database (its schedules are valid anywhere the
instructions exist), it just may not be fast.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# MetaSchedule's JSON database: one file of workloads, one of records (one JSON per line).
WORKLOAD, RECORDS = "database_workload.json", "database_tuning_record.json"
TUNED_ON = "tuned_on.json"
# /proc/cpuinfo under QEMU user-mode shows the x86 host's CPU to an aarch64 process.
X86_VENDORS = ("Intel", "AMD", "Xeon", "EPYC", "Ryzen", "Core(TM)")


def record_targets(work: Path) -> Iterator[tuple[int, dict | None]]:
    """(line number, target dict) of each record in a database folder; ``None`` for a
    line that does not parse (an interrupted write). No records file: nothing."""
    path = Path(work) / RECORDS
    if not path.is_file():
        return
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            target = json.loads(line)[1][2]
            target = target if isinstance(target, dict) else json.loads(target)
        except (ValueError, IndexError, TypeError, KeyError):
            target = None
        yield n, target if isinstance(target, dict) else None


def record_cpus(work: Path) -> Counter:
    """How many records of the database were tuned for each ``mcpu``."""
    return Counter(t.get("mcpu") or "generic" for _, t in record_targets(work) if t)


def measurer(info: dict | None) -> dict:
    """What measured a tuning run: ``info`` is the device's ``device_info`` (None: this
    machine). ``emulated`` when an aarch64 process sees an x86 CPU (QEMU user-mode)."""
    if info is None:
        from runtime.device_info import device_info

        info = device_info()
        where = "local"
    else:
        where = "rpc"
    cpu = info.get("cpu") or ""
    emulated = info.get("machine") == "aarch64" and any(v in cpu for v in X86_VENDORS)
    return {"measured": where, "machine": info.get("machine") or platform.machine(),
            "cpu": cpu, "emulated": emulated}


def write_tuned_on(work: Path, target_mcpu: str, who: dict) -> None:
    """Record what measured the database (kept next to its records)."""
    from runtime.artifact import write_json_atomic

    write_json_atomic(Path(work) / TUNED_ON, {"mcpu": target_mcpu, **who})


def read_tuned_on(work: Path) -> dict | None:
    """The database's ``tuned_on.json``, or None (databases from before it existed)."""
    path = Path(work) / TUNED_ON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def provenance(work: Path) -> dict:
    """What the manifest records: records per ``mcpu`` and ``tuned_on.json``."""
    return {"records_by_mcpu": dict(record_cpus(work)), "tuned_on": read_tuned_on(work)}


def foreign_note(work: Path, mcpu: str, tune_cmd: str) -> str | None:
    """One line when the database at ``work`` was not tuned for CPU ``mcpu`` (most of its
    records are for another), or was measured under emulation; None when it fits."""
    counts = record_cpus(work)
    total = sum(counts.values())
    if not total:
        return None
    if counts.get(mcpu, 0) * 2 <= total:
        (top, n), = counts.most_common(1)
        return (f"tuning database {Path(work).name} was tuned for {top} ({n} of {total} "
                f"records), not this build's {mcpu}: its schedules may be slow here; tune "
                f"for this CPU with `{tune_cmd}`")
    who = read_tuned_on(work) or {}
    if who.get("emulated"):
        return (f"tuning database {Path(work).name} was measured under emulation (on "
                f"{who.get('cpu') or 'an x86 host'}), not on a real {mcpu}: emulated timings "
                f"are not a board's; tune on the board with `{tune_cmd}`")
    return None
