"""``bench_device``: latency on the device and quality against HR, host TVM and PyTorch."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.artifact import read_manifest, verified_library, write_json_atomic
from runtime.engine import load_local
from runtime.profile import sample_input

from ..data import to_model_input
from ..device.rpc import DeviceError
from ..evaluate import load_pairs, output_to_image, run_torch
from ..metrics import match_psnr, psnr, ssim
from ..models import load_model
from .health import health
from .session import DeviceFault, DeviceSession, Resilience

__all__ = ["BenchConfig", "DeviceError", "Resilience", "bench_device", "format_report"]


@dataclass
class BenchConfig:
    """Arguments of ``bench_device``.

    Attributes:
        artifact: Artifact folder from ``build``.
        device: ``HOST:PORT`` of the device's RPC server.
        tracker: ``HOST:PORT`` of an RPC tracker (instead of ``device``).
        key: Tracker device key.
        dataset: Images to run (a dataset name or folder).
        limit: Only the first N images (0 = all).
        repeat: ``time_evaluator`` repeats (after one warm-up call).
        number: Calls per repeat.
        timeout: RPC session timeout, seconds.
        out: Folder for ``report.json`` and ``report.md`` (default ``reports/ARTIFACT``).
        resilience: Per-call timeouts, reconnection retries and backoff.
        restart: Brings the device's RPC server back before a reconnection (e.g. over
            the serial console: ``edge_sr.device.rpc_restarter``); None to only reconnect.
        on_image: Called with the index of each image after it is measured (progress;
            the fault-injection tests kill the server from here).
    """

    artifact: str
    device: str | None = "127.0.0.1:9090"
    tracker: str | None = None
    key: str = ""
    dataset: str = "set5"
    limit: int = 0
    repeat: int = 10
    number: int = 1
    timeout: float = 600
    out: str | None = None
    resilience: Resilience = field(default_factory=Resilience)
    restart: Callable[[], None] | None = None
    on_image: Callable[[int], None] | None = None


def _latency(dev: DeviceSession, repeat: int, number: int) -> dict:
    """Per-call latency of the module on its own input shape, via ``time_evaluator``."""
    import tvm

    engine = dev.engine
    shape = engine.manifest["input"]["shape"]

    def run():
        x = tvm.runtime.tensor(sample_input(shape, engine.io), engine.device)
        engine.func(x)  # warm-up outside the timed repeats (first-call allocation)
        timer = engine.vm.time_evaluator("main", engine.device, number=number, repeat=repeat)
        return timer(x).results

    ms = np.array(dev.call(run, what="latency run")) * 1e3
    return {"input": shape, "repeat": repeat, "number": number,
            "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "mean_ms": float(ms.mean())}


def bench_device(cfg: BenchConfig) -> dict:
    """Run every image of a dataset on the device and measure latency and quality.

    Faults (server died, connection lost, hung call) are survived by reconnecting with
    backoff (``cfg.resilience``, ``cfg.restart``); the image in flight is measured again
    and finished ones are kept. Images that could not be measured are listed with the
    reason in ``not_measured`` and ``complete`` is false; the report is written anyway.

    Returns:
        ``{"artifact", "device", "device_info", "health", "latency", "images": [...],
        "not_measured": [...], "faults": [...], "complete", "summary": {...}}``; also
        written to ``cfg.out``.
    """
    manifest = read_manifest(cfg.artifact)
    verified_library(cfg.artifact, manifest)  # a corrupt artifact is refused before any upload
    scale, colour = int(manifest["scale"]), manifest["colour"]
    host_which = "host_library" if "host_library" in manifest else "library"
    host = load_local(cfg.artifact, which=host_which)
    model = load_model(manifest["model"], manifest["build"]["config"].get("weights"))
    pairs = load_pairs(cfg.dataset, scale, colour, cfg.limit)
    dev = DeviceSession(cfg.device, cfg.tracker, cfg.key, cfg.timeout, cfg.artifact, manifest,
                        cfg.resilience, cfg.restart,
                        log=lambda msg: print(f"bench-device: {msg}", file=sys.stderr))
    dev.open()  # the first connection's errors (dead device, wrong target) end the run here
    info_before = dev.info
    faults: list[dict] = []
    lost: str | None = None

    def measure(what: str, fn: Callable[[], object]):
        """``fn()`` with recovery: retried after each successful reconnection."""
        nonlocal lost
        while lost is None:
            try:
                return fn()
            except DeviceFault as exc:
                lost = dev.recover()
                faults.append({"during": what, "error": str(exc), "recovered": lost is None})
        return None

    latency = measure("latency", lambda: _latency(dev, cfg.repeat, cfg.number))
    images, not_measured = [], []
    for i, pair in enumerate(pairs):
        planes = to_model_input(pair.lr, colour)
        result = measure(pair.name, lambda planes=planes: _run_image(dev, planes))
        if result is None:
            not_measured.append({"name": pair.name, "reason": lost})
            continue
        dev_raw, wall = result
        host_raw = host.upscale(planes)
        dev_img = output_to_image(dev_raw, colour)
        images.append({
            "name": pair.name, "lr_size": list(pair.lr.shape[:2]),
            "tiles": _tiles(dev.engine, planes.shape), "wall_ms": wall,
            "psnr_hr": psnr(dev_img, pair.hr, scale), "ssim_hr": ssim(dev_img, pair.hr, scale),
            "psnr_bicubic": psnr(_bicubic(pair.lr, scale), pair.hr, scale),
            "psnr_vs_host_tvm": match_psnr(dev_img, output_to_image(host_raw, colour)),
            "max_abs_diff_vs_host_tvm": float(np.abs(dev_raw - host_raw).max()),
            "psnr_vs_torch": match_psnr(dev_img, run_torch(model, pair.lr, colour)),
        })
        if cfg.on_image:
            cfg.on_image(i)
    report = {"artifact": str(cfg.artifact), "model": manifest["model"],
              "target": manifest["target"]["name"], "device": cfg.tracker or cfg.device,
              "device_info": info_before,
              "health": health(info_before, dev.final_info()),
              "dataset": cfg.dataset, "latency": latency, "images": images,
              "not_measured": not_measured, "faults": faults, "reconnects": dev.reconnects,
              "complete": not not_measured and latency is not None,
              "summary": _summary(latency, images)}
    out = Path(cfg.out or Path("reports") / Path(cfg.artifact).name)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    (out / "report.md").write_text(format_report(report) + "\n")
    report["report_dir"] = str(out)
    return report


def _run_image(dev: DeviceSession, planes: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = dev.call(dev.engine.upscale, planes, what="image")
    return out, (time.perf_counter() - start) * 1e3


def _bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    from ..data import imresize

    return imresize(lr, scale)


def _tiles(engine, shape: tuple[int, ...]) -> int:
    from runtime.tiling import tile_starts

    (th, tw), r = engine.tile, int(engine.manifest["receptive_radius"])
    return len(tile_starts(shape[1], th, r)) * len(tile_starts(shape[2], tw, r))


def _summary(latency: dict | None, images: list[dict]) -> dict:
    lat = latency or {}
    out = {"latency_ms_median": lat.get("median_ms"), "latency_ms_p90": lat.get("p90_ms"),
           "latency_ms_min": lat.get("min_ms"), "images": len(images)}
    if not images:
        return out

    def mean(key: str) -> float:
        return float(np.mean([im[key] for im in images]))

    return {
        **out,
        "psnr_hr": mean("psnr_hr"), "ssim_hr": mean("ssim_hr"),
        "psnr_bicubic": mean("psnr_bicubic"),
        "psnr_vs_host_tvm": min(im["psnr_vs_host_tvm"] for im in images),
        "max_abs_diff_vs_host_tvm": max(im["max_abs_diff_vs_host_tvm"] for im in images),
        "psnr_vs_torch": min(im["psnr_vs_torch"] for im in images),
    }


def format_report(report: dict) -> str:
    """A markdown table of a device report (faults, health and gaps included)."""
    lat, s = report["latency"], report["summary"]
    info = report.get("device_info") or {}
    lines = [f"# {report['model']} on {report['device']} ({report['target']}, "
             f"{info.get('machine', '?')})", ""]
    if lat:
        lines += [f"Module call ({'x'.join(map(str, lat['input'][2:]))} input, "
                  f"{lat['repeat']} repeats): median {lat['median_ms']:.2f} ms, "
                  f"p90 {lat['p90_ms']:.2f} ms, min {lat['min_ms']:.2f} ms", ""]
    else:
        lines += ["Module latency: not measured (device lost)", ""]
    lines += ["| image | LR size | tiles | wall ms | PSNR | SSIM | bicubic | vs host TVM "
              "| vs torch |", "|---|---|---|---|---|---|---|---|---|"]
    for im in report["images"]:
        lines.append(
            f"| {im['name']} | {im['lr_size'][0]}x{im['lr_size'][1]} | {im['tiles']} | "
            f"{im['wall_ms']:.0f} | {im['psnr_hr']:.2f} | {im['ssim_hr']:.4f} | "
            f"{im['psnr_bicubic']:.2f} | {im['psnr_vs_host_tvm']:.2f} | "
            f"{im['psnr_vs_torch']:.2f} |")
    for im in report.get("not_measured", []):
        lines.append(f"| {im['name']} | not measured: {im['reason']} | | | | | | | |")
    if report["images"]:
        lines.append(f"| **mean** | | | | {s['psnr_hr']:.2f} | {s['ssim_hr']:.4f} | "
                     f"{s['psnr_bicubic']:.2f} | {s['psnr_vs_host_tvm']:.2f} (min) | "
                     f"{s['psnr_vs_torch']:.2f} (min) |")
        lines += ["", "Max |device - host TVM| over all outputs: "
                  f"{s['max_abs_diff_vs_host_tvm']:.2e}"]
    for fault in report.get("faults", []):
        lines.append(f"Fault during {fault['during']}: {fault['error']} -> "
                     f"{'recovered' if fault['recovered'] else 'not recovered'}")
    for warning in (report.get("health") or {}).get("warnings", []):
        lines.append(f"WARNING: {warning}")
    if info.get("machine") and info["machine"] != "x86_64" and report["target"] == "qemu-aarch64":
        lines.append("Emulated device: timings are ratios, not a Pi's milliseconds.")
    return "\n".join(lines)
