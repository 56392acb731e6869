"""The declared build steps (``STEPS``): which run for every target x dtype x I/O, in order,
and that ``lower`` and ``build`` run exactly the list they record."""

from __future__ import annotations

import json

import pytest

import targets
from edge_sr.pipeline.builder import STEPS, BuildConfig, lower, steps_for

NAMES = [name for name, _, _ in STEPS]


def _steps(target: str, dtype: str, io: str, **kw) -> list[str]:
    cfg = BuildConfig(target=target, dtype=dtype, io=io, use_tuning=False, **kw)
    return steps_for(cfg, targets.get_target(target))


@pytest.mark.parametrize("io", ["float32", "uint8"])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_steps_follow_the_declared_order(target, dtype, io):
    steps = _steps(target, dtype, io)
    assert steps == sorted(steps, key=NAMES.index)  # in STEPS' order, each once
    front = (["torch_passes", "export"] if dtype == "float32" else
             ["quantize_int8", "lower_int8"])
    assert steps[:3] == ["load", *front]
    assert ("uint8_io" in steps) == (io == "uint8")
    assert ("host_twin" in steps) == (target != "host")
    assert ("default_schedule" in steps) == (targets.get_target(target).kind == "llvm")
    # int8 always measures quality and guards it; float only when asked for a dataset
    assert ("int8_guard" in steps) == ("quantize_int8" in steps) == (dtype == "int8")
    assert "reference_quality" in steps


def test_the_default_build_of_the_pi():
    assert _steps("rpi4", "float32", "float32", reference_dataset="") == [
        "load", "torch_passes", "export", "relax_passes", "default_schedule", "compile",
        "export_library", "host_twin"]


def test_a_database_only_when_one_is_asked_for_or_committed(tmp_path):
    tspec = targets.get_target("host")
    with_db = BuildConfig(model="fsrcnn_x2", target="host", size=(360, 640))
    assert "tuning_database" in steps_for(with_db, tspec)  # committed one
    none = BuildConfig(model="fsrcnn_x2", target="host", size=(11, 13))
    assert "tuning_database" not in steps_for(none, tspec)
    named = BuildConfig(model="fsrcnn_x2", target="host", size=(11, 13),
                        tuning_db=str(tmp_path / "db"))
    assert "tuning_database" in steps_for(named, tspec)  # a missing one fails in one line


def test_lower_runs_the_steps_up_to_the_relax_passes():
    state = lower(BuildConfig(model="fsrcnn_tiny_x2", target="rpi4", size=(32, 32),
                              reference_dataset=""))
    assert state.mod is not None and state.passes and state.executable is None
    assert state.steps[state.steps.index("relax_passes") + 1] == "default_schedule"


def test_the_manifest_records_the_steps_that_ran(host_artifact):
    manifest = json.loads((host_artifact / "manifest.json").read_text())
    assert manifest["steps"] == ["load", "torch_passes", "export", "relax_passes",
                                 "default_schedule", "compile", "export_library"]
