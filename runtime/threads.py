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
needs. Workers here sleep at once (spin count 0). And the pool follows the load: one
thread per core while the cores are free, more while other processes keep at least
``BUSY_CORES`` of them busy (``cpuload``, ``threads_per_core``), so that the scheduler can
hand a shared core's time to the other threads and a preempted share holds up a small
part of a kernel. A quiet machine keeps one per core because a tuned kernel whose
parallel loop does not split evenly over more threads runs up to a quarter slower there.
``Engine`` re-checks every ``CHECK_PERIOD_S`` between calls. ``TVM_NUM_THREADS`` or
``EDGE_SR_THREADS_PER_CORE`` fix the pool instead. Figures: docs/pipeline.md, "Latency on
a busy machine".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import cpuload

SYSFS_CPU = Path("/sys/devices/system/cpu")
USER_VARS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")
# The TVM_NUM_THREADS that prepare() wrote (a child process inherits both): a count equal
# to it is ours, not the user's.
OURS_VAR = "EDGE_SR_TVM_NUM_THREADS"
SPIN_VAR = "TVM_THREAD_POOL_SPIN_COUNT"
PER_CORE_VAR = "EDGE_SR_THREADS_PER_CORE"
THREADS_PER_CORE = 1
BUSY_THREADS_PER_CORE = 4
BUSY_CORES = 0.5  # cores other processes keep busy, on average, for a machine to be busy
CHECK_PERIOD_S = 1.0  # how often an Engine looks at the load (between calls)
PROBE_S = 0.2  # how long configure_pool(probe=True) watches it
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
    """A user's positive count in ``var`` (None: unset, not a count, or ours)."""
    text = env.get(var, "").strip()
    if var == "TVM_NUM_THREADS" and text and text == env.get(OURS_VAR):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def adaptive(environ: dict[str, str] | None = None) -> bool:
    """Whether the pool follows the load: the user fixed no thread count."""
    env = os.environ if environ is None else environ
    return not any(_count(env, var) for var in (*USER_VARS, PER_CORE_VAR))


def threads_per_core(others: float) -> int:
    """The adaptive pool's threads per core while other processes keep ``others`` cores
    busy: one on a quiet machine, ``BUSY_THREADS_PER_CORE`` on a busy one.

    Design note: fewer threads once every core is shared (each thread then gets an even
    share anyway) measured worse: FSRCNN x2 on the 2-core host with two spinners, 2 / 4 /
    8 threads alternated in one process: fp32 2.44x / 1.79x / 1.63x slower than quiet,
    full int8 3.59x / 2.32x / 2.02x.
    """
    return THREADS_PER_CORE if others < BUSY_CORES else BUSY_THREADS_PER_CORE


def pool_size(environ: dict[str, str] | None = None, others: float = 0.0) -> int:
    """Threads of TVM's pool: the user's ``TVM_NUM_THREADS``/``OMP_NUM_THREADS``, else
    ``EDGE_SR_THREADS_PER_CORE`` per physical core, else ``threads_per_core`` for
    ``others`` cores kept busy by other processes."""
    env = os.environ if environ is None else environ
    for var in USER_VARS:
        if (n := _count(env, var)) is not None:
            return n
    return physical_cores() * (_count(env, PER_CORE_VAR) or threads_per_core(others))


def _largest_pool(env: dict[str, str]) -> int:
    if not adaptive(env):
        return pool_size(env)
    return physical_cores() * max(THREADS_PER_CORE, BUSY_THREADS_PER_CORE)


def prepare(environ: dict[str, str] | None = None) -> int:
    """Write the pool settings into the environment, where TVM and child processes read
    them: ``TVM_NUM_THREADS`` (``pool_size`` of a quiet machine), a spin count of 0 and,
    where the pool may hold more threads than cores, no pinning, each unless the user
    chose it. Must run before TVM creates a thread pool: the entry points call it
    (``edge-sr``, ``tune``, ``runtime.server``, ``configure_pool``), importing calls nothing.

    Returns:
        The pool size.
    """
    env = os.environ if environ is None else environ
    n = pool_size(env)
    if not any(_count(env, var) for var in USER_VARS):
        env["TVM_NUM_THREADS"] = env[OURS_VAR] = str(n)
    env.setdefault(SPIN_VAR, "0")
    if _largest_pool(env) > physical_cores():
        env.setdefault("TVM_BIND_THREADS", "0")  # one per core cannot be pinned (TVM warns)
    return n


def configure_pool(others: float = 0.0, probe: bool = False) -> int:
    """Make the calling thread's TVM pool use ``pool_size(others=...)`` threads.

    TVM gives a thread's pool its workers once, when the pool is created, from
    ``TVM_NUM_THREADS``, and uses at most that many ever after; only
    ``runtime.config_threadpool`` sets how many of them run. The pool is created here at
    its largest size so that it can follow the load. It belongs to the calling thread:
    call this in the thread that runs the module (``load_local`` does; an RPC session's
    process calls it through ``edge_sr.configure_threads``).

    Args:
        others: Cores other processes keep busy.
        probe: Measure ``others`` for ``PROBE_S`` first.

    Returns:
        The threads the pool uses.
    """
    import tvm

    prepare()
    if probe and adaptive():
        others = cpuload.probe(PROBE_S) or 0.0
    n = pool_size(others=others)
    env, saved = os.environ, dict(os.environ)
    env["TVM_NUM_THREADS"] = env[OURS_VAR] = str(_largest_pool(env))  # >= n
    try:
        tvm.get_global_func("runtime.config_threadpool")(_BIG_CORES, n)
    finally:
        for var in ("TVM_NUM_THREADS", OURS_VAR):
            if var in saved:
                env[var] = saved[var]
            else:
                env.pop(var, None)
    return int(tvm.get_global_func("runtime.NumThreads")())


class AdaptivePool:
    """Keeps the calling thread's pool sized to the load: ``update()`` between calls looks
    at most every ``period`` seconds at what other processes used since the last look.

    Args:
        period: Seconds between looks.
    """

    def __init__(self, period: float = CHECK_PERIOD_S):
        self.period, self.per_core = period, THREADS_PER_CORE
        self._last = cpuload.sample() if adaptive() else None

    def update(self) -> int:
        """Re-size the pool if the load changed; the threads per core it runs."""
        if self._last is None or time.monotonic() - self._last.wall < self.period:
            return self.per_core
        now = cpuload.sample()
        if now is None:
            return self.per_core
        others = cpuload.others_busy(self._last, now)
        self._last = now
        per_core = threads_per_core(others)
        if per_core != self.per_core:
            configure_pool(others)
            self.per_core = per_core
        return per_core


def register() -> None:
    """Register ``edge_sr.configure_threads() -> threads`` for RPC sessions on this device:
    the pool sized to the load it sees then."""
    import tvm

    tvm.register_global_func("edge_sr.configure_threads",
                             lambda: configure_pool(probe=True), override=True)
