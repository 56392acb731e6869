"""The zoo's long trainings: every recipe as one resumable run, advanced within a budget.

Runs live in ``edge_sr/weights/runs/MODEL/`` and are committed with the weights, so a
later call (on this machine or another) continues each schedule where it stopped and
training time adds up. A model whose recipe starts from another model (FSRCNN x3/x4 from
x2, the k-means GhostSR from its plain twin, pruned SRResNets from 16 blocks) or is taught
by one (ECBSR by edsrlite_x2) waits until that model's schedule is complete. A recipe
with a finishing fine-tune (``Recipe.finish``) runs it in ``runs/MODEL/finish/`` once its
schedule is complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .models import WEIGHTS_DIR, get_spec
from .train import TrainConfig, train

RUNS_DIR = WEIGHTS_DIR / "runs"

# The zoo's models in training order (sources before the models that start from them).
ZOO = ("fsrcnn_x2", "fsrcnn_s_x2", "fsrcnn_tiny_x2", "xlsr_x3", "ghostsr_x2",
       "edsrlite_x2", "srresnet_b16_x4", "fsrcnn_x3", "fsrcnn_x4", "ecbsr_m4c16_x2",
       "ghostsr_km_x2", "srresnet_b12_x4", "srresnet_b8_x4", "srresnet_b4_x4",
       "srresnet_b2_x4")


@dataclass
class ZooTrainConfig:
    """Arguments of ``train_zoo``.

    Attributes:
        models: Models to advance (default: ``ZOO``), in this order.
        minutes: Budget of this call, shared equally by the runs that can advance.
        runs: Runs folder (default ``RUNS_DIR``).
        threads: torch intra-op threads (0 = torch default), per run.
        device: ``"cpu"`` or ``"cuda"``.
        weights: Folder for each run's best weights (default: the committed ones, which
            a run replaces only when it beats them on the validation images).
        jobs: Runs trained at once, each in its own process. One small SR net leaves
            most of a GPU idle: on an H200 every zoo run fits side by side. On a 2-core
            CPU keep 1.
        early: Start derived runs (a transfer, a pruning, a taught run) from their
            source's committed weights before the source's schedule is complete; the
            source's step then is recorded in the derived run's ``source.json`` (a
            transfer's or a pruning's). Without it they wait.
    """

    models: list[str] = field(default_factory=list)
    minutes: float = 60.0
    runs: str = ""
    threads: int = 0
    device: str = "cpu"
    weights: str = ""
    jobs: int = 1
    early: bool = False


def _steps(last: Path, iters: int) -> tuple[int, int]:
    """(steps done, steps in the schedule) of the run whose state is ``last``; ``iters``
    where it has not started (or stored no schedule)."""
    if not last.exists():
        return 0, iters
    state = torch.load(last, map_location="cpu", weights_only=False)
    return state["iter"], state.get("schedule", {}).get("iters", iters)


def run_state(runs: Path, name: str) -> tuple[int, int]:
    """(steps done, steps in the schedule) of a model's run; (0, recipe iters) if none."""
    return _steps(runs / name / "last.pt", get_spec(name).recipe.iters)


def finish_state(runs: Path, name: str) -> tuple[int, int] | None:
    """(steps done, steps) of a model's finishing fine-tune; None if its recipe has none."""
    finish = get_spec(name).recipe.finish
    if finish is None:
        return None
    return _steps(runs / name / "finish" / "last.pt", finish.iters)[0], finish.iters


def _finish_left(runs: Path, name: str) -> bool:
    """Whether a model has a finishing fine-tune that is not complete."""
    fin = finish_state(runs, name)
    return fin is not None and fin[0] < fin[1]


def _finishing(runs: Path, name: str) -> bool:
    """Whether a model's schedule is complete and its finishing fine-tune is not."""
    done, iters = run_state(runs, name)
    return done >= iters and _finish_left(runs, name)


def sources(name: str) -> list[str]:
    """The models a model's recipe starts from (``init``) or is taught by (``teacher``)."""
    rec = get_spec(name).recipe
    return [s for s in (rec.init, rec.teacher) if s]


def _ready(runs: Path, name: str, early: bool = False) -> bool:
    """Whether a run can advance: unfinished (its schedule, then its finishing fine-tune),
    and its source models' runs are complete (or, ``early``, they have committed weights
    to start from or teach with)."""
    done, iters = run_state(runs, name)
    if done >= iters:
        return _finish_left(runs, name)
    for source in sources(name):
        s_done, s_iters = run_state(runs, source)
        if s_done < s_iters and not (early and get_spec(source).weights_path.exists()):
            return False
    return True


def note_source(runs: Path, name: str) -> None:
    """Before a derived run's first step: record where its source's run stood
    (``source.json``: model, steps done, steps in its schedule, and the step of the
    committed weights the derived run starts from: its best validation, often earlier)."""
    source = get_spec(name).recipe.init
    folder = runs / name
    if not source or (folder / "last.pt").exists():
        return
    done, iters = run_state(runs, source)
    weights = get_spec(source).weights_path
    start = (torch.load(weights, map_location="cpu", weights_only=False).get("iter")
             if weights.exists() else None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "source.json").write_text(json.dumps(
        {"model": source, "iter": done, "iters": iters, "weights_iter": start}, indent=1))


def train_zoo(cfg: ZooTrainConfig) -> dict:
    """Advance the zoo's runs within ``cfg.minutes``; rerun to continue.

    Returns:
        Per model: steps done / in the schedule, best validation PSNR, weights exported.
    """
    runs = Path(cfg.runs) if cfg.runs else RUNS_DIR
    names = cfg.models or list(ZOO)
    for name in names:
        get_spec(name)  # an unknown name fails before any training
    if cfg.jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {cfg.jobs}")
    deadline = time.time() + 60 * cfg.minutes
    report: dict[str, dict] = {}
    if cfg.jobs > 1:
        _train_side_by_side(cfg, runs, names, deadline, report)
    else:
        _train_in_turn(cfg, runs, names, deadline, report)
    for name in names:
        done, iters = run_state(runs, name)
        report.setdefault(name, {"iter": done, "iters": iters})
    return report


def _train_in_turn(cfg: ZooTrainConfig, runs: Path, names: list[str], deadline: float,
                   report: dict) -> None:
    """One run at a time, the remaining budget shared equally by the runs that can
    advance; rounds repeat while budget is left (a source that completes unblocks)."""
    while time.time() < deadline - 5:
        pending = [n for n in names if _ready(runs, n, cfg.early)]
        if not pending:
            break
        slice_min = (deadline - time.time()) / 60 / len(pending)
        for name in pending:
            left = (deadline - time.time()) / 60
            if left <= 0.05:
                break
            report[name] = _advance(name, runs, min(slice_min, left), cfg)


def _advance(name: str, runs: Path, minutes: float, cfg: ZooTrainConfig) -> dict:
    """Train one run (its schedule, or its finishing fine-tune once the schedule is
    complete) for ``minutes``; its line of the report."""
    note_source(runs, name)
    export, init = "", ""
    if cfg.weights:
        Path(cfg.weights).mkdir(parents=True, exist_ok=True)
        export = str(Path(cfg.weights) / f"{name}.pt")
    finish = _finishing(runs, name)
    if finish:  # from the schedule's best weights, wherever the exports went
        init = str(runs / name / "best.pt")
    out = runs / name / "finish" if finish else runs / name
    result = train(TrainConfig(model=name, out=str(out), minutes=minutes, finish=finish,
                               init=init, threads=cfg.threads, device=cfg.device,
                               export=export))
    rec = get_spec(name).recipe
    return {"stage": "finish" if finish else "schedule", "iter": result["iter"],
            "iters": rec.finish.iters if finish else rec.iters,
            "best_psnr": result["best_psnr"], "weights": result["weights"]}


def _train_side_by_side(cfg: ZooTrainConfig, runs: Path, names: list[str], deadline: float,
                        report: dict) -> None:
    """Up to ``cfg.jobs`` runs at once, each in a spawned process (CUDA cannot fork).

    A run started while fewer runs wait than there are jobs gets the whole remaining
    budget; otherwise an equal share of it. A run whose source completes meanwhile (a
    pruned SRResNet after the 16-block one) starts as soon as a job is free.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    running: dict = {}
    with ProcessPoolExecutor(cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
        while True:
            left = (deadline - time.time()) / 60
            busy = set(running.values())
            pending = [n for n in names if n not in busy and _ready(runs, n, cfg.early)]
            if left > 0.1:
                share = left if len(pending) <= cfg.jobs - len(running) else \
                    left * cfg.jobs / (len(pending) + len(running))
                for name in pending[:cfg.jobs - len(running)]:
                    running[pool.submit(_advance, name, runs, share, cfg)] = name
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                report[running.pop(fut)] = fut.result()
