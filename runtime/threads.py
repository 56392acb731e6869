"""How many threads TVM's CPU runtime uses: one per physical core this process may run on.

Without ``TVM_NUM_THREADS`` TVM takes ``hardware_concurrency() / 2`` on every x86 machine,
assuming two hyper-threads per core. On a VM or a board without SMT that is half the
cores: on this project's 2-core x86 machine every TVM kernel ran on one thread while
ONNX Runtime and PyTorch used two. So we count physical cores from sysfs (the process's
CPU affinity, SMT siblings counted once) and set ``TVM_NUM_THREADS`` before TVM starts its
thread pool, unless the user set it (or ``OMP_NUM_THREADS``, which TVM also reads).
Child processes (MetaSchedule's measurement workers, the RPC server's) inherit it.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")
USER_VARS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None, sysfs: Path = SYSFS_CPU) -> int:
    """Physical cores among ``cpus`` (default: those this process may run on).

    Hyper-threads of one core share its ``(physical_package_id, core_id)``; a CPU whose
    topology sysfs does not describe counts as a core of its own.
    """
    cpus = _allowed_cpus() if cpus is None else cpus
    cores: set[tuple[str, ...]] = set()
    for cpu in cpus:
        topo = sysfs / f"cpu{cpu}" / "topology"
        try:
            key = tuple((topo / f).read_text().strip()
                        for f in ("physical_package_id", "core_id"))
        except OSError:
            key = ("cpu", str(cpu))
        cores.add(key)
    return max(1, len(cores))


def use_physical_cores(environ: dict[str, str] | None = None) -> int:
    """Set ``TVM_NUM_THREADS`` to the physical core count unless the user chose a count.

    Must run before TVM's first parallel kernel (the pool reads it once); importing
    ``runtime`` calls it, and ``edge_sr`` imports ``runtime`` first.

    Returns:
        The thread count TVM will use.
    """
    env = os.environ if environ is None else environ
    for var in USER_VARS:
        if env.get(var, "").strip().isdigit() and int(env[var]) > 0:
            return int(env[var])
    n = physical_cores()
    env["TVM_NUM_THREADS"] = str(n)
    return n
