"""The zoo's trade-off: PSNR against latency for every model, at one output size.

Models of different scales are compared at the same output frame (720p by default: x2
from 360x640, x3 from 240x432, x4 from 180x320), so a point's latency is what it costs to
deliver that frame. PSNR is only comparable within a scale (a x4 model restores less than
a x2 one), so the frontier is drawn per scale. The pruned SRResNets (16 -> 12/8/4/2
blocks) are one column of this table: the pruning study is the x4 panel.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluate import EvalConfig, evaluate
from ..models import get_spec
from . import BenchSpec, bench

OUTPUT = (720, 1280)


def input_size(scale: int, output: tuple[int, int] = OUTPUT) -> tuple[int, int]:
    """The LR frame whose x``scale`` output covers ``output``, its width rounded up to a
    multiple of 8 (as a camera frame's): x3 of 1280 columns reads 432, not 427."""
    return -(-output[0] // scale), 8 * -(-output[1] // (8 * scale))


@dataclass
class ParetoConfig:
    """Arguments of ``zoo_points``.

    Attributes:
        models: Registry names (default: every model with a committed checkpoint).
        target: Where latency is measured (``host``, or a device target over RPC).
        runtime: The ``bench`` runtime timed (``tvm_default_fp32``: the build every
            machine gets without tuning; ``tvm_tuned_fp32``; ``tvm_tuned_int8``).
        output: HR frame (H, W) every model delivers.
        datasets: PSNR on each; the first one is plotted.
        repeat: Timed calls per model.
        device: RPC ``HOST:PORT`` for device targets.
        timeout: RPC session seconds per model.
        rounds: Times every model is built and timed, the models in turn each round (a
            noisy machine slows whichever model runs while it is busy; alternating
            spreads that over all of them); the latency is the median of the rounds'
            medians.
    """

    models: list[str] = field(default_factory=list)
    target: str = "host"
    runtime: str = "tvm_default_fp32"
    output: tuple[int, int] = OUTPUT
    datasets: list[str] = field(default_factory=lambda: ["set5", "set14"])
    repeat: int = 10
    device: str | None = None
    timeout: float = 300.0
    rounds: int = 1


def blocks(name: str) -> int | None:
    """Residual blocks of a pruned SRResNet variant (``srresnet_b8_x4`` -> 8), else None."""
    m = re.match(r"srresnet_b(\d+)_x\d+$", name)
    return int(m.group(1)) if m else None


def zoo_points(cfg: ParetoConfig) -> list[dict]:
    """One point per model: latency at ``cfg.output`` and PSNR per dataset.

    Returns:
        ``{"model", "scale", "input", "output", "gmac", "runtime", "blocks", "latency_ms",
        "psnr": {dataset: dB}}`` (and ``rounds_ms`` with more than one round); ``error``
        instead of ``latency_ms`` when the runtime failed.
    """
    from ..zoo import committed_models

    names = cfg.models or committed_models()
    if cfg.rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {cfg.rounds}")
    timed: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(cfg.rounds):
        for name in names:
            spec = get_spec(name)
            timed[name].append(bench(BenchSpec(
                model=name, target=cfg.target, size=input_size(spec.scale, cfg.output),
                repeat=cfg.repeat, runtimes=(cfg.runtime,), device=cfg.device,
                timeout=cfg.timeout)))
    return [_point(name, timed[name], cfg) for name in names]


def _point(name: str, results: list[dict], cfg: ParetoConfig) -> dict:
    res = results[0]
    runs = [r["runtimes"][cfg.runtime] for r in results]
    point = {"model": name, "scale": res["scale"], "input": res["input"],
             "output": list(cfg.output), "gmac": res["gmac"], "runtime": cfg.runtime,
             "blocks": blocks(name),
             "psnr": {ds: evaluate(EvalConfig(name, ds))["mean"]["psnr"]
                      for ds in cfg.datasets}}
    medians = [r["median_ms"] for r in runs if "median_ms" in r]
    if len(medians) == len(runs):
        point["latency_ms"] = float(statistics.median(medians))
        if len(runs) > 1:
            point["rounds_ms"] = medians
    else:
        point["error"] = next((r.get("error") for r in runs if "median_ms" not in r),
                              "not measured")
    return point


def frontier(points: list[dict], dataset: str) -> set[str]:
    """Models no other model of the same scale beats on both latency and PSNR."""
    best: set[str] = set()
    timed = [p for p in points if "latency_ms" in p and dataset in p["psnr"]]
    for scale in {p["scale"] for p in timed}:
        top = float("-inf")
        for p in sorted((p for p in timed if p["scale"] == scale),
                        key=lambda p: (p["latency_ms"], -p["psnr"][dataset])):
            if p["psnr"][dataset] > top:
                best.add(p["model"])
                top = p["psnr"][dataset]
    return best


def format_pareto(points: list[dict]) -> str:
    """Markdown: per scale, fastest first; PSNR per dataset, latency, GMAC, frontier."""
    datasets = list(dict.fromkeys(ds for p in points for ds in p["psnr"]))
    front = frontier(points, datasets[0]) if datasets else set()
    runtime = points[0]["runtime"] if points else ""
    head = " | ".join(f"{ds} PSNR" for ds in datasets)
    lines = [f"| model | scale | input | GMAC | {runtime} ms | {head} | frontier |",
             "|---|---|---|---|---|" + "---|" * len(datasets) + "---|"]
    order = sorted(points, key=lambda p: (p["scale"], p.get("latency_ms", float("inf"))))
    for p in order:
        ms = f"{p['latency_ms']:.1f}" if "latency_ms" in p else f"error: {p['error']}"
        cells = " | ".join(f"{p['psnr'][ds]:.2f}" if ds in p["psnr"] else "" for ds in datasets)
        h, w = p["input"][-2:]
        lines.append(f"| {p['model']} | x{p['scale']} | {h}x{w} | {p['gmac']:.2f} | {ms} | "
                     f"{cells} | {'yes' if p['model'] in front else ''} |")
    return "\n".join(lines)


def format_pruning(points: list[dict]) -> str:
    """Markdown of the pruning study: the points with ``blocks``, most blocks first, each
    against the one with the most blocks (PSNR difference, speed-up); "" with fewer than
    two pruned points."""
    pruned = sorted((p for p in points if p.get("blocks")), key=lambda p: -p["blocks"])
    if len(pruned) < 2:
        return ""
    ref = pruned[0]
    datasets = list(ref["psnr"])
    head = " | ".join(f"{ds} PSNR (vs {ref['blocks']})" for ds in datasets)
    lines = [f"| blocks | GMAC | {head} | {ref['runtime']} ms | speed-up |",
             "|---|---|" + "---|" * len(datasets) + "---|---|"]
    for p in pruned:
        cells = " | ".join(f"{p['psnr'][ds]:.2f} ({p['psnr'][ds] - ref['psnr'][ds]:+.2f})"
                           if ds in p["psnr"] else "" for ds in datasets)
        if "latency_ms" in p and "latency_ms" in ref:
            ms, up = f"{p['latency_ms']:.1f}", f"{ref['latency_ms'] / p['latency_ms']:.2f}x"
        else:
            ms, up = f"error: {p.get('error', 'not measured')}", ""
        lines.append(f"| {p['blocks']} | {p['gmac']:.2f} | {cells} | {ms} | {up} |")
    return "\n".join(lines)


def plot_zoo(points: list[dict], path: Path) -> Path:
    """``report.plot_pareto`` of ``zoo_points``' output (the first dataset's PSNR)."""
    from .report import plot_pareto

    timed = [p for p in points if "latency_ms" in p]
    ds = next(iter(timed[0]["psnr"])) if timed else "set5"
    runtime = timed[0]["runtime"] if timed else ""
    h, w = timed[0].get("output", OUTPUT) if timed else OUTPUT
    return plot_pareto([{"label": p["model"], "scale": p["scale"], "psnr": p["psnr"][ds],
                         "latency_ms": p["latency_ms"]} for p in timed], path,
                       xlabel=f"{runtime} ms, {h}x{w} output (log)", ylabel=f"{ds} PSNR (dB)")
