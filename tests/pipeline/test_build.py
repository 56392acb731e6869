"""compile/build: artifacts, manifest, atomicity, errors, IR dumps, CUDA compilation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import targets
from edge_sr.pipeline import BuildConfig, BuildError, build
from edge_sr.pipeline import builder as build_module
from runtime.artifact import read_manifest, sha256_file

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, weights, **kw) -> BuildConfig:
    base = dict(model="fsrcnn_tiny_x2", target="host", size=(32, 32), out=str(tmp_path),
                weights=str(weights), reference_dataset="")
    base.update(kw)
    return BuildConfig(**base)


def test_manifest_describes_the_library(host_artifact):
    m = read_manifest(host_artifact)
    assert host_artifact.name == "fsrcnn_tiny_x2-host-float32"
    assert m["library"]["sha256"] == sha256_file(host_artifact / m["library"]["file"])
    assert m["input"]["shape"] == [1, 1, 32, 32] and m["scale"] == 2 and m["colour"] == "y"
    assert m["tuning"]["state"] == "untuned" and m["tvm_version"].startswith("0.27")
    assert m["target"]["tvm"]["kind"] == "llvm" and m["receptive_radius"] == 3


def test_failed_build_leaves_previous_artifact_intact(tmp_path, random_weights, monkeypatch):
    w = random_weights("fsrcnn_tiny_x2")
    first = build(_cfg(tmp_path, w))
    before = (first / "manifest.json").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("linker exploded")

    monkeypatch.setattr(build_module, "export_library", boom)
    with pytest.raises(RuntimeError):
        build(_cfg(tmp_path, w))
    assert (first / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temp leftovers


def test_aarch64_build_has_host_twin_and_arm_library(tmp_path, random_weights):
    art = build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="arm",
                     reference_dataset="set5"))
    m = read_manifest(art)
    assert art.name == "fsrcnn_tiny_x2-rpi4-float32" and m["target"]["arch"] == "aarch64"
    head = (art / "model.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[18] == 0xB7  # e_machine = EM_AARCH64
    assert m["host_library"]["sha256"] == sha256_file(art / "host.so")
    ref = m["reference"]
    assert ref["dataset"] == "set5"
    assert ref["psnr_tvm_host"] == pytest.approx(ref["psnr_torch"], abs=0.01)


def test_dump_ir_writes_one_file_per_pass(tmp_path, random_weights):
    build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), dump_ir=str(tmp_path / "ir")))
    files = sorted(p.name for p in (tmp_path / "ir" / "host").iterdir())
    assert files[0] == "00_import.py" and files[-1].endswith("dead_code_elimination.py")
    assert "fused_" in (tmp_path / "ir" / "host" / files[-1]).read_text()


def test_unknown_target_lists_valid_ones(tmp_path, random_weights):
    with pytest.raises(targets.TargetError, match="valid targets: .*rpi4.*arm"):
        build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="rpi9"))


def test_missing_cross_compiler_names_the_package(tmp_path, random_weights, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(targets.TargetError, match="apt-get install gcc-aarch64-linux-gnu"):
        build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="rpi4"))


@pytest.mark.parametrize("kw,needle", [({"dtype": "int4"}, "unknown dtype int4"),
                                       ({"dtype": "int8", "dynamic": True}, "static --size")])
def test_unsupported_dtype_combinations_are_refused(tmp_path, random_weights, kw, needle):
    with pytest.raises(BuildError, match=needle):
        build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), **kw))


def test_tile_too_small_for_receptive_field(tmp_path, random_weights):
    with pytest.raises(BuildError, match="receptive radius"):
        build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), size=(6, 6)))


@pytest.mark.parametrize("content", ["{not json", '[["truncated'])
def test_broken_tuning_database_is_a_clear_error(tmp_path, random_weights, content):
    db = tmp_path / "db"
    db.mkdir()
    (db / "database_workload.json").write_text(content)
    (db / "database_tuning_record.json").write_text(content)
    with pytest.raises(BuildError, match="tuning database .* unreadable") as err:
        build(_cfg(tmp_path / "out", random_weights("fsrcnn_tiny_x2"), tuning_db=str(db)))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_empty_tuning_database_builds_untuned_and_says_so(tmp_path, random_weights):
    db = tmp_path / "db"
    db.mkdir()
    for name in ("database_workload.json", "database_tuning_record.json"):
        (db / name).write_text("")
    art = build(_cfg(tmp_path / "out", random_weights("fsrcnn_tiny_x2"), tuning_db=str(db)))
    tuning = read_manifest(art)["tuning"]
    assert tuning["state"] == "untuned" and tuning["database"] == str(db)


def test_dynamic_shape_build(tmp_path, random_weights):
    art = build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), size=(48, 48), dynamic=True))
    assert read_manifest(art)["input"]["dynamic"] is True


NO_CUDA_TOOLKIT = pytest.mark.skipif(targets.find_cuda_toolkit() is None,
                                     reason="no CUDA toolkit (nvcc) on PATH or /usr/local/cuda*")


def _has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    except OSError:
        return False


@NO_CUDA_TOOLKIT
def test_cuda_target_compiles_and_exports(tmp_path, random_weights):
    art = build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="gpu"))
    m = read_manifest(art)
    assert m["target"]["kind"] == "cuda" and m["target"]["tvm"]["arch"] == "sm_90"
    assert m["passes"][-1] == "dlight_gpu" and m["cuda"]["arch"] == "sm_90"
    assert m["cuda"]["kernels"] >= 3  # compiled by the toolkit's nvcc during the build
    # the device code is in it: one thread-bound (dlight) kernel per fused conv
    # epilogue, compiled by the toolkit, not a host-side loop nest
    assert (art / "model.so").read_bytes().count(b"conv2d") >= 3


@pytest.mark.slow
@NO_CUDA_TOOLKIT
def test_cuda_int8_build_compiles_its_integer_kernels(tmp_path, random_weights):
    # dlight's cross-thread reduction rule fails to lower TVM's fused int8 conv
    # epilogues; the int8 pass list schedules them with dlight_gpu_spatial instead
    art = build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="cuda", dtype="int8",
                     enforce_guard=False, calib_images=8))
    m = read_manifest(art)
    assert m["passes"][-1] == "dlight_gpu_spatial" and m["dtype"] == "int8"
    assert m["cuda"]["kernels"] >= 3 and m["cuda"]["fatbin_bytes"] > 0


@NO_CUDA_TOOLKIT
@pytest.mark.skipif(_has_gpu(), reason="checks the error of a machine without a GPU")
def test_cuda_artifact_without_a_gpu_is_a_one_line_error(tmp_path, random_weights):
    from runtime.artifact import ArtifactError
    from runtime.engine import load_local

    art = build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="gpu"))
    with pytest.raises(ArtifactError) as err:
        load_local(art)
    assert "\n" not in str(err.value) and ("CUDA" in str(err.value) or "cuda" in str(err.value))


@pytest.mark.gpu
@NO_CUDA_TOOLKIT
@pytest.mark.skipif(not _has_gpu(), reason="no CUDA GPU (nvidia-smi -L fails)")
def test_cuda_module_matches_the_host_module_on_the_gpu(tmp_path, random_weights):
    import numpy as np

    from runtime.engine import load_local

    art = build(_cfg(tmp_path, random_weights("fsrcnn_tiny_x2"), target="gpu"))
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    gpu, host = load_local(art), load_local(art, "host_library")
    np.testing.assert_allclose(gpu(x), host(x), atol=1e-4)


def test_no_cuda_toolkit_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(targets.shutil, "which", lambda name: None)
    monkeypatch.setattr(targets.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(targets.os, "access", lambda path, mode: False)
    with pytest.raises(targets.TargetError, match="needs the CUDA toolkit") as err:
        targets.check_toolchain(targets.get_target("cuda"))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_entry_point_default_and_errors(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "compile" / "build.py"), "--target",
                           "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "valid targets" in proc.stderr
    help_text = subprocess.run([sys.executable, str(ROOT / "compile" / "build.py"), "--help"],
                               capture_output=True, text=True).stdout
    assert "--target" in help_text and "--dynamic" in help_text


@pytest.mark.slow
def test_default_build_is_arm_with_committed_weights(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "compile" / "build.py"), "--target", "arm",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "ecbsr_m4c16_x2-rpi4-float32" / "manifest.json").read_text())
    assert m["reference"]["psnr_torch"] > m["reference"]["psnr_bicubic"]
