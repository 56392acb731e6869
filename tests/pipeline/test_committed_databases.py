"""Every committed float32 tuning database still covers every kernel of its build.

A graph rewrite that changes a kernel silently leaves that kernel on TVM's unscheduled
default (tens of times slower on a CPU) until the database is retuned; this catches it.
int8 databases are left to their build tests: their lowering calibrates on training
crops (minutes each).
"""

from __future__ import annotations

import pytest

from edge_sr.models import MODELS
from edge_sr.pipeline.builder import BuildConfig, lower
from edge_sr.pipeline.database import TUNING_DIR, apply_tuning
from targets import TargetError, check_toolchain, get_target

pytestmark = pytest.mark.slow  # each lowers a whole model build (up to a minute)

FLOAT_DBS = sorted(p.name for p in TUNING_DIR.iterdir()
                   if p.is_dir() and p.name.endswith("-float32"))


def _config(key: str) -> BuildConfig:
    model, target, size, dtype = key.rsplit("-", 3)
    h, w = (int(v) for v in size.split("x"))
    return BuildConfig(model=model, target=target, size=(h, w), dtype=dtype,
                       reference_dataset="")


def _tuning_state(cfg: BuildConfig, key: str) -> dict:
    """``apply_tuning``'s state for ``cfg``'s lowered module with the database ``key``."""
    try:
        check_toolchain(get_target(cfg.target))
    except TargetError as exc:  # bash scripts/emulated-pi setup installs the cross compiler
        pytest.skip(str(exc))
    low = lower(cfg)
    return apply_tuning(low.mod, low.target, TUNING_DIR / key)[1]


@pytest.mark.parametrize("key", FLOAT_DBS)
def test_committed_database_tunes_every_kernel(key):
    state = _tuning_state(_config(key), key)
    assert state["tuned"] == state["kernels"], \
        f"{key}: {state['kernels'] - state['tuned']} kernels have no tuned schedule " \
        f"(edge-sr tune ... --missing-only tunes just those)"


SHARED = [(name, key) for name, spec in sorted(MODELS.items()) if spec.kernels_of
          for key in FLOAT_DBS if key.startswith(f"{spec.kernels_of}-")]


@pytest.mark.parametrize("name,key", SHARED)
def test_a_model_sharing_a_database_finds_every_kernel_in_it(name, key):
    """A pruned SRResNet builds with the 16-block net's database, every kernel tuned."""
    state = _tuning_state(BuildConfig(**{**_config(key).__dict__, "model": name}), key)
    assert state["tuned"] == state["kernels"] > 0


def test_there_are_committed_float_databases():
    assert len(FLOAT_DBS) >= 8
