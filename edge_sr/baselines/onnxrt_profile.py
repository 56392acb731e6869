"""ONNX Runtime's own per-node profile of an artifact's model, on the host.

The peer's table beside ours (``edge-sr profile --onnxruntime``) shows where the two
differ layer by layer: ORT rewrites the graph (NCHWc blocked convs with reorder nodes,
fused conv+activation), so its rows are its nodes, named as its optimizer left them.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from statistics import median

import numpy as np

from runtime.artifact import read_manifest

from ..device.rpc import DeviceError
from ..models import get_spec, load_model


def profile_onnxruntime(artifact: str | Path, repeat: int = 5, threads: int = 0) -> dict:
    """Median time of every ORT node over ``repeat`` runs on the artifact's input shape.

    The model is exported from PyTorch as ``bench`` exports it (the deploy form, no edge-sr
    graph rewrites): what a user of ONNX Runtime would run.

    Returns:
        ``{"model", "where": "local (onnxruntime X)", "input", "total_ms", "rows":
        [{"node", "op", "ms", "share"}]}``; ``total_ms`` is the sum of node times
        (profiling itself adds some per node).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeviceError("--onnxruntime needs onnxruntime (pip install -e '.[bench]')") \
            from None
    from ..baselines.onnxrt import cpu_session, export_onnx

    manifest = read_manifest(artifact)
    shape = manifest["input"]["shape"]
    spec = get_spec(manifest["model"])
    model = load_model(manifest["model"], manifest["build"]["config"].get("weights"))
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with tempfile.TemporaryDirectory() as work:
        path = export_onnx(model, spec, Path(work) / "model.onnx")
        sess = cpu_session(path, threads, profile_prefix=str(Path(work) / "ort"))
        for _ in range(repeat + 1):  # the first run (warm-up) is dropped below
            sess.run(None, {"x": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    rows = node_rows(events, repeat)
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total if total else 0.0
    return {"model": manifest["model"], "where": f"local (onnxruntime {ort.__version__})",
            "input": shape, "total_ms": total, "rows": rows}


def node_rows(events: list[dict], repeat: int) -> list[dict]:
    """Per-node median ms from ORT's trace events, in execution order, warm-up dropped."""
    times: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            times[node].append(e["dur"] / 1e3)
            ops[node] = e.get("args", {}).get("op_name", "?")
    return [{"node": n, "op": ops[n], "ms": median(t[-repeat:])} for n, t in times.items()]


def format_ort_profile(prof: dict) -> str:
    """The peer's table: node, op, ms, share."""
    lines = [f"# {prof['model']} in ONNX Runtime (float32), profiled on {prof['where']}, input "
             f"{'x'.join(map(str, prof['input']))}", "",
             "| node | op | ms | share |", "|---|---|---|---|"]
    for r in prof["rows"]:
        lines.append(f"| {r['node']} | {r['op']} | {r['ms']:.3f} | {100 * r['share']:.1f}% |")
    lines.append(f"| **total** | | {prof['total_ms']:.3f} | 100% |")
    return "\n".join(lines)
