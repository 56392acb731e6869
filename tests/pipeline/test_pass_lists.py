"""The declared pass order (``PIPELINE``): the list each target x dtype x layout gets.

``pass_lists.json`` holds the expected lists; a change to ``PIPELINE`` that moves a pass
in some build shows here as a diff of that build's list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvm

import targets
from edge_sr.pipeline.passes import LAYOUTS, PASSES, PIPELINE, passes_for

EXPECTED = json.loads((Path(__file__).parent / "pass_lists.json").read_text())
# The registry's device targets, and two x86 CPUs for the host (its own CPU varies).
X86 = {"x86-cascadelake": {"kind": "llvm", "mcpu": "cascadelake"},
       "x86-haswell": {"kind": "llvm", "mcpu": "haswell"}}


def _target(name: str) -> tvm.target.Target:
    if name in X86:
        return tvm.target.Target(X86[name])
    return targets.tvm_target(targets.get_target(name))


def test_every_target_dtype_and_layout_has_a_snapshot():
    names = sorted([n for n in targets.TARGETS if n != "host"] + list(X86))
    assert sorted(EXPECTED) == sorted(f"{n} {d} {lay}" for n in names
                                      for d in ("float32", "int8") for lay in LAYOUTS)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_pass_list(key):
    name, dtype, layout = key.split()
    assert passes_for(_target(name), layout, dtype) == EXPECTED[key]


def test_the_pipeline_names_every_pass_once_in_its_order():
    declared = [name for name, _ in PIPELINE]
    assert set(declared) == set(PASSES)
    for names in EXPECTED.values():  # every build's list is a subsequence of PIPELINE
        it = iter(declared)
        assert all(any(n == d for d in it) for n in names), names
