"""``tune``: MetaSchedule tuning of a model's kernels for (target, input shape, dtype).

The module tuned is exactly the one ``build`` compiles (``builder.lower``), so the
workloads in the database match at build time. The database is TVM's JSON pair
(``database_workload.json``, ``database_tuning_record.json``) in
``targets/tuning/MODEL-TARGET-HxW-DTYPE/`` by default, which ``build`` applies on its own.

Measurement is local for ``host``; device targets measure on the device through a TVM
tracker (``RPCRunner``), with candidates cross-linked into shared libraries by the
target's cross compiler (TVM's default exporter makes a .tar that needs gcc on the board).
Tuning runs in rounds; records are committed as they are measured, so an interrupted run
keeps them and a rerun continues from the best schedules found (the evolutionary search
seeds from the database).
"""

from __future__ import annotations

import logging
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import tvm

import targets as target_registry
from runtime.threads import prepare

from ..errors import last_line
from .builder import BuildConfig, BuildError, lower
from .database import apply_tuning, open_database, tuning_dir
from .provenance import (
    RECORDS,
    cpu_best,
    measurer,
    record_targets,
    record_traces,
    target_cpu,
    write_tuned_on,
)


@dataclass
class TuneConfig:
    """Arguments of ``tune``.

    Attributes:
        build: Model, target, size, dtype and weights, as for ``build``; its
            ``tuning_db`` is the database tuned into (default ``targets/tuning/<key>``).
        trials: Total measured candidates this run (over all kernels).
        minutes: Wall-clock budget (0: none); checked between rounds.
        per_iter: Candidates per kernel per search iteration.
        tracker: ``HOST:PORT`` of the tracker that grants the device (device targets).
        device: ``HOST:PORT`` of one board's RPC server, measured directly (no tracker).
        key: Device key at the tracker (default: the target's ``rpc_key``).
        timeout: Seconds one candidate may take to build or run.
        number: Runs averaged into one measurement (1 suits kernels that take seconds
            on an emulated board: each run counts against ``timeout``).
        seed: Search seed.
        population: Evolutionary search population (TVM's default is 512; a smaller one
            shortens each search step on a 2-core machine; not compared against 512 here).
        missing_only: Tune only the kernels with no record in the database yet (after a
            graph rewrite changed some kernels: the tuned ones keep their schedules, and
            the whole budget goes to the new ones).
        kernels: Tune only the kernels whose name contains one of these (empty: all).
    """

    build: BuildConfig = field(default_factory=BuildConfig)
    trials: int = 64
    minutes: float = 0.0
    per_iter: int = 16
    tracker: str | None = None
    device: str | None = None
    key: str = ""
    timeout: float = 60.0
    number: int = 3
    seed: int = 0
    population: int = 128
    missing_only: bool = False
    kernels: list[str] = field(default_factory=list)


def _arch(mtriple: str) -> str:
    """CPU family of a target triple; no triple means this machine."""
    return mtriple.split("-")[0] if mtriple else platform.machine()


def check_database(work: Path, target: tvm.target.Target) -> int:
    """Validate an existing database folder; returns its record count.

    Raises:
        BuildError: unreadable JSON (with the line), or records tuned for another
            kind of machine (a foreign database would silently tune nothing).
    """
    arch = _arch(str(target.attrs.get("mtriple", "") or ""))
    count = 0
    for n, rec_target in record_targets(work):
        if rec_target is None:
            raise BuildError(f"tuning database {work / RECORDS} is corrupt at line {n} "
                             f"(an interrupted write? delete that line)")
        rec_arch = _arch(rec_target.get("mtriple", ""))
        if rec_target.get("kind") != target.kind.name or rec_arch != arch:
            raise BuildError(f"tuning database {work} holds records for "
                             f"{rec_target.get('kind')} {rec_arch}, not {target.kind.name} "
                             f"{arch}: use another --tuning-db")
        count += 1
    return count


def _make_builder(cross_compiler: str | None):
    """An in-process MetaSchedule builder.

    TVM's ``LocalBuilder`` starts fresh worker processes for every batch, and each worker
    imports ``tvm.s_tir.tensor_intrin``, which parses ~500 TVMScript functions through
    ``inspect.stack()``: 25-40 s per batch on this machine for kernels that compile in
    under a second. Building here pays that import once per run. Cross targets are linked
    into shared libraries by the target's cross compiler.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
    from tvm.support import cc

    def export(rt_mod) -> str:
        if cross_compiler is None:
            return default_export(rt_mod)
        # A folder of its own: the runner's cleanup removes the artifact's parent folder
        # (a file straight in /tmp would take /tmp with it).
        path = str(Path(tempfile.mkdtemp(prefix="edge-sr-tune-")) / "candidate.so")
        rt_mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
        return path

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    path = export(default_build(item.mod, item.target, None))
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as exc:  # noqa: BLE001 - a failed candidate, not a failed run
                    results.append(ms.builder.BuilderResult(None, str(exc)[-2000:]))
            return results

    return InProcessBuilder()


def alloc_args_from_host(session, device, args_info, alloc_repeat: int) -> list:
    """Random kernel arguments made on the host and copied to the device.

    MetaSchedule's default fills them on the device with ``tvm.contrib.random``, which the
    runtime-only TVM on our devices does not have.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for _ in range(alloc_repeat):
        args = []
        for _kind, dtype, shape in args_info:
            if dtype.startswith(("int", "uint")):
                arr = rng.integers(0, 8, size=shape).astype(dtype)
            else:
                arr = (rng.random(shape) * 2 - 1).astype(dtype)
            args.append(tvm.runtime.tensor(arr, device))
        out.append(args)
    return out


def direct_session(host: str, port: int, rpc_config):
    """An RPC session straight to one board's server (MetaSchedule's runner otherwise
    asks a tracker for one). Module-level, so that the runner's worker process can
    unpickle it."""
    from tvm import rpc

    return rpc.connect(host, port, session_timeout=rpc_config.session_timeout_sec)


def _builder_runner(cfg: TuneConfig, tspec: target_registry.TargetSpec):
    import functools

    from tvm.s_tir import meta_schedule as ms

    from ..device.rpc import parse_device

    evaluator = ms.runner.EvaluatorConfig(number=cfg.number, repeat=1, min_repeat_ms=0,
                                          enable_cpu_cache_flush=False)
    builder = _make_builder(tspec.cross_compiler)
    if not tspec.is_remote:
        return builder, ms.runner.LocalRunner(timeout_sec=cfg.timeout,
                                              evaluator_config=evaluator)
    if not (cfg.tracker or cfg.device):
        raise BuildError(f"tuning for {tspec.name} measures on the device: give --device "
                         f"HOST:PORT (the board's RPC server, python -m runtime.server) or "
                         f"--tracker HOST:PORT --key {tspec.rpc_key}")
    if cfg.tracker and cfg.device:
        raise BuildError("give --device (one board) or --tracker (a pool of boards), not both")
    host, port = parse_device(cfg.tracker or cfg.device)
    # With --device the config's tracker fields carry the board's own address (the
    # runner checks they are set); direct_session connects to it without a tracker.
    session = None if cfg.tracker else functools.partial(direct_session, host, port)
    runner = ms.runner.RPCRunner(
        ms.runner.RPCConfig(tracker_host=host, tracker_port=port,
                            tracker_key=cfg.key or tspec.rpc_key,
                            session_timeout_sec=int(cfg.timeout)),
        evaluator_config=evaluator, f_create_session=session,
        f_alloc_argument=alloc_args_from_host)
    return builder, runner


MS_LOGGER = "tvm.s_tir.meta_schedule"


@contextmanager
def own_logging():
    """Detach the handlers MetaSchedule did not make from its logger while it tunes.

    Each tuning context re-runs ``logging.config.dictConfig`` with the names of the
    handlers found on MetaSchedule's logger: an unnamed one (a test runner's, a user's
    ``addHandler``) crashes it (``'NoneType' object has no attribute 'format'``) and a
    foreign named one is unknown to the new configuration. They are re-attached after.
    """
    logger = logging.getLogger(MS_LOGGER)
    foreign = [h for h in logger.handlers if not (h.get_name() or "").startswith(MS_LOGGER)]
    for handler in foreign:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in foreign:
            logger.addHandler(handler)


def _tune_round(tasks: list, trials: int, seed: int, cfg: TuneConfig,
                builder, runner, database) -> None:
    """One search round of ``trials`` candidates over ``tasks`` (what ``tune_relax`` does
    after extracting the tasks, so that a subset can be tuned)."""
    from tvm.s_tir import meta_schedule as ms

    from .templates import space_generator

    with tempfile.TemporaryDirectory() as logs, own_logging():
        contexts, weights = [], []
        for task in tasks:  # a space generator (with its rules' state) per task
            ctx, weight = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=[task], work_dir=logs, space=space_generator(task.target),
                strategy=ms.search_strategy.EvolutionarySearch(population_size=cfg.population),
                seed=seed)
            contexts += ctx
            weights += weight
        ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=logs,
                           max_trials_global=trials, num_trials_per_iter=cfg.per_iter,
                           builder=builder, runner=runner, database=database)


def _measurer(cfg: TuneConfig, tspec: target_registry.TargetSpec) -> dict:
    """What measures this run (``provenance.measurer``): this machine, or the board."""

    if not tspec.is_remote:
        return measurer(None)
    from ..device.rpc import connect, device_info

    try:
        info = device_info(connect(cfg.device, tracker=cfg.tracker,
                                   key=cfg.key or tspec.rpc_key, timeout=cfg.timeout))
    except Exception as exc:  # noqa: BLE001 - the runner reports an unreachable board
        raise BuildError(f"cannot reach the board at {cfg.device or cfg.tracker}: "
                         f"{last_line(exc)}"
                         ) from None
    return measurer(info or {"machine": tspec.arch})


def seed_defaults(tasks: list, target: tvm.target.Target, builder, runner, database) -> int:
    """Measure each kernel's default schedule and commit it as a tuning record.

    The search then starts from it (the evolutionary search seeds its population from
    the database's best records) and the database's best is never slower than what a
    build without the database would get. A default schedule the database already holds
    for this CPU (same trace and ``mcpu``) is not measured again.

    Returns:
        How many default schedules were measured and committed.
    """
    from tvm.s_tir import meta_schedule as ms

    from .default_schedule import default_trace

    mcpu = target_cpu(target)
    todo = []
    for task in tasks:
        sch = default_trace(task.dispatched[0], target)
        if sch is None:
            continue
        workload = database.commit_workload(task.dispatched[0])
        if str(sch.trace) in record_traces(database, workload, mcpu):
            continue
        todo.append((sch, workload))
    if not todo:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch, _ in todo])
    inputs, kept = [], []
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    for (sch, workload), b in zip(todo, built):
        if b.error_msg is None:
            args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
            inputs.append(ms.runner.RunnerInput(b.artifact_path, device, args))
            kept.append((sch, workload, args))
    done = 0
    for (sch, workload, args), future in zip(kept, runner.run(inputs)):
        result = future.result()
        if result.error_msg is None:
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [float(t) for t in result.run_secs], target, args))
            done += 1
    return done


def estimate_ms(tasks: list, database, mcpu: str) -> float | None:
    """The model's latency if every kernel ran its best schedule measured for CPU ``mcpu``
    (sum over kernels of calls x best mean time); None while some kernel has no record."""
    total = 0.0
    for task in tasks:
        best = cpu_best(database, database.commit_workload(task.dispatched[0]), mcpu)
        if not best or not best[0].run_secs:
            return None
        secs = [float(t) for t in best[0].run_secs]
        total += task.weight * sum(secs) / len(secs)
    return total * 1e3


@contextmanager
def _progress(cfg: TuneConfig, log):
    """A progress bar over the trials: best model estimate so far and time left (the
    trial rate's projection, capped by ``--minutes``); plain log lines when stderr is
    not a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=cfg.trials, unit="trial", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty())

    def update(done: int, best: float | None, t0: float) -> None:
        spent = time.time() - t0
        left = spent / done * (cfg.trials - done) if done else None
        if cfg.minutes:
            left = min(left if left is not None else 1e9, max(0.0, cfg.minutes * 60 - spent))
        best_txt = f"{best:.2f} ms" if best is not None else "-"
        left_txt = f"{left / 60:.1f} min" if left is not None else "-"
        bar.update(done - bar.n)
        bar.set_postfix_str(f"best {best_txt}, {left_txt} left")
        if bar.disable and done:
            log(f"  {done}/{cfg.trials} trials, {spent:.0f} s, model estimate {best_txt}, "
                f"{left_txt} left")

    try:
        yield update
    finally:
        bar.close()


def tune(cfg: TuneConfig, log=lambda msg: print(msg, file=sys.stderr)) -> dict:
    """Tune every kernel of the model; returns what the database now covers.

    Returns:
        ``{"database", "kernels", "tuned", "state", "trials", "records", "seconds"}``;
        ``state`` is ``tuned`` only when every kernel has a schedule in the database.
    """
    from tvm.s_tir import meta_schedule as ms

    if cfg.per_iter < 1:
        raise BuildError(f"--per-iter must be at least 1, not {cfg.per_iter}")
    if cfg.timeout <= 0:
        raise BuildError(f"--timeout must be positive, not {cfg.timeout:g}")
    if cfg.number < 1:
        raise BuildError(f"--number must be at least 1, not {cfg.number}")
    prepare()  # the measurement workers inherit TVM's pool settings from this process
    t0 = time.time()
    low = lower(replace(cfg.build, reference_dataset=""))
    tasks = ms.relax_integration.extract_tasks(low.mod, low.target)
    if cfg.kernels:  # before the database folder exists: a typo must not create one
        tasks = [t for t in tasks if any(k in t.task_name for k in cfg.kernels)]
        if not tasks:
            raise BuildError(f"no kernel of {cfg.build.model} matches --kernel "
                             f"{' '.join(cfg.kernels)}")
    work = tuning_dir(cfg.build, low.tspec.name)
    work.mkdir(parents=True, exist_ok=True)
    before = check_database(work, low.target)
    builder, runner = _builder_runner(cfg, low.tspec)
    database = open_database(work)
    mcpu = target_cpu(low.target)
    if cfg.missing_only:  # no record for this CPU: another CPU's schedules do not count
        tasks = [t for t in tasks
                 if not cpu_best(database, database.commit_workload(t.dispatched[0]), mcpu)]
    # A round gives every kernel one search step, and at least four steps in all: the
    # cost model starts afresh each round and only ranks candidates after a first step.
    round_size = cfg.per_iter * max(len(tasks), 4)
    log(f"tuning {work.name}: {len(tasks)} kernels"
        + (" without a record" if cfg.missing_only else "") + f", {cfg.trials} trials"
        + (f" or {cfg.minutes:g} min" if cfg.minutes else "") + f", database {work} "
        f"({before} records already)")
    write_tuned_on(work, mcpu, _measurer(cfg, low.tspec))
    seeded = seed_defaults(tasks, low.target, builder, runner, database)
    if seeded:
        log(f"  {seeded} default schedules measured: the search starts from them")
    done = 0
    with _progress(cfg, log) as bar:
        bar(0, estimate_ms(tasks, database, mcpu), t0)
        while tasks and done < cfg.trials and not (cfg.minutes
                                                   and time.time() - t0 > cfg.minutes * 60):
            n = min(round_size, cfg.trials - done)
            _tune_round(tasks, n, cfg.seed + done, cfg, builder, runner, database)
            done += n
            bar(done, estimate_ms(tasks, database, mcpu), t0)
    state = apply_tuning(low.mod, low.target, work,
                         mcpu if low.tspec.kind == "llvm" else None)[1]
    records = check_database(work, low.target)
    if state["state"] != "tuned":
        hint = ("this run tuned only the kernels --kernel named; --missing-only tunes the "
                "rest" if cfg.kernels else
                f"give more trials (>= {round_size} covers every kernel once)")
        log(f"  {state['kernels'] - state['tuned']} of {state['kernels']} kernels have no "
            f"tuned schedule yet: {hint}")
    return {**state, "trials": done, "records": records,
            "estimate_ms": estimate_ms(tasks, database, mcpu),
            "seconds": round(time.time() - t0, 1)}
