"""How TVM's CPU thread pool is set up: one thread per physical core, workers that sleep.

Without ``TVM_NUM_THREADS`` TVM takes ``hardware_concurrency() / 2`` on every x86 machine,
assuming two hyper-threads per core. On a VM or a board without SMT that is half the
cores: on this project's 2-core x86 machine every TVM kernel ran on one thread while
ONNX Runtime and PyTorch used two. So we count physical cores from sysfs (the process's
CPU affinity, SMT siblings counted once) and set ``TVM_NUM_THREADS`` before TVM starts its
thread pool, unless the user set it (or ``OMP_NUM_THREADS``, which TVM also reads).
Child processes (MetaSchedule's measurement workers, the RPC server's) inherit it.

A module that shares its cores with other processes (a camera pipeline, an encoder) loses
more than its share: TVM's pool splits every parallel loop statically, one share per
thread, a kernel ends when its slowest share does, and pool workers that finish early
spin before sleeping (``TVM_THREAD_POOL_SPIN_COUNT``), burning the time a preempted share
needs; with many short kernels (an int8 module) the loss grew with the kernel count.
Workers here sleep at once (spin count 0): quiet latency level, far less lost under load.
``EDGE_SR_THREADS_PER_CORE=2`` runs two threads per core, so that the scheduler can give
a shared core's share to the other threads: a busy machine then slows TVM less than ONNX
Runtime, but a quiet one runs tuned kernels whose parallel loops do not split evenly over
twice the threads up to a quarter slower, so one per core stays the default. Figures:
docs/pipeline.md, "Latency on a busy machine".
"""

from __future__ import annotations

import os
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")
USER_VARS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")
SPIN_VAR = "TVM_THREAD_POOL_SPIN_COUNT"
PER_CORE_VAR = "EDGE_SR_THREADS_PER_CORE"
THREADS_PER_CORE = 1
# TVM's ThreadGroup::AffinityMode: kBig (every fast core; all cores on a uniform CPU).
_BIG_CORES = 1


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


def _count(env: dict[str, str], var: str) -> int | None:
    text = env.get(var, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def pool_size(environ: dict[str, str] | None = None) -> int:
    """Threads of TVM's pool: the user's ``TVM_NUM_THREADS``/``OMP_NUM_THREADS``, else
    ``EDGE_SR_THREADS_PER_CORE`` (default 1) per physical core."""
    env = os.environ if environ is None else environ
    for var in USER_VARS:
        if (n := _count(env, var)) is not None:
            return n
    return physical_cores() * (_count(env, PER_CORE_VAR) or THREADS_PER_CORE)


def prepare(environ: dict[str, str] | None = None) -> int:
    """Write the pool settings into the environment, where TVM and child processes read
    them: ``TVM_NUM_THREADS`` (``pool_size``), a spin count of 0 and, with more threads than
    cores, no pinning, each unless the user chose it. Must run before TVM creates a thread
    pool; ``import runtime`` calls it.

    Returns:
        The pool size.
    """
    env = os.environ if environ is None else environ
    n = pool_size(env)
    if not any(_count(env, var) for var in USER_VARS):
        env["TVM_NUM_THREADS"] = str(n)
    env.setdefault(SPIN_VAR, "0")
    if n > physical_cores():  # threads cannot be pinned one per core (TVM warns, twice)
        env.setdefault("TVM_BIND_THREADS", "0")
    return n


def configure_pool() -> int:
    """Make the calling thread's TVM pool use ``pool_size`` threads.

    TVM sizes a new pool by the cores it counts, whatever ``TVM_NUM_THREADS`` says above
    that; only ``runtime.config_threadpool`` sets more. The pool belongs to the calling
    thread: call this in the thread that runs the module (``load_local`` does; an RPC
    session's process calls it through ``edge_sr.configure_threads``).

    Returns:
        The threads the pool uses.
    """
    import tvm

    n = prepare()
    tvm.get_global_func("runtime.config_threadpool")(_BIG_CORES, n)
    return int(tvm.get_global_func("runtime.NumThreads")())


def register() -> None:
    """Register ``edge_sr.configure_threads`` for RPC sessions on this device."""
    import tvm

    tvm.register_global_func("edge_sr.configure_threads", configure_pool, override=True)
