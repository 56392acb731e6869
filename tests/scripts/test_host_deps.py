"""The README commands install the host tools before any step that needs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash")


def test_check_names_the_missing_cross_compiler(tmp_path):
    # A PATH with none of the tools: what a fresh machine has.
    out = subprocess.run([BASH, str(ROOT / "scripts/host-deps"), "--check"],
                         env={"PATH": str(tmp_path)}, capture_output=True, text=True)
    assert out.returncode == 1
    assert "gcc-aarch64-linux-gnu" in out.stdout and "qemu-user-static" in out.stdout


def test_check_passes_when_every_tool_is_on_path(tmp_path):
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64-static", "debootstrap", "socat"):
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    out = subprocess.run([BASH, str(ROOT / "scripts/host-deps"), "--check"],
                         env={"PATH": str(tmp_path)}, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("script", ["scripts/main.sh", "scripts/test.sh"])
def test_readme_commands_install_host_tools_first(script):
    lines = [ln.strip() for ln in (ROOT / script).read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    first_deps = next(i for i, ln in enumerate(lines) if "scripts/host-deps" in ln)
    needs_tools = [i for i, ln in enumerate(lines)
                   if any(k in ln for k in ("compile/build.py", "emulated-pi", "edge-sr ",
                                            "pytest", "pip install"))]
    assert needs_tools and first_deps < min(needs_tools)


def test_emulated_pi_status_says_what_is_missing_without_tvm(tmp_path):
    # A python3 without TVM first on PATH (the system one outside the venv).
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named tvm' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = subprocess.run([BASH, str(ROOT / "scripts/emulated-pi"), "status"],
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin",
                              "EDGE_SR_CACHE": str(tmp_path / "cache")},
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "cannot import tvm" in out.stderr and len(out.stderr.strip().splitlines()) == 1
