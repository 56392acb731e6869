"""TVM's CPU pool: one thread per physical core (not TVM's x86 guess of half the CPUs), two
on request, workers that sleep at once, the user's settings first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.threads import THREADS_PER_CORE, physical_cores, prepare

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
        "EDGE_SR_THREADS_PER_CORE")


def _tvm_threads(extra_env: dict[str, str]) -> tuple[int, int, str]:
    """(pool before, pool after ``configure_pool``, stderr) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    code = ("import runtime, tvm; from runtime.threads import configure_pool; "
            "before = tvm.runtime.num_threads(); print(before, configure_pool())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra_env},
                         capture_output=True, text=True, check=True)
    before, after = out.stdout.strip().splitlines()[-1].split()
    return int(before), int(after), out.stderr


def test_pool_uses_every_physical_core():
    assert _tvm_threads({})[1] == THREADS_PER_CORE * physical_cores()


def test_two_threads_per_core_on_request_quietly():
    cores = physical_cores()
    before, after, err = _tvm_threads({"EDGE_SR_THREADS_PER_CORE": "2"})
    assert after == 2 * cores
    assert before == cores                  # TVM alone stops at its core count
    assert "Warning" not in err             # no pinning warning with more threads than cores


def test_pool_follows_the_user():
    assert _tvm_threads({"TVM_NUM_THREADS": "1"})[1] == 1
