"""``bench-device --stream``: the device's stream pipeline (``runtime.stream``) timed on
the device itself, against its module alone, over RPC or over the serial console (a board
with no network: the artifact travels over the console too)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.artifact import read_manifest

from ..device.board import stream_bench, upload_artifact
from ..device.console import ConsoleConfig, ConsoleError, SerialConsole
from ..device.rpc import DeviceError, connect, first_line
from .remote import upload_library


@dataclass
class StreamBenchConfig:
    """A device stream benchmark.

    Attributes:
        artifact: The artifact folder.
        device: RPC server ``HOST:PORT`` (or ``tracker`` + ``key``).
        size: Frame (width, height) in, ffmpeg's order.
        pix_fmt: ``yuv420p`` or ``rgb24``.
        frames: Frames timed (after one warm-up call of the module).
        side_nice: Niceness added to the stream's threads beside the module's.
        timeout: RPC session seconds (over the console: seconds for the benchmark).
        serial: Run over this serial console instead of RPC.
    """

    artifact: str | Path
    device: str | None = None
    tracker: str | None = None
    key: str = ""
    size: tuple[int, int] = (640, 360)
    pix_fmt: str = "yuv420p"
    frames: int = 30
    side_nice: int = 10
    timeout: float = 600
    serial: ConsoleConfig | None = None


def bench_stream(cfg: StreamBenchConfig) -> dict:
    """Upload the artifact's library and run ``edge_sr.stream_bench`` on the device.

    Raises:
        DeviceError: the device has no stream benchmark (an older runtime) or it failed.
    """
    manifest = read_manifest(cfg.artifact)
    if cfg.serial is not None:
        return _over_console(cfg, manifest)
    sess = connect(cfg.device, cfg.tracker, cfg.key, timeout=cfg.timeout)
    name = upload_library(sess, cfg.artifact, manifest)
    try:
        func = sess.get_function("edge_sr.stream_bench")
    except Exception:  # noqa: BLE001 - TVM's missing-function error
        raise DeviceError("the device's runtime has no edge_sr.stream_bench: update its "
                          "runtime/ folder and restart its server") from None
    try:
        out = json.loads(func(name, json.dumps(manifest), *cfg.size, cfg.pix_fmt, cfg.frames,
                              cfg.side_nice))
    except Exception as exc:  # noqa: BLE001
        raise DeviceError(f"the stream benchmark failed on the device: {first_line(exc)}") \
            from None
    if "error" in out:
        raise DeviceError(out["error"])
    return {**out, "artifact": str(cfg.artifact), "model": manifest.get("model"),
            "target": manifest["target"]["name"], "via": "rpc"}


def _over_console(cfg: StreamBenchConfig, manifest: dict) -> dict:
    """The same benchmark through the serial console: the artifact's library and manifest
    are written to the board over it, then ``python -m runtime.stream --bench`` runs there."""
    try:
        with SerialConsole(cfg.serial) as con:
            t0 = time.monotonic()
            remote = upload_artifact(con, cfg.artifact)
            upload_s = time.monotonic() - t0
            out = stream_bench(con, remote, cfg.size, cfg.pix_fmt, cfg.frames,
                               cfg.side_nice, cfg.timeout)
    except ConsoleError as exc:
        raise DeviceError(str(exc)) from None
    return {**out, "artifact": str(cfg.artifact), "model": manifest.get("model"),
            "target": manifest["target"]["name"], "via": "serial",
            "board_artifact": remote, "upload_s": round(upload_s, 1)}
