"""TVM's CPU pool: one thread per physical core (not TVM's x86 guess of half the CPUs), more
while other processes keep the cores busy, workers that sleep at once, the user's settings
first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import cpuload, load, threads
from runtime.threads import (
    BUSY_THREADS_PER_CORE,
    THREADS_PER_CORE,
    adaptive,
    physical_cores,
    pool_size,
    prepare,
)

ROOT = Path(__file__).resolve().parents[2]


def fake_sysfs(root: Path, topology: list[tuple[int, int]]) -> Path:
    """``cpuN/topology/{physical_package_id,core_id}`` for each (package, core) given."""
    for cpu, (package, core) in enumerate(topology):
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


@pytest.mark.parametrize("topology,cores", [
    ([(0, 0), (0, 1)], 2),                        # a VM without SMT: TVM alone would take 1
    ([(0, 0), (0, 0), (0, 1), (0, 1)], 2),        # two hyper-threads per core
    ([(0, 0), (0, 1), (1, 0), (1, 1)], 4),        # same core ids on two sockets
    ([(0, 0), (0, 1), (0, 2), (0, 3)], 4),        # a Pi
])
def test_physical_cores_counts_smt_siblings_once(tmp_path, topology, cores):
    sysfs = fake_sysfs(tmp_path, topology)
    assert physical_cores(list(range(len(topology))), sysfs) == cores


def test_cpus_outside_the_affinity_and_undescribed_cpus(tmp_path):
    sysfs = fake_sysfs(tmp_path, [(0, 0), (0, 0), (0, 1), (0, 1)])
    assert physical_cores([0, 1], sysfs) == 1       # both siblings of core 0
    assert physical_cores([0, 7], sysfs) == 2       # cpu7 has no topology: its own core


@pytest.mark.parametrize("env,expected", [
    ({"TVM_NUM_THREADS": "3"}, 3),
    ({"OMP_NUM_THREADS": "5"}, 5),
    ({"TVM_NUM_THREADS": "0"}, None),               # not a count: ours is used
    ({"TVM_NUM_THREADS": "many"}, None),
    ({"EDGE_SR_THREADS_PER_CORE": "2"}, "two per core"),
    ({}, None),
])
def test_user_choice_wins(env, expected):
    env = dict(env)
    n = prepare(env)
    cores = physical_cores()
    want = {None: THREADS_PER_CORE * cores, "two per core": 2 * cores}.get(expected, expected)
    assert n == want
    if not isinstance(expected, int):
        assert env["TVM_NUM_THREADS"] == str(want)
    assert env["TVM_THREAD_POOL_SPIN_COUNT"] == "0"


def test_a_users_spin_count_is_kept():
    env = {"TVM_THREAD_POOL_SPIN_COUNT": "300000"}
    prepare(env)
    assert env["TVM_THREAD_POOL_SPIN_COUNT"] == "300000"


OURS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "TVM_THREAD_POOL_SPIN_COUNT", "TVM_BIND_THREADS",
        "EDGE_SR_THREADS_PER_CORE", "EDGE_SR_TVM_NUM_THREADS")


def _tvm_threads(extra_env: dict[str, str], probe: bool = False) -> tuple[int, int, str]:
    """(pool before, pool after ``configure_pool``, stderr) in a fresh process; with
    ``probe``, no pool before (TVM never grows a pool past the size it was created at)."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    before = "0" if probe else "tvm.runtime.num_threads()"
    code = ("import tvm; from runtime.threads import configure_pool, prepare; prepare(); "
            f"before = {before}; print(before, configure_pool(probe={probe}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra_env},
                         capture_output=True, text=True, check=True)
    before, after = out.stdout.strip().splitlines()[-1].split()
    return int(before), int(after), out.stderr


def test_pool_uses_every_physical_core():
    assert _tvm_threads({})[1] == THREADS_PER_CORE * physical_cores()


@pytest.mark.slow
def test_two_threads_per_core_on_request_quietly():
    cores = physical_cores()
    before, after, err = _tvm_threads({"EDGE_SR_THREADS_PER_CORE": "2"})
    assert after == 2 * cores
    assert before == cores                  # TVM alone stops at its core count
    assert "Warning" not in err             # no pinning warning with more threads than cores


@pytest.mark.slow
def test_pool_follows_the_user():
    assert _tvm_threads({"TVM_NUM_THREADS": "1"})[1] == 1


def test_a_count_prepare_wrote_is_not_the_users():
    env: dict[str, str] = {}
    prepare(env)
    assert adaptive(env) and env["TVM_NUM_THREADS"] == str(physical_cores())
    assert env["TVM_BIND_THREADS"] == "0"  # the busy pool has more threads than cores
    env["TVM_NUM_THREADS"] = "3"           # the user's own, later
    assert not adaptive(env) and pool_size(env, others=1.0) == 3


@pytest.mark.slow
def test_the_pool_grows_under_load_and_a_fixed_pool_does_not():
    spinners = load.start(1, 60)
    try:
        cores = physical_cores()
        assert _tvm_threads({}, probe=True)[1] == cores * BUSY_THREADS_PER_CORE
        assert _tvm_threads({"TVM_NUM_THREADS": "1"}, probe=True)[1] == 1
        assert _tvm_threads({"EDGE_SR_THREADS_PER_CORE": "2"}, probe=True)[1] == 2 * cores
    finally:
        load.stop(spinners)


def _samples(others: list[float]) -> list[cpuload.Sample]:
    """One sample a second, other processes using ``others[i]`` cores in second i."""
    out, busy = [cpuload.Sample(0.0, 0.0, 0.0)], 0.0
    for i, cores in enumerate(others, 1):
        busy += cores + 0.5  # this process used half a core all along
        out.append(cpuload.Sample(busy, 0.5 * i, float(i)))
    return out


@pytest.mark.parametrize("others,per_core", [
    (0.0, THREADS_PER_CORE), (0.4, THREADS_PER_CORE), (0.6, BUSY_THREADS_PER_CORE),
    (2.0, BUSY_THREADS_PER_CORE),
])
def test_threads_per_core_follow_the_load(others, per_core):
    assert threads.threads_per_core(others) == per_core


def test_adaptive_pool_follows_the_load_once_a_period(monkeypatch):
    samples = iter(_samples([0.1, 1.0, 0.9, 0.2, 0.0]))
    clock = iter([0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    sizes = []
    monkeypatch.setattr(cpuload, "sample", lambda: next(samples))
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads, "configure_pool", lambda others: sizes.append(others))
    monkeypatch.setattr(threads, "adaptive", lambda: True)
    pool = threads.AdaptivePool(period=1.0)
    # 0.5 s: too soon to look; then quiet, busy, busy, quiet, quiet: the pool is resized
    # at each change only
    assert [pool.update() for _ in range(6)] == [1, 1, 4, 4, 1, 1]
    assert sizes == pytest.approx([1.0, 0.2])


@pytest.mark.parametrize("text,cpus,seconds", [
    ("cpu  9 9 9 9 9 9 9 9\ncpu0 100 50 20 900 7 3 2 5\ncpu1 10 0 0 990 0 0 0 0\n", None, 1.35),
    ("cpu  9 9 9 9 9 9 9 9\ncpu0 100 50 20 900 7 3 2 5\ncpu1 10 0 0 990 0 0 0 0\n", {1}, 0.10),
])
def test_busy_time_leaves_out_idle_iowait_steal_and_niced_work(text, cpus, seconds, monkeypatch):
    monkeypatch.setattr(cpuload, "_ticks_per_second", lambda: 100)
    # cpu0: user 100 + system 20 + irq 3 + softirq 2 ticks; nice 50, iowait 7, steal 5 not
    assert cpuload.busy_seconds(text, cpus) == pytest.approx(seconds)


def test_others_busy_is_the_cpu_time_beyond_our_own():
    a, b = cpuload.Sample(10.0, 1.0, 100.0), cpuload.Sample(13.0, 2.0, 102.0)
    assert cpuload.others_busy(a, b) == pytest.approx(1.0)   # (3 - 1) s over 2 s
    assert cpuload.others_busy(b, b) == 0.0


def test_a_local_engine_looks_at_the_load_before_each_call():
    import numpy as np

    from runtime.engine import Engine

    class Pool:
        looks = 0

        def update(self):
            self.looks += 1

    pool = Pool()
    engine = Engine({"main": lambda x: x}, None, {}, pool)
    x = np.zeros((1, 1, 2, 2), np.float32)
    engine(x), engine(x)
    assert pool.looks == 2


def test_a_pool_configured_quiet_can_grow_later():
    # TVM never grows a pool past the workers it was created with: configure_pool creates
    # it at its largest, whatever it runs first
    code = ("import runtime; from runtime.threads import configure_pool; "
            "print(configure_pool(), configure_pool(others=1.0), configure_pool())")
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    cores = physical_cores()
    assert [int(n) for n in out[-3:]] == [cores, BUSY_THREADS_PER_CORE * cores, cores]


def _env_after(code: str) -> dict[str, str]:
    """The pool variables a fresh process holds after running ``code``."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    probe = (f"; import json, os, sys; names = {OURS!r}; print(json.dumps("
             "{k: os.environ[k] for k in names if k in os.environ}), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code + probe], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stderr.strip().splitlines()[-1])


def test_importing_the_packages_leaves_the_environment_alone():
    assert _env_after("import runtime, runtime.engine, edge_sr, edge_sr.pipeline, "
                      "edge_sr.benchmark") == {}


def test_the_cli_sets_the_pool_up_before_it_runs_a_command():
    env = _env_after("from edge_sr.cli import main; main(['targets'])")
    assert env["TVM_NUM_THREADS"] == str(THREADS_PER_CORE * physical_cores())
    assert env["TVM_THREAD_POOL_SPIN_COUNT"] == "0"
