"""ncnn's per-layer profile of an artifact's model, where the artifact runs.

``edge-sr profile --ncnn`` puts ncnn's layers beside TVM's kernels, on this machine or on
the device over RPC (``edge_sr.ncnn_profile`` of our server), to show layer by layer
where the two differ. ncnn has no per-layer timer in Python, so
``runtime.profile.ncnn_profile`` times each layer as the cost of extracting its output
less that of its inputs; its rows are ncnn's layers as pnnx wrote them (separate PReLU
layers, Split and Crop for GhostSR's shifts).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from runtime.artifact import read_manifest

from ..device.rpc import DeviceError, connect, first_line
from ..models import load_model
from . import ncnn_pnnx


def require() -> None:
    """Refuse in one line where ncnn or pnnx (the ``ncnn`` extra) is missing."""
    if not ncnn_pnnx.available():
        raise DeviceError("--ncnn needs ncnn and pnnx (pip install -e '.[ncnn]')")


def profile_ncnn(artifact: str | Path, device: str | None = None, tracker: str | None = None,
                 key: str = "", repeat: int = 5) -> dict:
    """Per-layer median times of the artifact's model in ncnn (float32) at its input shape.

    The model is the deploy form converted by pnnx, as ``bench`` converts it.

    Returns:
        ``{"model", "where", "input", "total_ms", "rows": [{"layer", "type", "output",
        "ms", "cumulative_ms", "share"}], "ncnn", "threads"}``.
    """
    require()
    manifest = read_manifest(artifact)
    shape = [int(d) for d in manifest["input"]["shape"]]
    model = load_model(manifest["model"], manifest["build"]["config"].get("weights"))
    with tempfile.TemporaryDirectory() as work:
        param = ncnn_pnnx.export_ncnn(model, tuple(shape), Path(work) / "model")
        weights = param.with_suffix(".bin")
        if device or tracker:
            prof = _remote(param, weights, shape, repeat, device, tracker, key)
        else:
            from runtime.profile import ncnn_profile

            prof = ncnn_profile(str(param), str(weights), shape, repeat)
    summed = sum(r["ms"] for r in prof["rows"])
    for r in prof["rows"]:
        r["share"] = r["ms"] / summed if summed else 0.0
    return {"model": manifest["model"], "where": tracker or device or "local",
            "input": shape, **prof}


def _remote(param: Path, weights: Path, shape: list[int], repeat: int, device, tracker,
            key) -> dict:
    """``edge_sr.ncnn_profile`` on the device; its one-line error if ncnn is missing."""
    sess = connect(device, tracker, key)
    try:
        for f in (param, weights):
            sess.upload(str(f), target=f.name)
        res = json.loads(sess.get_function("edge_sr.ncnn_profile")(
            param.name, weights.name, json.dumps(shape), repeat))
    except Exception as exc:  # noqa: BLE001 - RPC errors come in many types
        raise DeviceError(f"ncnn profiling on {tracker or device} failed: "
                          f"{first_line(exc)} (is it our runtime.server?)") from None
    if "error" in res:
        raise DeviceError(f"ncnn profiling on {tracker or device}: {res['error']}")
    return res


def format_ncnn_profile(prof: dict) -> str:
    """The peer's table: layer, type, output, ms, share, cumulative ms."""
    lines = [f"# {prof['model']} in ncnn {prof['ncnn']} (float32, {prof['threads']} threads), "
             f"profiled on {prof['where']}, input {'x'.join(map(str, prof['input']))}", "",
             "| layer | type | output | ms | share | cumulative ms |", "|---|---|---|---|---|---|"]
    for r in prof["rows"]:
        lines.append(f"| {r['layer']} | {r['type']} | {'x'.join(map(str, r['output']))} | "
                     f"{r['ms']:.3f} | {100 * r['share']:.1f}% | {r['cumulative_ms']:.3f} |")
    lines.append(f"| **whole network** | | | {prof['total_ms']:.3f} | | |")
    return "\n".join(lines)
