"""``edge-sr bench``: PyTorch eager, the peers (ONNX Runtime fp32/int8, OpenVINO fp32,
ExecuTorch/XNNPACK fp32/int8, ncnn fp32) and TVM untuned/default/tuned fp32 and int8 measured in one
run on one input, in alternated rounds, quiet and under load, with GMAC/s, the fraction of the
CPU's peak and the ratio to ONNX Runtime; markdown, JSON and PNG plots."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import get_spec, load_model
from ..models.analysis import count_macs
from ..pipeline.builder import BuildError
from .peak import cpu_peak
from .rounds import one_line, speedup, time_quiet_and_loaded
from .runtimes import RUNNERS, RUNTIMES, Case, Timed

__all__ = ["BenchSpec", "bench", "bench_models"]


@dataclass
class BenchSpec:
    """Arguments of ``bench``.

    Attributes:
        model: Registry name.
        target: Where it runs: ``host``, or a device target measured over RPC.
        size: LR input (H, W); ``None`` picks ``default_size``.
        repeat: Timed calls per runtime and round (after one warm-up).
        runtimes: Which of ``RUNTIMES`` to run.
        seed: Input seed (a random image: timings do not depend on content).
        work: Parent of the scratch folder.
        device: RPC ``HOST:PORT`` of the device for device targets.
        timeout: RPC session seconds per device runtime and round (the runtimes share
            one session, which lasts that times their number, the rounds and, under
            load, two: a large model under emulation needs more).
        load: Also time every runtime with this many spinning processes on the machine
            that runs it (0: quiet only); each result gains ``loaded`` with its slowdown.
        rounds: Time the runtimes this many times each, in turn (``rounds.py``): on a
            machine whose speed drifts, their ratios then compare like with like (the
            ratio to ONNX Runtime is the median of the rounds' ratios).
    """

    model: str
    target: str = "host"
    size: tuple[int, int] | None = None
    repeat: int = 10
    runtimes: tuple[str, ...] = RUNTIMES
    seed: int = 0
    work: str | None = None
    device: str | None = None
    timeout: float = 300.0
    load: int = 0
    rounds: int = 1


MAX_LOAD = 64


def default_size(scale: int) -> tuple[int, int]:
    """The benchmark's LR frame for a scale: 360x640, the Mobile AI challenge's frame (x2
    gives 720p, x3 1080p); x4 models take 180x320, whose output is 720p too (a 360x640 x4
    frame is a 2560-pixel-wide output: ~0.5 TMAC for SRResNet-16, ~10 s on the host)."""
    return (180, 320) if scale >= 4 else (360, 640)


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def bench(cfg: BenchSpec) -> dict:
    """Measure every runtime on the same input; one result per runtime (or its error).

    Returns:
        ``{"model", "target", "input", "gmac", "cpu", "peak_gflops", "runtimes":
        {name: {"median_ms", "p90_ms", "min_ms", "gmacs_per_s", "peak_fraction",
        "vs_onnxruntime_fp32", ...} | {"error"}}}``.
    """
    import targets as target_registry

    tspec = target_registry.get_target(cfg.target)
    if tspec.is_remote and not cfg.device:
        raise BuildError(f"target {tspec.name} runs on a device: give --device HOST:PORT "
                         "(the emulated Pi: scripts/emulated-pi start)")
    if cfg.timeout <= 0:
        raise BuildError(f"--timeout must be positive, not {cfg.timeout:g}")
    if cfg.rounds < 1:
        raise BuildError(f"--rounds must be at least 1, not {cfg.rounds}")
    if not 0 <= cfg.load <= MAX_LOAD:
        raise BuildError(f"--load must be 0..{MAX_LOAD} spinning processes, not {cfg.load}")
    unknown = [r for r in cfg.runtimes if r not in RUNNERS]
    if unknown:
        raise BuildError(f"unknown runtimes {unknown}; choose from {list(RUNTIMES)}")
    spec = get_spec(cfg.model)
    model = load_model(cfg.model)
    shape = (1, spec.channels, *(cfg.size or default_size(spec.scale)))
    x = np.random.default_rng(cfg.seed).random(shape, dtype=np.float32)
    gmac = count_macs(model, shape) / 1e9
    peak = cpu_peak() if not tspec.is_remote else _device_peak(cfg.device, tspec)
    with tempfile.TemporaryDirectory(dir=cfg.work) as work:
        remote = cfg.device if tspec.is_remote else None
        timeout = cfg.timeout * len(cfg.runtimes) * cfg.rounds * (2 if cfg.load else 1)
        case = Case(cfg.model, spec, model, x, Path(work), cfg.repeat, tspec.name, remote,
                    timeout)
        ready, results = _prepare(case, cfg.runtimes)
        results.update(time_quiet_and_loaded(ready, cfg.rounds, cfg.load,
                                             case.session() if remote and ready else None,
                                             lambda m: _log(f"{cfg.model} {m}")))
    results = {name: results[name] for name in cfg.runtimes}
    for name, r in results.items():
        if "median_ms" in r:
            loaded = r.get("loaded", {})
            _log(f"{cfg.model} {name}: {r['median_ms']:.1f} ms" + (
                f", {loaded['median_ms']:.1f} ms under load {cfg.load} "
                f"({loaded['slowdown']:.2f}x)" if "slowdown" in loaded else ""))
    ref = results.get("onnxruntime_fp32", {})
    for name, r in results.items():
        if "median_ms" in r:
            gmacs = gmac / (r["median_ms"] / 1e3)
            r["gmacs_per_s"] = gmacs
            # an int8 runtime against the CPU's int8 peak (fp32 results: the fp32 one)
            top = peak.get("int8_peak_gops") if "int8" in name else None
            r["peak_fraction"] = 2 * gmacs / (top or peak["peak_gflops"])
            r["vs_onnxruntime_fp32"] = speedup(ref, r) if "median_ms" in ref else None
    return {"model": cfg.model, "target": cfg.target, "scale": spec.scale,
            "input": list(shape), "gmac": gmac, "cpu": peak, "load": cfg.load,
            "rounds": cfg.rounds,
            "peak_gflops": peak["peak_gflops"], "runtimes": results}


def _prepare(case: Case, runtimes: tuple[str, ...]) -> tuple[dict[str, Timed], dict]:
    """Every runtime built and loaded (``Timed``), or its one-line error."""
    ready, errors = {}, {}
    for name in runtimes:
        _log(f"{case.name} {name} ...")
        try:
            out = RUNNERS[name](case)
        except Exception as exc:  # noqa: BLE001 - one runtime failing is a result
            out = {"error": one_line(exc)}
        if isinstance(out, Timed):
            ready[name] = out
        else:
            errors[name] = out
    return ready, errors


def _device_peak(device: str, tspec) -> dict:
    """The device's peaks from its own description (cores, clock) and its target's
    features (a dot-product CPU); emulated devices report the host's CPU, so their
    fraction of peak is not a Pi's."""
    from ..device.rpc import connect, device_info

    info = device_info(connect(device)) or {}
    ghz = 1.8  # Cortex-A72 in a Pi 4 (no cpufreq under emulation)
    if info.get("cpu_freq_khz"):
        ghz = info["cpu_freq_khz"] / 1e6
    dot = "+dotprod" in (tspec.tvm.get("mattr") or [])
    peak = cpu_peak(info.get("cores") or 4, ghz, machine="aarch64", int8_dot=dot)
    return {**peak, "machine": info.get("machine")}


def bench_models(models: list[str], **kw) -> list[dict]:
    """``bench`` for several models (same settings), for the tables and the Pareto plot."""
    return [bench(BenchSpec(model=m, **kw)) for m in models]
