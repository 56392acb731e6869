#!/usr/bin/env python3
"""int8 figures: float32 vs our int8 (mixed precision and full) vs ONNX Runtime static QDQ.

python scripts/int8_report.py [--models ...] [--datasets set5 set14] [--out reports/int8]

Every number is measured in this run on this machine (host x86), whole images. Our int8
columns come from the plan's float64 simulation, which the compiled module computes (tests:
tests/quant); the "module" column cross-checks Set5 with the real host int8 TVM module from
an int8 build (its guard figure), except for models listed in --no-module (the untuned
int8 kernels make a big model's Set5 run slow).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from edge_sr.baselines.onnxrt import export_onnx, quantize_onnx, session  # noqa: E402
from edge_sr.data import to_model_input  # noqa: E402
from edge_sr.evaluate import load_pairs, output_to_image, score_images  # noqa: E402
from edge_sr.models import MODELS, load_model  # noqa: E402
from edge_sr.pipeline import BuildConfig, build  # noqa: E402
from edge_sr.quant import QuantConfig, calibration_crops, quantize  # noqa: E402
from edge_sr.quant.plan import simulate  # noqa: E402
from runtime.artifact import read_manifest  # noqa: E402

DEFAULT_MODELS = ["fsrcnn_x2", "ecbsr_m4c16_x2", "xlsr_x3", "ghostsr_x2", "srresnet_b16_x4"]


def score(run, name: str, dataset: str) -> dict:
    spec = MODELS[name]
    pairs = load_pairs(dataset, spec.scale, spec.colour)
    outs = [output_to_image(run(to_model_input(p.lr, spec.colour)), spec.colour) for p in pairs]
    return score_images(pairs, outs, spec.scale)["mean"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--datasets", nargs="+", default=["set5", "set14"])
    ap.add_argument("--size", default="96x96", help="int8 module tile size")
    ap.add_argument("--out", default="reports/int8")
    ap.add_argument("--no-module", nargs="*", default=["srresnet_b16_x4"],
                    help="skip the host-module Set5 cross-check for these models")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        spec = MODELS[name]
        model = load_model(name)
        row = {"model": name, "scale": spec.scale}
        def run_float(x, model=model):
            with torch.no_grad():
                return model(torch.from_numpy(x)[None])[0].numpy()

        for ds in args.datasets:
            row[f"float32_{ds}"] = score(run_float, name, ds)
        for variant, fallback in (("mixed", True), ("full", False)):
            q = quantize(model, spec, QuantConfig(fallback=fallback))
            gm, plan, qrep = q.gm, q.plan, q.report
            row[f"tvm_int8_{variant}_float_layers"] = qrep["float_layers"]
            row[f"tvm_int8_{variant}_int16_activations"] = qrep.get("int16_activations", [])

            def run_sim(x, gm=gm, plan=plan):
                with torch.no_grad():
                    return simulate(gm, plan, torch.from_numpy(x)[None])[0].numpy()

            for ds in args.datasets:
                row[f"tvm_int8_{variant}_{ds}"] = score(run_sim, name, ds)
        if name not in args.no_module:
            with tempfile.TemporaryDirectory() as tmp:
                art = build(BuildConfig(model=name, target="host", size=size, dtype="int8",
                                        out=tmp, enforce_guard=False))
                row["module_set5"] = read_manifest(art)["quality"]
        q = QuantConfig()
        lr, _ = calibration_crops(tuple(q.datasets), spec.scale, spec.colour, q.crop,
                                  q.calib_images, q.seed)  # the crops our quantizer saw
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(model, spec, Path(tmp) / "fp32.onnx")
            int8 = quantize_onnx(fp32, Path(tmp) / "int8.onnx", lr)
            run = session(int8)
            for ds in args.datasets:
                row[f"ort_int8_{ds}"] = score(lambda x, run=run: run(x[None])[0], name, ds)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "int8.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "int8.md").write_text(format_rows(rows, args.datasets) + "\n")
    print(format_rows(rows, args.datasets))
    return 0


def _cell(value: dict, ref: dict) -> str:
    return f"{value['psnr']:.2f} / {value['ssim']:.4f} ({ref['psnr'] - value['psnr']:+.3f})"


def _module(row: dict) -> str:
    q = row.get("module_set5")
    return "not run" if q is None else f"{q['psnr_int8']:.2f} ({q['drop']:+.3f})"


def _fallback(row: dict) -> str:
    a16 = ", ".join(row.get("tvm_int8_mixed_int16_activations", [])) or "none"
    return f"{a16}; {', '.join(row['tvm_int8_mixed_float_layers']) or 'none'}"


def format_rows(rows: list[dict], datasets: list[str]) -> str:
    lines = ["| model | set | float32 | int8 mixed (drop) | int8 full (drop) | "
             "ORT QDQ int8 (drop) | 16-bit activations, float layers (mixed) | "
             "module Set5 (mixed) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for ds in datasets:
            f = r[f"float32_{ds}"]
            lines.append(f"| {r['model']} | {ds} x{r['scale']} | {f['psnr']:.2f} / {f['ssim']:.4f}"
                         f" | {_cell(r[f'tvm_int8_mixed_{ds}'], f)} | "
                         f"{_cell(r[f'tvm_int8_full_{ds}'], f)} | {_cell(r[f'ort_int8_{ds}'], f)}"
                         f" | {_fallback(r)} | "
                         f"{_module(r) if ds == 'set5' else ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
