"""Tuning: every kernel gets a schedule that build applies; bad databases are refused."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edge_sr.pipeline import BuildConfig, BuildError, build
from edge_sr.pipeline.tune import MS_LOGGER, RECORDS, TuneConfig, check_database, tune
from runtime.engine import load_local


def _cfg(tmp_path, **kw) -> BuildConfig:
    return BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(32, 32),
                       out=str(tmp_path / "art"), reference_dataset="", **kw)


@pytest.mark.slow
def test_tune_then_build_applies_every_schedule_and_computes_the_same(tmp_path):
    db = tmp_path / "db"
    res = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(db)), trials=8, per_iter=2))
    assert res["state"] == "tuned" and res["tuned"] == res["kernels"] == 4
    assert res["records"] >= 8
    tuned = build(_cfg(tmp_path, tuning_db=str(db)))
    manifest = json.loads((tuned / "manifest.json").read_text())
    assert manifest["tuning"]["state"] == "tuned" and manifest["tuning"]["tuned"] == 4
    plain = build(BuildConfig(**{**_cfg(tmp_path).__dict__, "out": str(tmp_path / "plain"),
                                 "use_tuning": False, "default_schedule": False}))
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    assert np.allclose(load_local(tuned)(x), load_local(plain)(x), atol=1e-5)
    # resumable: a second run appends to the same database
    again = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(db)), trials=8, per_iter=2,
                            seed=1))
    assert again["records"] > res["records"]


@pytest.mark.slow
def test_tuning_starts_from_the_default_schedules(tmp_path):
    # with no trials at all, every kernel's default schedule is measured and committed:
    # the search starts from it, and the database is never worse than no database
    db = tmp_path / "db"
    res = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(db)), trials=0))
    assert res["state"] == "tuned" and res["records"] == res["kernels"] == 4
    again = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(db)), trials=0))
    assert again["records"] == 4  # the same traces are not measured twice
    tuned = build(_cfg(tmp_path, tuning_db=str(db)))
    plain = build(BuildConfig(**{**_cfg(tmp_path).__dict__, "out": str(tmp_path / "plain"),
                                 "use_tuning": False, "default_schedule": False}))
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    assert np.allclose(load_local(tuned)(x), load_local(plain)(x), atol=1e-5)


@pytest.mark.slow
def test_records_that_never_met_the_current_default_schedule_are_named(tmp_path, monkeypatch):
    db = tmp_path / "db"
    tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(db)), trials=0))
    fresh = json.loads((build(_cfg(tmp_path, tuning_db=str(db))) / "manifest.json").read_text())
    assert fresh["tuning"]["stale"] == [] and fresh["tuning"]["warning"] is None
    # the default schedules change (a newer edge-sr): the records were never measured
    # against them, and the build says how to measure them
    import edge_sr.pipeline.default_schedule as ds

    real = ds.default_trace

    def changed(mod, target):
        sch = real(mod, target)
        if sch is not None:
            sch.get_loops(sch.get_child_blocks(sch.get_sblock("root"))[0])  # another trace
        return sch

    monkeypatch.setattr(ds, "default_trace", changed)
    out = build(BuildConfig(**{**_cfg(tmp_path, tuning_db=str(db)).__dict__,
                               "out": str(tmp_path / "later")}))
    tuning = json.loads((out / "manifest.json").read_text())["tuning"]
    assert len(tuning["stale"]) == 4 and tuning["state"] == "tuned"
    assert "4 of 4 kernels' tuned schedules were never measured" in tuning["warning"]
    assert "--trials 0" in tuning["warning"]
    tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(db)), trials=0))  # measures them
    out = build(BuildConfig(**{**_cfg(tmp_path, tuning_db=str(db)).__dict__,
                               "out": str(tmp_path / "refreshed")}))
    assert json.loads((out / "manifest.json").read_text())["tuning"]["stale"] == []


@pytest.fixture
def foreign_handlers():
    """Handlers MetaSchedule did not make, on its logger (as a user's logging setup or a
    test runner may leave them): tuning must work around them and leave them in place."""
    logger = logging.getLogger(MS_LOGGER)
    handlers = [logging.NullHandler(), logging.NullHandler()]
    handlers[1].set_name("users-own")
    for h in handlers:
        logger.addHandler(h)
    yield handlers
    for h in handlers:
        logger.removeHandler(h)


@pytest.mark.slow
def test_tune_named_kernels_then_only_the_missing_ones(tmp_path, foreign_handlers):
    db = str(tmp_path / "db")
    one = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=db), trials=2, per_iter=2,
                          kernels=["transpose"]))  # the depth-to-space kernel only
    assert (one["kernels"], one["tuned"], one["trials"]) == (4, 1, 2)
    rest = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=db), trials=6, per_iter=2,
                           missing_only=True))  # three kernels, two candidates each
    assert rest["state"] == "tuned" and rest["trials"] == 6
    again = tune(TuneConfig(build=_cfg(tmp_path, tuning_db=db), trials=4, per_iter=2,
                            missing_only=True))
    assert again["trials"] == 0 and again["records"] == rest["records"]
    assert all(h in logging.getLogger(MS_LOGGER).handlers for h in foreign_handlers)


def test_unknown_kernel_name_is_a_one_line_error(tmp_path):
    with pytest.raises(BuildError, match="no kernel of fsrcnn_tiny_x2 matches --kernel nope"):
        tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(tmp_path / "db")), trials=1,
                        kernels=["nope"]))
    assert not (tmp_path / "db").exists()  # no empty database left for builds to find


def _target(kind="llvm", mtriple=None):
    import tvm

    d = {"kind": kind}
    if mtriple:
        d["mtriple"] = mtriple
    return tvm.target.Target(d)


def test_corrupt_database_line_is_named(tmp_path):
    (tmp_path / RECORDS).write_text('[0, [[], [1e-5], {"kind": "llvm"}, []]]\n{"truncat')
    with pytest.raises(BuildError, match="corrupt at line 2"):
        check_database(tmp_path, _target())


def test_foreign_database_is_refused(tmp_path):
    rec = [0, [[], [1e-5], {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, []]]
    (tmp_path / RECORDS).write_text(json.dumps(rec) + "\n")
    with pytest.raises(BuildError, match="records for llvm aarch64, not llvm x86_64"):
        check_database(tmp_path, _target())
    assert check_database(tmp_path, _target(mtriple="aarch64-linux-gnu")) == 1


def test_device_tuning_needs_the_board(tmp_path):
    cfg = BuildConfig(model="fsrcnn_tiny_x2", target="rpi4", size=(32, 32),
                      reference_dataset="", tuning_db=str(tmp_path / "db"))
    with pytest.raises(BuildError, match="give --device HOST:PORT .* or --tracker HOST:PORT "
                                         "--key rpi4"):
        tune(TuneConfig(build=cfg, trials=1))
    with pytest.raises(BuildError, match="not both"):
        tune(TuneConfig(build=cfg, trials=1, device="127.0.0.1:9090",
                        tracker="127.0.0.1:9190"))


@pytest.mark.slow
@pytest.mark.device
def test_tune_one_board_without_a_tracker(tmp_path):
    # the emulated Pi's server, reached directly: default schedules measured, then a
    # search round; the database builds, and a rerun continues it
    cfg = BuildConfig(model="fsrcnn_tiny_x2", target="rpi4", size=(32, 32),
                      reference_dataset="", tuning_db=str(tmp_path / "db"),
                      out=str(tmp_path / "art"))
    res = tune(TuneConfig(build=cfg, trials=4, per_iter=1, device="127.0.0.1:9090",
                          timeout=120, number=1))
    assert res["state"] == "tuned" and res["records"] >= res["kernels"] + 1
    assert res["estimate_ms"] > 0
    again = tune(TuneConfig(build=cfg, trials=4, per_iter=1, device="127.0.0.1:9090",
                            timeout=120, number=1, seed=1))
    assert again["records"] > res["records"]
    manifest = json.loads((build(cfg) / "manifest.json").read_text())
    assert manifest["tuning"]["state"] == "tuned"


@pytest.mark.slow
def test_device_candidates_are_aarch64_libraries_in_folders_of_their_own(tmp_path):
    """The tuner removes a candidate's parent folder after measuring it: each must have
    its own (a file straight in /tmp once took /tmp with it)."""
    from pathlib import Path

    from tvm.s_tir import meta_schedule as ms

    from edge_sr.pipeline.builder import lower
    from edge_sr.pipeline.tune import _make_builder

    low = lower(BuildConfig(model="fsrcnn_tiny_x2", target="rpi4", size=(32, 32),
                            reference_dataset=""))
    task = ms.relax_integration.extract_tasks(low.mod, low.target)[0]
    (res,) = _make_builder("aarch64-linux-gnu-gcc").build(
        [ms.builder.BuilderInput(task.dispatched[0], low.target)])
    assert res.error_msg is None
    path = Path(res.artifact_path)
    assert path.parent.name.startswith("edge-sr-tune-") and path.parent != Path("/tmp")
    elf = path.read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # AArch64


def test_per_iter_below_one_is_refused_before_any_work(tmp_path):
    with pytest.raises(BuildError, match="--per-iter must be at least 1"):
        tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(tmp_path / "db")), per_iter=0))
    assert not (tmp_path / "db").exists()


def test_cli_budget_flags_reach_the_tune_config(tmp_path):
    from edge_sr.cli import build_parser, tune_config

    args = build_parser().parse_args(["tune", "--model", "fsrcnn_tiny_x2", "--size", "32x32",
                                      "--trials", "5", "--per-iter", "2", "--timeout", "300",
                                      "--minutes", "1.5", "--number", "1", "--missing-only",
                                      "--kernel", "conv2d", "--kernel", "transpose"])
    cfg = tune_config(args, args.trials)
    assert (cfg.trials, cfg.per_iter, cfg.timeout, cfg.minutes, cfg.number) == \
        (5, 2, 300.0, 1.5, 1)
    assert cfg.missing_only and cfg.kernels == ["conv2d", "transpose"]
    plain = tune_config(build_parser().parse_args(["tune"]), 1)
    assert not plain.missing_only and plain.kernels == []
    with pytest.raises(BuildError, match="--timeout must be positive"):
        tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(tmp_path / "db")), timeout=0))
    with pytest.raises(BuildError, match="--number must be at least 1"):
        tune(TuneConfig(build=_cfg(tmp_path, tuning_db=str(tmp_path / "db")), number=0))
