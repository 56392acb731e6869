"""Where a tuning database was tuned: recorded, and a build for another CPU says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_sr.pipeline import BuildConfig, build
from edge_sr.pipeline.provenance import (
    RECORDS,
    TUNED_ON,
    WORKLOAD,
    cpu_records,
    foreign_note,
    measurer,
    read_tuned_on,
    record_cpus,
)
from edge_sr.pipeline.tune import TuneConfig, tune

ROOT = Path(__file__).resolve().parents[2]


def _records(work: Path, mcpus: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps([0, [[], [], {"kind": "llvm", "mcpu": m}, []]]) for m in mcpus]
    (work / RECORDS).write_text("\n".join(lines) + "\n")


def test_records_are_counted_per_cpu(tmp_path):
    _records(tmp_path, ["znver4"] * 3 + ["rocketlake"])
    assert record_cpus(tmp_path) == {"znver4": 3, "rocketlake": 1}
    assert record_cpus(tmp_path / "none") == {}


def test_a_database_for_another_cpu_gets_one_line_with_the_tune_command(tmp_path):
    _records(tmp_path, ["znver4"] * 40 + ["rocketlake"] * 2)
    note = foreign_note(tmp_path, "rocketlake", "edge-sr tune --target host")
    assert "tuned for znver4 (40 of 42 records), not this build's rocketlake" in note
    assert note.endswith("`edge-sr tune --target host`") and "\n" not in note
    assert foreign_note(tmp_path, "znver4", "x") is None  # most records fit
    # a build that applies only its own CPU's records: its two are used, no line
    assert foreign_note(tmp_path, "rocketlake", "x", own_only=True) is None
    note = foreign_note(tmp_path, "skylake", "edge-sr tune --target host", own_only=True)
    assert "holds no schedules for this build's skylake" in note
    assert "default schedules run instead" in note and "\n" not in note


def test_cpu_records_keeps_one_cpus_records(tmp_path):
    _records(tmp_path / "db", ["znver4"] * 3 + ["rocketlake"] * 2 + ["znver4"])
    (tmp_path / "db" / WORKLOAD).write_text("workloads\n")
    assert cpu_records(tmp_path / "db", "rocketlake", tmp_path / "mine") == 2
    assert record_cpus(tmp_path / "mine") == {"rocketlake": 2}
    assert (tmp_path / "mine" / WORKLOAD).read_text() == "workloads\n"
    assert cpu_records(tmp_path / "db", "skylake", tmp_path / "none") == 0


def test_an_emulated_board_is_named(tmp_path):
    _records(tmp_path, ["cortex-a72"] * 5)
    (tmp_path / TUNED_ON).write_text(json.dumps(
        {"mcpu": "cortex-a72", "measured": "rpc", "machine": "aarch64",
         "cpu": "Intel(R) Xeon(R) Processor", "emulated": True}))
    note = foreign_note(tmp_path, "cortex-a72", "edge-sr tune --target rpi4 --device H:P")
    assert "measured under emulation (on Intel(R) Xeon(R) Processor), not on a real " \
           "cortex-a72" in note and "--device H:P" in note


def test_emulation_is_told_from_the_cpu_an_aarch64_process_sees():
    assert measurer({"machine": "aarch64", "cpu": "Intel(R) Xeon(R) Processor"})["emulated"]
    assert not measurer({"machine": "aarch64", "cpu": "Cortex-A72"})["emulated"]
    here = measurer(None)
    assert here["measured"] == "local" and not here["emulated"]


@pytest.mark.slow
def test_tune_records_its_measurer_and_build_warns_on_another_cpu(tmp_path):
    db = tmp_path / "db"
    cfg = BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(32, 32),
                      reference_dataset="", tuning_db=str(db), out=str(tmp_path / "art"))
    tune(TuneConfig(build=cfg, trials=0))  # default schedules only: quick
    who = read_tuned_on(db)
    assert who["measured"] == "local" and who["mcpu"] == record_cpus(db).most_common(1)[0][0]
    m = json.loads((build(cfg) / "manifest.json").read_text())["tuning"]
    assert m["warning"] is None and m["tuned_on"]["measured"] == "local"
    text = (db / RECORDS).read_text()
    (db / RECORDS).write_text(text.replace(f'"mcpu": "{who["mcpu"]}"', '"mcpu": "otherchip"')
                              .replace(f'"mcpu":"{who["mcpu"]}"', '"mcpu":"otherchip"'))
    proc = subprocess.run([sys.executable, "-m", "edge_sr", "build", "--model", "fsrcnn_tiny_x2",
                           "--target", "host", "--size", "32x32", "--tuning-db", str(db),
                           "--out", str(tmp_path / "art2"), "--reference-dataset", ""],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warning = [ln for ln in proc.stderr.splitlines() if "warning:" in ln]
    assert len(warning) == 1 and "tuned for otherchip" in warning[0]
    assert "edge-sr tune --target host --model fsrcnn_tiny_x2 --size 32x32" in warning[0]


@pytest.mark.slow
def test_a_committed_database_for_another_cpu_leaves_the_build_on_default_schedules(
        tmp_path, monkeypatch):
    import edge_sr.pipeline.database as database

    cfg = BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(32, 32),
                      reference_dataset="", out=str(tmp_path / "art"))
    key = database.tuning_key(cfg.model, "host", cfg.size, cfg.dtype)
    db = tmp_path / "tuning" / key
    tune(TuneConfig(build=BuildConfig(**{**cfg.__dict__, "tuning_db": str(db)}), trials=0))
    monkeypatch.setattr(database, "TUNING_DIR", tmp_path / "tuning")
    mine = json.loads((build(cfg) / "manifest.json").read_text())["tuning"]
    assert mine["state"] == "tuned" and mine["warning"] is None
    text = (db / RECORDS).read_text()  # the same records, now another CPU's
    mcpu = record_cpus(db).most_common(1)[0][0]
    (db / RECORDS).write_text(text.replace(f'"mcpu": "{mcpu}"', '"mcpu": "otherchip"')
                              .replace(f'"mcpu":"{mcpu}"', '"mcpu":"otherchip"'))
    other = json.loads((build(cfg) / "manifest.json").read_text())["tuning"]
    assert other["state"] == "untuned" and other["tuned"] == 0
    assert other["default_scheduled"] > 0
    assert "holds no schedules for this build's" in other["warning"]
    # named explicitly, the same database is applied whole
    named = BuildConfig(**{**cfg.__dict__, "tuning_db": str(db)})
    forced = json.loads((build(named) / "manifest.json").read_text())["tuning"]
    assert forced["state"] == "tuned" and "tuned for otherchip" in forced["warning"]
