"""Where a tuning database was tuned, and whether a build is for that CPU.

A tuned schedule is fast on the CPU that measured it. Each record in MetaSchedule's
database names the target it was tuned for (its ``mcpu``); ``tuned_on.json`` beside the
records says what did the measuring (this machine, a board over RPC, an emulated board).
A build applies only the records tuned for its own CPU (``cpu_records``), so one database
can hold schedules for several CPUs; where none are for this CPU, the default schedules
do the work: on this project's Intel host the EPYC-tuned databases measured 15-50% slower
than them for four of five models (docs/tuning.md). A database named explicitly
(``--tuning-db``) with no record for this CPU is applied whole. ``foreign_note`` turns
either case into one line with the command that tunes for the CPU at hand.
"""

from __future__ import annotations

import json
import platform
import shutil
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


def cpu_records(work: Path, mcpu: str, dest: Path) -> int:
    """Copy the database at ``work`` into folder ``dest`` with only the records tuned for
    ``mcpu``; returns how many were kept."""
    work, dest = Path(work), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / WORKLOAD, dest / WORKLOAD)
    lines = (work / RECORDS).read_text().splitlines()
    kept = [lines[n - 1] for n, t in record_targets(work)
            if t and (t.get("mcpu") or "generic") == mcpu]
    (dest / RECORDS).write_text("".join(line + "\n" for line in kept))
    return len(kept)


def target_cpu(target) -> str:
    """A TVM target's ``mcpu`` (``generic`` when it names none, or there is no target)."""
    return str((target.attrs.get("mcpu", "") if target is not None else "") or "generic")


def record_cpu(record) -> str:
    """The ``mcpu`` a tuning record was measured for."""
    return target_cpu(record.target)


def cpu_best(database, workload, mcpu: str, k: int = 1) -> list:
    """A workload's ``k`` fastest records measured for CPU ``mcpu``."""
    return [r for r in database.get_top_k(workload, 1 << 16) if record_cpu(r) == mcpu][:k]


def record_traces(database, workload, mcpu: str | None = None) -> set[str]:
    """The schedules (trace text) a database holds for a workload, measured for CPU
    ``mcpu`` (None: any)."""
    return {str(r.trace) for r in database.get_top_k(workload, 1 << 16)
            if mcpu is None or record_cpu(r) == mcpu}


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


def foreign_note(work: Path, mcpu: str, tune_cmd: str, own_only: bool = False) -> str | None:
    """One line when the database at ``work`` was not tuned for CPU ``mcpu``, or was
    measured under emulation; None when it fits.

    Args:
        own_only: The build applies only this CPU's records (``cpu_records``); a database
            with none leaves it on the default schedules. False: every record is applied,
            and most being for another CPU is worth a line.
    """
    counts = record_cpus(work)
    total = sum(counts.values())
    if not total:
        return None
    own = counts.get(mcpu, 0)
    (top, n), = counts.most_common(1)
    if own_only and not own:
        return (f"tuning database {Path(work).name} holds no schedules for this build's "
                f"{mcpu} (its {total} records are for {top} and others): the default "
                f"schedules run instead, faster here than another CPU's; tune for this CPU "
                f"with `{tune_cmd}`")
    if not own_only and own * 2 <= total:
        return (f"tuning database {Path(work).name} was tuned for {top} ({n} of {total} "
                f"records), not this build's {mcpu}: its schedules may be slow here; tune "
                f"for this CPU with `{tune_cmd}`")
    who = read_tuned_on(work) or {}
    if who.get("emulated"):
        return (f"tuning database {Path(work).name} was measured under emulation (on "
                f"{who.get('cpu') or 'an x86 host'}), not on a real {mcpu}: emulated timings "
                f"are not a board's; tune on the board with `{tune_cmd}`")
    return None
