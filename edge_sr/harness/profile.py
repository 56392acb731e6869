"""``edge-sr profile``: per-kernel times of an artifact where it runs, mapped to layers.

The device times each kernel through the VM's instrument hook (``runtime.profile``, the
``edge_sr.profile`` function of our RPC server); the host maps convolution kernels, in
execution order, to the model's convolution layers and their MACs.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.artifact import check_machine, read_manifest, verified_library

from ..device.rpc import DeviceError, connect, first_line
from ..models import load_model
from ..models.analysis import layer_macs
from ..models.torch_passes import TORCH_PASSES, run_torch_passes
from .remote import upload_library


def profile_artifact(artifact: str | Path, device: str | None = None,
                     tracker: str | None = None, key: str = "", repeat: int = 5) -> dict:
    """Per-kernel median times (ms) of one forward pass, locally or on a device.

    Returns:
        ``{"model", "target", "where", "input", "total_ms", "rows": [{"layer", "kernel",
        "shape", "macs", "ms", "share"}]}``.
    """
    manifest = read_manifest(artifact)
    lib = verified_library(artifact, manifest)
    shape = manifest["input"]["shape"]
    io = manifest["input"].get("dtype", "float32")
    if device or tracker:
        sess = connect(device, tracker, key)
        name = upload_library(sess, artifact, manifest)  # refuses another architecture
        try:
            what = shape if io == "float32" else {"shape": shape, "dtype": io}
            calls = json.loads(sess.get_function("edge_sr.profile")(name, json.dumps(what),
                                                                      repeat))
        except Exception as exc:  # noqa: BLE001 - RPC errors come in many types
            raise DeviceError(f"profiling on {tracker or device} failed: "
                               f"{first_line(exc)} (is it our runtime.server?)") from None
        where = tracker or device
    else:
        check_machine(manifest)  # an aarch64 library cannot be profiled here
        from runtime.profile import profile_module

        calls = profile_module(str(lib), shape, repeat, io)
        where = "local"
    model = load_model(manifest["model"], manifest["build"]["config"].get("weights"))
    # the layers the module computes: the build's PyTorch rewrites can merge them (XLSR's
    # four head convs are one). subpixel_deconv keeps one conv per deconv: the deconv's
    # own name and useful MACs read better.
    model = run_torch_passes(model, [n for n in manifest.get("torch_passes", [])
                                     if n in TORCH_PASSES and n != "subpixel_deconv"])
    rows = map_layers(calls, layer_macs(model, tuple(shape)))
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total if total else 0.0
    return {"model": manifest["model"], "target": manifest["target"]["name"],
            "dtype": manifest.get("dtype", "float32"), "where": where, "input": shape,
            "tuning": manifest["tuning"]["state"], "total_ms": total, "rows": rows}


def map_layers(calls: list[dict], layers: list[dict]) -> list[dict]:
    """Pair conv kernels with conv layers in order; other kernels have no layer.

    A kernel computes as many conv layers as its name says ``conv2d`` (``conv_chain``'s
    fused kernels hold two); its row names them all and sums their MACs.
    """
    counts = [c["kernel"].count("conv2d") for c in calls]
    pair = sum(counts) == len(layers)  # else fusion changed the count: kernel names only
    it = iter(layers)
    rows = []
    for c, n in zip(calls, counts):
        mine = [next(it) for _ in range(n)] if pair else []
        rows.append({"layer": "+".join(m["layer"] for m in mine) or "-", "kernel": c["kernel"],
                     "shape": c["args"][-1] if c["args"] else [],
                     "macs": sum(m["macs"] for m in mine), "ms": c["ms"]})
    return rows


def format_profile(prof: dict) -> str:
    """The per-layer table: layer, kernel, output shape, MMACs, ms, share."""
    lines = [f"# {prof['model']} ({prof['dtype']}, {prof['target']}, {prof['tuning']}) "
             f"profiled on {prof['where']}, input {'x'.join(map(str, prof['input']))}", "",
             "| layer | kernel | output | MMAC | ms | share |", "|---|---|---|---|---|---|"]
    for r in prof["rows"]:
        lines.append(f"| {r['layer']} | {r['kernel']} | {'x'.join(map(str, r['shape']))} | "
                     f"{r['macs'] / 1e6:.1f} | {r['ms']:.3f} | {100 * r['share']:.1f}% |")
    lines.append(f"| **total** | | | {sum(r['macs'] for r in prof['rows']) / 1e6:.1f} | "
                 f"{prof['total_ms']:.3f} | 100% |")
    return "\n".join(lines)
