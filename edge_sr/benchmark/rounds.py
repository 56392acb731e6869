"""Timing prepared runtimes in alternated rounds, quiet and then under load.

A shared machine's speed drifts (a cloud host's by up to 1.7x from one minute to the
next, the emulated Pi with it), so runtimes timed one after another are compared across
different machines. ``bench --rounds R`` times every runtime once per round, in turn,
the first one rotating each round; a runtime's latency is the median of its rounds'
medians, and the per-round medians are kept (``rounds_ms``) so the spread is visible.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from ..errors import last_line
from .load import background_load
from .runtimes import Timed


def one_line(exc: BaseException) -> str:
    """An exception as the one line a result row carries."""
    return last_line(exc)[:300]


def time_rounds(ready: dict[str, Timed], rounds: int,
                log: Callable[[str], None] = lambda _m: None) -> dict[str, dict]:
    """Time every runtime ``rounds`` times, alternating them.

    Args:
        ready: Prepared runtimes by name, in the order of the first round.
        rounds: Rounds (1: each runtime timed once, in order).
        log: Progress lines.

    Returns:
        ``{name: figures}`` (``combine``'s layout), or ``{"error"}`` for a runtime whose
        timing failed (it is not timed again).
    """
    runs: dict[str, list[dict]] = {name: [] for name in ready}
    errors: dict[str, str] = {}
    for r in range(rounds):
        names = [n for n in ready if n not in errors]
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            try:
                runs[name].append(ready[name].run())
            except Exception as exc:  # noqa: BLE001 - one runtime failing is a result
                errors[name] = one_line(exc)
                continue
            if rounds > 1:
                log(f"round {r + 1}/{rounds} {name}: {runs[name][-1]['median_ms']:.1f} ms")
    return {name: {"error": errors[name]} if name in errors else combine(runs[name])
            for name in ready}


def combine(runs: list[dict]) -> dict:
    """One runtime's rounds as one row: the median of the rounds' medians and p90s, the
    fastest call, every call counted; ``rounds_ms`` lists each round's median."""
    if len(runs) == 1:
        return runs[0]
    med = [r["median_ms"] for r in runs]
    return {**runs[-1], "median_ms": statistics.median(med),
            "p90_ms": statistics.median(r["p90_ms"] for r in runs),
            "min_ms": min(r["min_ms"] for r in runs),
            "runs": sum(r.get("runs", 0) for r in runs), "rounds_ms": med}


def speedup(ref: dict, row: dict) -> float:
    """How many times faster ``row`` ran than ``ref``: the median of the rounds' ratios
    where both were timed in the same rounds (each pair seconds apart, on the same
    machine state), else the ratio of their medians."""
    a, b = ref.get("rounds_ms"), row.get("rounds_ms")
    if a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b))
    return ref["median_ms"] / row["median_ms"]


def time_quiet_and_loaded(ready: dict[str, Timed], rounds: int, load: int, session=None,
                          log: Callable[[str], None] = lambda _m: None) -> dict[str, dict]:
    """``time_rounds`` quiet, then (``load`` > 0) again with that many spinning processes
    on the machine that runs the runtimes (``session``: the device's RPC session).

    Returns:
        Each runtime's quiet figures and the ``info`` it was prepared with, and, under
        load, ``loaded`` (the loaded figures, ``processes`` and ``slowdown``, the loaded
        median over the quiet one).
    """
    quiet = time_rounds(ready, rounds, log)
    out = {name: {**ready[name].info, **quiet[name]} if "median_ms" in quiet[name]
           else quiet[name] for name in ready}
    timed = {name: t for name, t in ready.items() if "median_ms" in quiet[name]}
    if not load or not timed:
        return out
    log(f"under load {load} ...")
    with background_load(load, session=session):
        loaded = time_rounds(timed, rounds, log)
    for name, figures in loaded.items():
        if "median_ms" in figures:
            figures["slowdown"] = figures["median_ms"] / quiet[name]["median_ms"]
        out[name]["loaded"] = {"processes": load, **figures}
    return out
