"""Background load: spinners that burn CPU, stop when told and stop by themselves."""

from __future__ import annotations

import time

import pytest

from runtime import load


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


def test_spinners_burn_cpu_and_stop():
    procs = load.start(2, 60)
    try:
        time.sleep(1.5)
        assert all(p.poll() is None for p in procs)
        assert all(_cpu_seconds(p.pid) > 0.3 for p in procs)  # busy, not sleeping
    finally:
        assert load.stop(procs) == 2
    assert all(p.returncode is not None for p in procs) and not load._running


def test_spinners_end_by_themselves():
    procs = load.start(1, 0.5)
    deadline = time.monotonic() + 20
    while procs[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert procs[0].returncode == 0
    load.stop(procs)


@pytest.mark.parametrize("n,seconds", [(-1, 10), (1, 0), (1, load.MAX_SECONDS + 1)])
def test_out_of_range_is_refused(n, seconds):
    with pytest.raises(ValueError, match="out of range"):
        load.start(n, seconds)
