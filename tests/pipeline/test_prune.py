"""Database pruning: only the records a model's builds use stay, and builds do not change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_sr.pipeline import BuildConfig, BuildError, build
from edge_sr.pipeline.provenance import RECORDS, WORKLOAD
from edge_sr.pipeline.prune import PruneConfig, prune, variants
from edge_sr.pipeline.tune import TuneConfig, tune
from runtime.engine import load_local


def _cfg(tmp_path, size=(32, 32), **kw) -> BuildConfig:
    return BuildConfig(model="fsrcnn_tiny_x2", target="host", size=size,
                       out=str(tmp_path / "art"), reference_dataset="",
                       tuning_db=str(tmp_path / "db"), **kw)


def test_int8_variants_cover_both_fallbacks_and_both_io_forms(tmp_path):
    got = {(v.io, v.fallback) for v in variants(_cfg(tmp_path, dtype="int8"))}
    assert got == {("float32", True), ("float32", False), ("uint8", True), ("uint8", False)}
    assert {v.io for v in variants(_cfg(tmp_path))} == {"float32", "uint8"}


def test_missing_database_is_a_one_line_error(tmp_path):
    with pytest.raises(BuildError, match="no tuning database at"):
        prune(PruneConfig(build=_cfg(tmp_path)))


def test_foreign_database_is_refused_before_lowering(tmp_path, monkeypatch):
    import edge_sr.pipeline.prune as prune_module

    db = tmp_path / "db"
    db.mkdir()
    (db / WORKLOAD).write_text("")
    rec = [0, [[], [1e-5], {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, []]]
    (db / RECORDS).write_text(json.dumps(rec) + "\n")
    monkeypatch.setattr(prune_module, "lower",
                        lambda cfg: pytest.fail("lowered a foreign database"))
    with pytest.raises(BuildError, match="records for llvm aarch64"):
        prune(PruneConfig(build=_cfg(tmp_path)))
    assert (db / RECORDS).read_text() == json.dumps(rec) + "\n"


@pytest.mark.slow
def test_prune_drops_foreign_workloads_and_keeps_the_build(tmp_path):
    db = tmp_path / "db"
    # The same folder tuned at two sizes: the 16x16 kernels are workloads the 32x32
    # build never uses (as a rewritten kernel leaves its old records behind).
    tune(TuneConfig(build=_cfg(tmp_path), trials=8, per_iter=2))
    tune(TuneConfig(build=_cfg(tmp_path, size=(16, 16)), trials=4, per_iter=1))
    before = tmp_path / "before"
    tuned = build(BuildConfig(**{**_cfg(tmp_path).__dict__, "out": str(before)}))
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    y_before = load_local(tuned)(x)
    sizes = {f: (db / f).stat().st_size for f in (WORKLOAD, RECORDS)}

    dry = prune(PruneConfig(build=_cfg(tmp_path), keep=1, dry_run=True))
    assert {f: (db / f).stat().st_size for f in (WORKLOAD, RECORDS)} == sizes
    assert not (tmp_path / "db.prune").exists()

    res = prune(PruneConfig(build=_cfg(tmp_path), keep=1))
    assert res["workloads_before"] == 8 and res["workloads_after"] == 4
    assert res["records_after"] == dry["records_after"] == 4 < res["records_before"]
    assert res["bytes_after"] < res["bytes_before"]
    assert len((db / RECORDS).read_text().splitlines()) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("db")) == ["db"]
    after = build(BuildConfig(**{**_cfg(tmp_path).__dict__, "out": str(tmp_path / "after")}))
    manifest = json.loads((after / "manifest.json").read_text())
    assert manifest["tuning"]["state"] == "tuned" and manifest["tuning"]["tuned"] == 4
    assert np.array_equal(load_local(after)(x), y_before)
