"""The committed model zoo as one table: PSNR/SSIM per dataset next to bicubic and papers."""

from __future__ import annotations

import csv

import torch

from .evaluate import evaluate_module, load_pairs
from .models import MODELS, WEIGHTS_DIR, checkpoints, load_model

# Published Y-channel figures (PSNR, SSIM or None): shared/datasets/README.md, and the
# FSRCNN paper's FSRCNN-s and the ECBSR paper's ECBSR-M4C16 (trained on DIV2K) for x2.
PUBLISHED: dict[tuple[str, str], tuple[float, float | None]] = {
    ("fsrcnn_x2", "set5"): (37.00, 0.9558), ("fsrcnn_x2", "set14"): (32.63, 0.9088),
    ("fsrcnn_x3", "set5"): (33.16, None),
    ("fsrcnn_s_x2", "set5"): (36.57, None),
    ("fsrcnn_x4", "set5"): (30.72, 0.8660), ("fsrcnn_x4", "set14"): (27.61, 0.7550),
    ("ecbsr_m4c16_x2", "set5"): (37.33, None),
    ("srresnet_b16_x4", "set5"): (32.05, 0.9019), ("srresnet_b16_x4", "set14"): (28.49, 0.8184),
}


def committed_models() -> list[str]:
    """Registry names that have a committed checkpoint."""
    return [name for name, spec in MODELS.items() if spec.weights_path.exists()]


def training_cost(name: str) -> dict:
    """Steps and hours of training behind the committed checkpoint.

    Read from the checkpoint (``steps``, ``elapsed_s``: cumulative over every resumed
    invocation, plus its ``prior`` schedule's after a finishing fine-tune), else from
    the last row of the committed log ``weights/NAME.csv``.
    """
    ckpt = torch.load(MODELS[name].weights_path, map_location="cpu", weights_only=True)
    if "elapsed_s" in ckpt:
        cost = checkpoints.training_cost(ckpt)
        return {"steps": cost["iter"], "hours": cost["elapsed_s"] / 3600,
                "device": ckpt.get("device", "cpu")}
    log = WEIGHTS_DIR / f"{name}.csv"
    if not log.exists():
        return {"steps": None, "hours": None, "device": None}
    rows = list(csv.DictReader(log.open()))
    return {"steps": int(rows[-1]["iter"]), "hours": float(rows[-1]["elapsed_s"]) / 3600,
            "device": "cpu"}


def zoo_table(datasets: list[str], models: list[str] | None = None) -> list[dict]:
    """Evaluate models (default: every committed one) on datasets; one row per pair."""
    rows = []
    for name in models or committed_models():
        spec = MODELS[name]
        model = load_model(name)
        for ds in datasets:
            res = evaluate_module(model, spec, load_pairs(ds, spec.scale, spec.colour))
            pub = PUBLISHED.get((name, ds))
            rows.append({"model": name, "dataset": ds, "scale": spec.scale,
                         "psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
                         "bicubic_psnr": res["bicubic"]["psnr"],
                         "bicubic_ssim": res["bicubic"]["ssim"],
                         "published_psnr": pub[0] if pub else None,
                         "published_ssim": pub[1] if pub else None,
                         "training": training_cost(name)})
    return rows


def format_zoo(rows: list[dict]) -> str:
    """Markdown table of ``zoo_table`` rows."""
    lines = ["| model | dataset | PSNR / SSIM | bicubic | gain | published |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        pub = "" if r["published_psnr"] is None else f"{r['published_psnr']:.2f}" + (
            f" / {r['published_ssim']:.4f}" if r["published_ssim"] else "")
        lines.append(f"| {r['model']} | {r['dataset']} x{r['scale']} | {r['psnr']:.2f} / "
                     f"{r['ssim']:.4f} | {r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f} | "
                     f"{r['psnr'] - r['bicubic_psnr']:+.2f} | {pub} |")
    return "\n".join(lines)


def format_zoo_summary(rows: list[dict]) -> str:
    """Markdown: one line per model, datasets side by side, published figures, training."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    by_model: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["dataset"]] = r
    head = " | ".join(f"{d} PSNR / SSIM (published)" for d in datasets)
    lines = [f"| model | scale | {head} | training |",
             "|---|---|" + "---|" * len(datasets) + "---|"]
    for model, per in by_model.items():
        cells = []
        for d in datasets:
            r = per.get(d)
            if r is None:
                cells.append("")
                continue
            pub = f" ({r['published_psnr']:.2f})" if r.get("published_psnr") else ""
            cells.append(f"{r['psnr']:.2f} / {r['ssim']:.4f}{pub}")
        t = next(iter(per.values())).get("training") or {}
        cost = (f"{t['steps']:,} steps, {t['hours']:.2f} h {t['device']}"
                if t.get("hours") is not None else "")
        scale = next(iter(per.values()))["scale"]
        lines.append(f"| {model} | x{scale} | {' | '.join(cells)} | {cost} |")
    return "\n".join(lines)
