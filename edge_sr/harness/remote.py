"""RPC sessions and remote engines, with one-line errors for the usual failures."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from runtime.artifact import ArtifactError, read_manifest, verified_library
from runtime.engine import Engine

from ..errors import EdgeSRError


class HarnessError(EdgeSRError):
    """A device-side failure (unreachable, timeout, wrong architecture), in one line."""


def parse_device(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a one-line error."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise HarnessError(f"device address must be HOST:PORT, got {text!r}")
    return host, int(port)


def connect(device: str | None, tracker: str | None = None, key: str = "",
            timeout: float = 300):
    """Open an RPC session directly (``device``) or through a tracker (``tracker`` + ``key``).

    Args:
        device: ``HOST:PORT`` of an RPC server.
        tracker: ``HOST:PORT`` of a tracker; queues behind other users of ``key``.
        key: Device key registered with the tracker.
        timeout: Session timeout in seconds (a hung device ends the session).
    """
    from tvm import rpc

    addr = tracker or device
    if not addr:
        raise HarnessError("no device: give --device HOST:PORT or --tracker HOST:PORT --key KEY")
    host, port = parse_device(addr)
    # Probe first: TVM's own connect retries and raises a multi-line traceback.
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 10)):
            pass
    except OSError as exc:
        hint = " (start it with `scripts/emulated-pi start`)" if host in ("127.0.0.1",
                                                                        "localhost") else ""
        raise HarnessError(f"device {addr} is not answering: {exc.strerror or exc}{hint}") from None
    try:
        if tracker:
            if not key:
                raise HarnessError("--tracker needs --key (the device key, e.g. rpi4)")
            sess = rpc.connect_tracker(host, port).request(key, session_timeout=timeout)
        else:
            sess = rpc.connect(host, port, session_timeout=timeout)
        configure_threads(sess)
        return sess
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM raises TVMError/RuntimeError variants
        raise HarnessError(f"RPC session with {addr} failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    tail = [ln for ln in lines if "Error" in ln] or lines or [type(exc).__name__]
    return tail[-1][:300]


def configure_threads(sess) -> int | None:
    """Set up the session's TVM thread pool the way ``load_local`` does on a device
    (``runtime.threads``); None on a stock TVM RPC server, which keeps TVM's pool."""
    try:
        f = sess.get_function("edge_sr.configure_threads")
    except Exception:  # noqa: BLE001 - the function is optional
        return None
    return int(f())


def device_info(sess) -> dict | None:
    """The device's ``edge_sr.device_info`` (None on a stock TVM RPC server)."""
    try:
        return json.loads(sess.get_function("edge_sr.device_info")())
    except Exception:  # noqa: BLE001 - the function is optional
        return None


def upload_library(sess, artifact: str | Path, manifest: dict,
                   info: dict | None = None) -> str:
    """Verify an artifact's library, check it fits the device, upload it.

    Args:
        info: The device's ``device_info`` if already read (else it is asked for).

    Returns:
        The library's name on the device.
    """
    lib = verified_library(artifact, manifest)
    info = info if info is not None else device_info(sess)
    arch = manifest["target"].get("arch")
    if info and arch and info["machine"] != arch:
        raise ArtifactError(f"artifact built for target {manifest['target']['name']} ({arch}) "
                            f"cannot run on this {info['machine']} device")
    remote_name = f"edge-sr-{manifest['library']['sha256'][:16]}.so"
    try:
        sess.upload(str(lib), target=remote_name)
    except Exception as exc:  # noqa: BLE001
        raise HarnessError(f"uploading {lib.name} to the device failed: "
                           f"{_first_line(exc)}") from None
    return remote_name


def remote_engine(sess, artifact: str | Path, manifest: dict | None = None,
                  info: dict | None = None) -> Engine:
    """Verify an artifact, check it fits the device, upload it and load it remotely."""
    from tvm.runtime.vm import VirtualMachine

    manifest = manifest or read_manifest(artifact)
    remote_name = upload_library(sess, artifact, manifest, info)
    try:
        rlib = sess.load_module(remote_name)
        dev = sess.cuda() if manifest["target"].get("kind") == "cuda" else sess.cpu()
        return Engine(VirtualMachine(rlib, dev), dev, manifest)
    except Exception as exc:  # noqa: BLE001
        raise HarnessError(f"loading {remote_name} on the device failed: "
                           f"{_first_line(exc)}") from None
