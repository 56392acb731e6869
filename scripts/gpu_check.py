#!/usr/bin/env python3
"""Run CUDA artifacts on this machine's GPU: quality against PyTorch, latency beside it.

    python scripts/gpu_check.py --artifacts artifacts/ [--dataset set5] [--out DIR]

For every ``*-cuda-*`` artifact under ``--artifacts`` (built elsewhere with
``python compile/build.py --target cuda``): the module upscales the dataset through the
runtime (tiled, as a user's images are), each output is scored against HR and compared
with PyTorch float32 on the CPU (the reference); then the module's latency on its own
input shape (``time_evaluator``) is measured beside PyTorch eager on the same GPU and
input, with TF32 off (the same arithmetic as ours) and on (PyTorch's default for convs).

The GPU machine needs only the TVM *runtime* (``TVM_USE_RUNTIME_LIB=1``; the compiler
library may be absent), torch, numpy and pillow. Prints a markdown table, writes
``gpu_check.json`` into ``--out``; exits 1 if a float32 module strays from PyTorch (PSNR
between the two, inside the border, under ``--min-match-db``) or an int8 module's PSNR
differs from what its build measured with the host int8 module.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_sr.data import to_model_input  # noqa: E402
from edge_sr.evaluate import load_pairs, output_to_image  # noqa: E402
from edge_sr.metrics import match_psnr, psnr  # noqa: E402
from edge_sr.models import get_spec, load_model  # noqa: E402
from runtime.engine import load_local  # noqa: E402
from runtime.profile import sample_input  # noqa: E402


def quality(engine, model, pairs, scale: int, colour: str) -> dict:
    """Per-dataset PSNR of the module and of PyTorch (CPU fp32), and how close they are.

    The closeness is measured inside a border of the receptive radius: the runtime pads
    an image to its tile by reflection, PyTorch's convs by zeros, so the outermost
    pixels differ by design (the same on the host).
    """
    import torch

    ours, ref, match, maxdiff = [], [], [], 0.0
    for p in pairs:
        # capped: SRResNet's radius times 4 would leave nothing of a small image
        b = min(int(engine.manifest["receptive_radius"]) * scale, min(p.hr.shape[:2]) // 4)
        x = to_model_input(p.lr, colour)
        out = engine.upscale(x)
        with torch.no_grad():
            want = model(torch.from_numpy(x)[None])[0].numpy()
        maxdiff = max(maxdiff, float(np.abs(out - want)[..., b:-b, b:-b].max()))
        a, b_ = output_to_image(out, colour), output_to_image(want, colour)
        ours.append(psnr(a, p.hr, scale))
        ref.append(psnr(b_, p.hr, scale))
        match.append(match_psnr(a[b:-b, b:-b], b_[b:-b, b:-b]))
    return {"psnr_gpu": float(np.mean(ours)), "psnr_torch_cpu": float(np.mean(ref)),
            "min_match_db": float(min(match)), "max_abs_diff": maxdiff}


def tvm_latency(engine, repeat: int) -> list[float]:
    """Milliseconds per call of the module on its input shape (after a warm-up)."""
    import tvm

    shape = engine.manifest["input"]["shape"]
    x = tvm.runtime.tensor(sample_input(shape, engine.io), engine.device)
    engine.func(x)
    timer = engine.vm.time_evaluator("main", engine.device, number=10, repeat=repeat)
    return [t * 1e3 for t in timer(x).results]


def torch_latency(model, shape: list[int], repeat: int, tf32: bool) -> list[float]:
    """Milliseconds per call of PyTorch eager on the GPU (CUDA events, 10 calls a repeat)."""
    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    m = model.cuda().eval()
    x = torch.rand(*shape, device="cuda")
    times = []
    with torch.no_grad():
        for _ in range(5):
            m(x)
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                m(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 10)
    m.cpu()
    return times


def check(artifact: Path, dataset: str, repeat: int) -> dict:
    """Quality and latency of one CUDA artifact."""
    engine = load_local(artifact)
    m = engine.manifest
    spec = get_spec(m["model"])
    model = load_model(m["model"]).eval()
    pairs = load_pairs(dataset, spec.scale, spec.colour)
    t0 = time.time()
    row = {"artifact": artifact.name, "model": m["model"], "dtype": m["dtype"],
           "input": m["input"]["shape"], "passes": m["passes"],
           "tuning": m["tuning"]["state"], "dataset": dataset,
           **quality(engine, model, pairs, spec.scale, spec.colour)}
    row["quality_seconds"] = round(time.time() - t0, 1)
    # what the build measured on the host for this module (int8: the guard's figure)
    ref = m.get("reference", {})
    host = m.get("quality", {}).get("psnr_int8") or ref.get("psnr_tvm_host")
    row["psnr_host_at_build"] = host if ref.get("dataset") == dataset else None
    med = lambda xs: float(np.median(xs))  # noqa: E731
    row["tvm_ms"] = med(tvm_latency(engine, repeat))
    row["torch_fp32_ms"] = med(torch_latency(model, m["input"]["shape"], repeat, tf32=False))
    row["torch_tf32_ms"] = med(torch_latency(model, m["input"]["shape"], repeat, tf32=True))
    return row


def ok(row: dict, min_match_db: float) -> bool:
    """float32: close to PyTorch inside the border; int8: the PSNR the build's host int8
    module measured on the same images (integer kernels: the same outputs)."""
    if row["dtype"] == "int8" and row["psnr_host_at_build"] is not None:
        return abs(row["psnr_gpu"] - row["psnr_host_at_build"]) <= 1e-3
    return row["dtype"] != "int8" and row["min_match_db"] >= min_match_db


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    head = ("| artifact | PSNR GPU | PSNR torch CPU | match dB (min) | TVM ms | torch fp32 ms "
            "| torch TF32 ms | torch fp32 / TVM |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['artifact']} | {r['psnr_gpu']:.3f} | {r['psnr_torch_cpu']:.3f} | "
                     f"{r['min_match_db']:.1f} | {r['tvm_ms']:.3f} | {r['torch_fp32_ms']:.3f} | "
                     f"{r['torch_tf32_ms']:.3f} | {r['torch_fp32_ms'] / r['tvm_ms']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", required=True, help="folder of artifact folders")
    parser.add_argument("--dataset", default="set5")
    parser.add_argument("--repeat", type=int, default=30, help="timed repeats (10 calls each)")
    parser.add_argument("--min-match-db", type=float, default=45.0,
                        help="float32: fail below this PSNR between our output and "
                             "PyTorch's (inside the receptive-radius border)")
    parser.add_argument("--out", default=".", help="folder for gpu_check.json")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine", file=sys.stderr)
        return 2
    arts = sorted(p.parent for p in Path(args.artifacts).glob("*-cuda-*/manifest.json"))
    if not arts:
        print(f"gpu_check: no CUDA artifacts under {args.artifacts}", file=sys.stderr)
        return 2
    rows, failed = [], []
    for art in arts:
        try:
            rows.append(check(art, args.dataset, args.repeat))
            print(json.dumps(rows[-1]), flush=True)
        except Exception as exc:  # one broken artifact must not hide the others' figures
            failed.append(f"{art.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            print(f"gpu_check: {failed[-1]}", file=sys.stderr, flush=True)
            traceback.print_exc()
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "rows": rows, "failed": failed}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(out, indent=1))
    print(f"\n{out['gpu']}, torch {out['torch']}\n\n{table(rows)}")
    bad = [r["artifact"] for r in rows if not ok(r, args.min_match_db)]
    if bad or failed:
        print(f"gpu_check: FAILED: {', '.join(bad + failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
