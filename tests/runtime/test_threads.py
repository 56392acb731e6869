"""TVM's CPU runtime runs one thread per physical core, not TVM's x86 guess of half the CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.threads import physical_cores, use_physical_cores

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
    ({}, None),
])
def test_user_choice_wins(env, expected):
    env = dict(env)
    n = use_physical_cores(env)
    assert n == (expected if expected is not None else physical_cores())
    if expected is None:
        assert env["TVM_NUM_THREADS"] == str(physical_cores())


def _tvm_threads(extra_env: dict[str, str]) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    code = "import runtime, tvm; print(tvm.runtime.num_threads())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra_env},
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_tvm_pool_uses_every_physical_core():
    assert _tvm_threads({}) == physical_cores()
    assert _tvm_threads({"TVM_NUM_THREADS": "1"}) == 1
