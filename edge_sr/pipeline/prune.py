"""Tuning database upkeep: ``prune`` keeps what a model's builds can use.

A database folder collects every record ever measured for its key, including those of
workloads that no longer exist (a rewritten epilogue, a changed calibration: int8 zero
points and scales are immediates in the kernels) and thousands of slow candidates.
``build`` reads only the best record of each current workload and ``tune`` seeds its
search from the best few, so the rest is weight in the repository.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import targets as target_registry

from .builder import BuildConfig, BuildError, lower
from .database import open_database, tuning_dir
from .provenance import RECORDS, WORKLOAD, record_cpu
from .tune import check_database


@dataclass
class PruneConfig:
    """Arguments of ``prune``.

    Attributes:
        build: The build whose database is pruned (``tuning_db`` or the committed one).
        keep: Best records kept per workload (the search seeds from these on a rerun).
        dry_run: Count only; write nothing.
    """

    build: BuildConfig = field(default_factory=BuildConfig)
    keep: int = 8
    dry_run: bool = False


def variants(cfg: BuildConfig) -> list[BuildConfig]:
    """The builds that share ``cfg``'s database folder.

    The folder's key is model, target, size and dtype, so both image I/O forms use it,
    and for int8 both the default (mixed) build and the all-8-bit one (``bench`` times
    the latter).
    """
    out = []
    for io in ("float32", "uint8"):
        for fallback in ((True, False) if cfg.dtype == "int8" else (cfg.fallback,)):
            out.append(replace(cfg, io=io, fallback=fallback, reference_dataset=""))
    return out


def _workloads(cfg: BuildConfig, log) -> list:
    """The kernels (one IRModule each) of every build variant."""
    from tvm.s_tir import meta_schedule as ms

    mods = []
    for v in variants(cfg):
        low = lower(v)
        tasks = ms.relax_integration.extract_tasks(low.mod, low.target)
        log(f"  {v.dtype} io={v.io}" + ("" if v.dtype != "int8" else
                                         f" fallback={v.fallback}") + f": {len(tasks)} kernels")
        mods.extend(t.dispatched[0] for t in tasks)
    return mods


def prune(cfg: PruneConfig, log=lambda msg: print(msg, file=sys.stderr)) -> dict:
    """Rewrite a database with the best ``keep`` records of each workload its builds use.

    The new database is written into a folder beside the old one and swapped in only
    when complete (two renames), so an interrupted prune leaves the database as it was.

    Returns:
        ``{"database", "records_before", "records_after", "workloads_before",
        "workloads_after", "bytes_before", "bytes_after", "seconds"}``.

    Raises:
        BuildError: no database, or an unreadable or foreign one (``check_database``).
    """
    from tvm.s_tir import meta_schedule as ms

    if cfg.keep < 1:
        raise BuildError(f"--keep must be at least 1, not {cfg.keep}")
    t0 = time.time()
    tspec = target_registry.get_target(cfg.build.target)
    work = tuning_dir(cfg.build, tspec.name)
    files = [work / WORKLOAD, work / RECORDS]
    if not all(f.is_file() for f in files):
        raise BuildError(f"no tuning database at {work} (nothing to prune)")
    # A corrupt or foreign database is refused before the (minutes of) lowering.
    before = check_database(work, target_registry.tvm_target(tspec))
    log(f"pruning {work}: lowering the builds that use it")
    mods = _workloads(cfg.build, log)
    old = open_database(work, allow_missing=False)
    stage, retired = work.with_name(work.name + ".prune"), work.with_name(work.name + ".old")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    tmp = [stage / f.name for f in files]
    new = open_database(stage)
    kept = workloads = 0
    for mod in mods:
        if not old.has_workload(mod) or new.has_workload(mod):  # stale, or seen already
            continue
        # the best `keep` of each CPU: one database holds schedules for several CPUs
        per_cpu: Counter = Counter()
        records = []
        for rec in old.get_top_k(old.commit_workload(mod), 1 << 16):  # fastest first
            cpu = record_cpu(rec)
            per_cpu[cpu] += 1
            if per_cpu[cpu] <= cfg.keep:
                records.append(rec)
        if not records:
            continue
        wl = new.commit_workload(mod)
        workloads += 1
        for rec in reversed(records):  # best last: the file then reads worst to best
            new.commit_tuning_record(ms.database.TuningRecord(
                rec.trace, wl, rec.run_secs, rec.target, rec.args_info))
            kept += 1
    result = {"database": str(work), "records_before": before, "records_after": kept,
              "workloads_before": _lines(files[0]), "workloads_after": workloads,
              "bytes_before": sum(f.stat().st_size for f in files)}
    if kept == 0:
        log("  no record matches these builds: the database is left as it is")
    result["bytes_after"] = (result["bytes_before"] if kept == 0 else
                             sum(f.stat().st_size for f in tmp if f.exists()))
    if cfg.dry_run or kept == 0:
        shutil.rmtree(stage)
    else:
        # Other files in the folder (notes) move along; the two JSONs are the new ones.
        for f in work.iterdir():
            if f.name not in (WORKLOAD, RECORDS):
                shutil.copy2(f, stage / f.name)
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(work, retired)
        os.replace(stage, work)
        shutil.rmtree(retired)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())
