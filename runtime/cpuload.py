"""How many cores other processes keep busy, measured between two samples.

A sample holds the busy time of the CPUs this process may run on (``/proc/stat``: user,
system, irq and softirq; not idle, iowait or a hypervisor's steal, and not ``nice``: the
scheduler gives niced work (a background job at nice 19) a sliver of a core that a
normal-priority module wants, so it does not make that core busy for us) and this
process's own CPU time over all its threads (``time.process_time``, which QEMU user-mode
passes through to the host, unlike its made-up ``/proc/self/stat``). What the CPUs spent
beyond our own time went to other processes. Linux only: elsewhere there is no sample.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# /proc/stat's columns after the CPU name, in USER_HZ ticks; the busy ones by index
BUSY_COLUMNS = (0, 2, 5, 6)  # user, system, irq, softirq


@dataclass(frozen=True)
class Sample:
    """CPU times (seconds) at one instant."""

    busy: float  # busy time of our CPUs, every process
    own: float  # this process's CPU time
    wall: float  # time.monotonic()


def _ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def busy_seconds(text: str, cpus: set[int] | None) -> float:
    """Busy CPU time (seconds) in ``/proc/stat`` text, summed over ``cpus`` (None:
    every CPU listed)."""
    ticks = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        cols = rest.split()
        ticks += sum(int(cols[i]) for i in BUSY_COLUMNS if i < len(cols))
    return ticks / _ticks_per_second()


def sample(stat: Path = PROC_STAT) -> Sample | None:
    """Now's CPU times; None where ``/proc/stat`` cannot be read."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    return Sample(busy_seconds(text, _allowed_cpus()), time.process_time(), time.monotonic())


def others_busy(before: Sample, after: Sample) -> float:
    """Cores other processes kept busy on average between two samples (>= 0)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall


def probe(seconds: float) -> float | None:
    """Cores other processes keep busy, over the next ``seconds`` (this thread sleeps);
    None without ``/proc/stat``."""
    first = sample()
    if first is None:
        return None
    time.sleep(seconds)
    second = sample()
    return None if second is None else others_busy(first, second)
