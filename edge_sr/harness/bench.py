"""``bench_device``: latency on the device and quality against HR, host TVM and PyTorch."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.artifact import read_manifest, write_json_atomic
from runtime.engine import load_local

from ..data import to_model_input
from ..evaluate import load_pairs, output_to_image, run_torch
from ..metrics import psnr, ssim
from ..models import load_model
from .remote import HarnessError, _first_line, connect, device_info, remote_engine

__all__ = ["BenchConfig", "HarnessError", "bench_device", "format_report"]


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


def _latency(engine, repeat: int, number: int) -> dict:
    """Per-call latency of the module on its own input shape, via ``time_evaluator``."""
    import tvm

    shape = engine.manifest["input"]["shape"]
    x = tvm.runtime.tensor(np.random.default_rng(0).random(shape, dtype=np.float32),
                           engine.device)
    engine.func(x)  # warm-up outside the timed repeats (first-call allocation)
    timer = engine.vm.time_evaluator("main", engine.device, number=number, repeat=repeat)
    ms = np.array(timer(x).results) * 1e3
    return {"input": shape, "repeat": repeat, "number": number,
            "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "mean_ms": float(ms.mean())}


def _match_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR between two uint8 outputs, full image, no crop (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def bench_device(cfg: BenchConfig) -> dict:
    """Run every image of a dataset on the device and measure latency and quality.

    Returns:
        ``{"artifact", "device", "device_info", "latency", "images": [...],
        "summary": {"latency_ms_median", "latency_ms_p90", "psnr_hr", "psnr_bicubic",
        "psnr_vs_host_tvm", "psnr_vs_torch", ...}}``; also written to ``cfg.out``.
    """
    manifest = read_manifest(cfg.artifact)
    scale, colour = int(manifest["scale"]), manifest["colour"]
    host_which = "host_library" if "host_library" in manifest else "library"
    host = load_local(cfg.artifact, which=host_which)
    model = load_model(manifest["model"], manifest["build"]["config"].get("weights"))
    pairs = load_pairs(cfg.dataset, scale, colour, cfg.limit)
    sess = connect(cfg.device, cfg.tracker, cfg.key, cfg.timeout)
    info = device_info(sess)
    engine = remote_engine(sess, cfg.artifact, manifest)
    images = []
    try:
        latency = _latency(engine, cfg.repeat, cfg.number)
        for pair in pairs:
            planes = to_model_input(pair.lr, colour)
            start = time.perf_counter()
            dev_raw = engine.upscale(planes)
            wall = (time.perf_counter() - start) * 1e3
            host_raw = host.upscale(planes)
            dev_img = output_to_image(dev_raw, colour)
            bic = _bicubic(pair.lr, scale)
            images.append({
                "name": pair.name, "lr_size": list(pair.lr.shape[:2]),
                "tiles": _tiles(engine, planes.shape), "wall_ms": wall,
                "psnr_hr": psnr(dev_img, pair.hr, scale), "ssim_hr": ssim(dev_img, pair.hr, scale),
                "psnr_bicubic": psnr(bic, pair.hr, scale),
                "psnr_vs_host_tvm": _match_psnr(dev_img, output_to_image(host_raw, colour)),
                "max_abs_diff_vs_host_tvm": float(np.abs(dev_raw - host_raw).max()),
                "psnr_vs_torch": _match_psnr(dev_img, run_torch(model, pair.lr, colour)),
            })
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - RPC failures surface as TVMError
        raise HarnessError(f"device run failed after {len(images)} image(s): "
                           f"{_first_line(exc)}") from None
    report = {"artifact": str(cfg.artifact), "model": manifest["model"],
              "target": manifest["target"]["name"], "device": cfg.tracker or cfg.device,
              "device_info": info, "dataset": cfg.dataset, "latency": latency,
              "images": images, "summary": _summary(latency, images)}
    out = Path(cfg.out or Path("reports") / Path(cfg.artifact).name)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    (out / "report.md").write_text(format_report(report) + "\n")
    report["report_dir"] = str(out)
    return report


def _bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    from ..data import imresize

    return imresize(lr, scale)


def _tiles(engine, shape: tuple[int, ...]) -> int:
    from runtime.tiling import tile_starts

    (th, tw), r = engine.tile, int(engine.manifest["receptive_radius"])
    return len(tile_starts(shape[1], th, r)) * len(tile_starts(shape[2], tw, r))


def _summary(latency: dict, images: list[dict]) -> dict:
    def mean(key: str) -> float:
        return float(np.mean([im[key] for im in images]))

    return {
        "latency_ms_median": latency["median_ms"], "latency_ms_p90": latency["p90_ms"],
        "latency_ms_min": latency["min_ms"],
        "psnr_hr": mean("psnr_hr"), "ssim_hr": mean("ssim_hr"),
        "psnr_bicubic": mean("psnr_bicubic"),
        "psnr_vs_host_tvm": min(im["psnr_vs_host_tvm"] for im in images),
        "max_abs_diff_vs_host_tvm": max(im["max_abs_diff_vs_host_tvm"] for im in images),
        "psnr_vs_torch": min(im["psnr_vs_torch"] for im in images),
        "images": len(images),
    }


def format_report(report: dict) -> str:
    """A markdown table of a device report."""
    lat, s = report["latency"], report["summary"]
    info = report.get("device_info") or {}
    lines = [
        f"# {report['model']} on {report['device']} ({report['target']}, "
        f"{info.get('machine', '?')})", "",
        f"Module call ({'x'.join(map(str, lat['input'][2:]))} input, {lat['repeat']} repeats): "
        f"median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
        f"min {lat['min_ms']:.2f} ms", "",
        "| image | LR size | tiles | wall ms | PSNR | SSIM | bicubic | vs host TVM | vs torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for im in report["images"]:
        lines.append(
            f"| {im['name']} | {im['lr_size'][0]}x{im['lr_size'][1]} | {im['tiles']} | "
            f"{im['wall_ms']:.0f} | {im['psnr_hr']:.2f} | {im['ssim_hr']:.4f} | "
            f"{im['psnr_bicubic']:.2f} | {im['psnr_vs_host_tvm']:.2f} | "
            f"{im['psnr_vs_torch']:.2f} |")
    lines.append(f"| **mean** | | | | {s['psnr_hr']:.2f} | {s['ssim_hr']:.4f} | "
                 f"{s['psnr_bicubic']:.2f} | {s['psnr_vs_host_tvm']:.2f} (min) | "
                 f"{s['psnr_vs_torch']:.2f} (min) |")
    lines += ["", f"Max |device - host TVM| over all outputs: {s['max_abs_diff_vs_host_tvm']:.2e}"]
    if info.get("machine") and info["machine"] != "x86_64" and report["target"] == "qemu-aarch64":
        lines.append("Emulated device: timings are ratios, not a Pi's milliseconds.")
    return "\n".join(lines)
