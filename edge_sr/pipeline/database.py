"""Tuning databases: where a build's database lives and how its schedules are applied.

A database is MetaSchedule's JSON pair (``database_workload.json``,
``database_tuning_record.json``) in ``targets/tuning/MODEL-TARGET-HxW-DTYPE``; its records
carry the CPU they were measured on (``provenance``), and a build applies its own CPU's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import tvm
from tvm import relax
from tvm.tirx import PrimFunc

import targets as target_registry

from ..errors import last_line
from ..models import get_spec
from .config import BuildConfig, BuildError
from .default_schedule import is_scheduled
from .provenance import RECORDS, WORKLOAD, cpu_records, record_traces

TUNING_DIR = Path(target_registry.__file__).resolve().parent / "tuning"


def tuning_key(model: str, target: str, size: tuple[int, int], dtype: str) -> str:
    """Folder name of the tuning database for one (model, target, shape, dtype)."""
    return f"{model}-{target}-{size[0]}x{size[1]}-{dtype}"


def tuning_dir(cfg: BuildConfig, target: str) -> Path:
    """The database folder of a build: ``cfg.tuning_db``, else the committed one (that of
    the model whose kernels it shares, ``ModelSpec.kernels_of``, if any)."""
    spec = get_spec(cfg.model)
    key = tuning_key(spec.kernels_of or spec.name, target, cfg.size, cfg.dtype)
    return Path(cfg.tuning_db) if cfg.tuning_db else TUNING_DIR / key


def open_database(work: Path, allow_missing: bool = True):
    """MetaSchedule's JSON database in folder ``work``, tensor intrinsics registered first.

    A tensorized schedule names its intrinsic, which must be registered first: ours
    (``vnni.DOTS``) cost nothing; TVM's (sdot) exist only once ``tvm.s_tir.tensor_intrin``
    is imported, which parses hundreds of TVMScript functions (seconds), so that import
    happens only for databases that name one of them.
    """
    from tvm.s_tir import meta_schedule as ms

    records = work / RECORDS
    text = records.read_text() if records.is_file() else ""
    if '"Tensorize"' in text:
        from .vnni import DOTS, register_intrinsic

        register_intrinsic()  # ours: two functions, little parsing to speak of
        if text.count('"Tensorize"') > sum(text.count(f'"{name}"') for name in DOTS):
            import tvm.s_tir.tensor_intrin  # noqa: F401 - TVM's (sdot)
    return ms.database.JSONDatabase(str(work / WORKLOAD), str(records),
                                    allow_missing=allow_missing)


def model_kernels(mod: tvm.IRModule) -> list[str]:
    """The kernels the model's ``main`` calls: those a tuning database is about (a
    ``--frame`` build's own colour kernels are scheduled by ``frame_io``)."""
    called = {gv.name_hint for gv in relax.analysis.all_global_vars(mod["main"])}
    return [gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, PrimFunc) and gv.name_hint in called]


def apply_tuning(mod: tvm.IRModule, target: tvm.target.Target, db_path: Path | None,
                 cpu: str | None = None, check_stale: bool = False) -> tuple[tvm.IRModule, dict]:
    """Replace kernels by their tuned schedules from a MetaSchedule JSON database.

    Args:
        cpu: Apply only the records tuned for this ``mcpu`` (None: every record).
            MetaSchedule itself takes a workload's fastest record whatever CPU measured it.
        check_stale: Also list the kernels whose records never met their current default
            schedule (``stale_kernels``; CPU targets), as ``stale``.

    Returns:
        The module and a tuning record: ``state`` (untuned/partial/tuned), kernel counts.
    """
    kernels = model_kernels(mod)
    if db_path is None:
        return mod, {"state": "untuned", "database": None, "kernels": len(kernels), "tuned": 0}
    work = Path(db_path)
    files = [work / WORKLOAD, work / RECORDS]
    if not all(f.is_file() for f in files):
        raise BuildError(f"tuning database {work} lacks {files[0].name}/{files[1].name}")
    with tempfile.TemporaryDirectory(prefix="edge-sr-db-") as tmp:
        source = work
        if cpu is not None:
            cpu_records(work, cpu, Path(tmp))
            source = Path(tmp)
        try:
            db = open_database(source, allow_missing=False)
            # opt_level 3: below it the pass is skipped without a word.
            with target, db, tvm.transform.PassContext(opt_level=3):
                applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        except Exception as exc:  # noqa: BLE001 - TVM raises plain errors for bad JSON
            raise BuildError(f"tuning database {work} is unreadable: {last_line(exc)}") from None
        stale = stale_kernels(mod, target, db) if check_stale else []
    mod = applied
    tuned = sum(1 for name in kernels if is_scheduled(mod[name]))
    state = "tuned" if tuned == len(kernels) else ("partial" if tuned else "untuned")
    return mod, {"state": state, "database": str(work), "kernels": len(kernels), "tuned": tuned,
                 "records_for": cpu, **({"stale": stale} if check_stale else {})}


def tune_command(cfg: BuildConfig, tspec: target_registry.TargetSpec,
                 budget: str = "--minutes 30") -> str:
    """The command that tunes this build's database (on the board, for device targets)."""
    return (f"edge-sr tune --target {tspec.name} --model {cfg.model} --size "
            f"{cfg.size[0]}x{cfg.size[1]} --dtype {cfg.dtype}"
            + (" --device HOST:PORT" if tspec.is_remote else "") + f" {budget}")


def stale_kernels(mod: tvm.IRModule, target: tvm.target.Target, db) -> list[str]:
    """Kernels the database tuned without ever measuring their current default schedule.

    ``tune`` measures each kernel's default schedule first (``tune.seed_defaults``), so
    the database's best is never slower than the default at tuning time. Default
    schedules improve with the code; a record tuned before the current one was never
    compared with it, and may now be the slower of the two. ``edge-sr tune --trials 0``
    measures the current defaults, and the build then takes the faster.

    Args:
        mod: The module before the database is applied.
        db: The open database (the records that apply: ``apply_tuning``'s).

    Returns:
        Task names of the stale kernels.
    """
    from tvm.s_tir import meta_schedule as ms

    from .default_schedule import default_trace

    stale = []
    for task in ms.relax_integration.extract_tasks(mod, target):
        kernel = task.dispatched[0]
        if not db.has_workload(kernel):
            continue
        # commit_workload returns the stored workload (nothing written: it exists)
        traces = record_traces(db, db.commit_workload(kernel))
        sch = default_trace(kernel, target) if traces else None
        if sch is not None and str(sch.trace) not in traces:
            stale.append(task.task_name)
    return stale


def stale_note(stale: list[str], kernels: int, cmd: str) -> str | None:
    """One line when some kernels' records predate their current default schedule;
    ``cmd`` measures the defaults (``tune_command(..., budget="--trials 0")``)."""
    if not stale:
        return None
    return (f"{len(stale)} of {kernels} kernels' tuned schedules were never measured against "
            f"their current default schedule, which may now be faster ({', '.join(stale[:3])}"
            f"{', ...' if len(stale) > 3 else ''}); `{cmd}` measures the defaults and the "
            "faster schedule is kept")
