"""RPC sessions with a board's server, with one-line errors for the usual failures."""

from __future__ import annotations

import json
import socket

from ..errors import EdgeSRError


class DeviceError(EdgeSRError):
    """A device-side failure (unreachable, timeout, wrong architecture), in one line."""


def parse_device(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a one-line error."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise DeviceError(f"device address must be HOST:PORT, got {text!r}")
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
        raise DeviceError("no device: give --device HOST:PORT or --tracker HOST:PORT --key KEY")
    host, port = parse_device(addr)
    # Probe first: TVM's own connect retries and raises a multi-line traceback.
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 10)):
            pass
    except OSError as exc:
        hint = " (start it with `scripts/emulated-pi start`)" if host in ("127.0.0.1",
                                                                        "localhost") else ""
        raise DeviceError(f"device {addr} is not answering: {exc.strerror or exc}{hint}") from None
    try:
        if tracker:
            if not key:
                raise DeviceError("--tracker needs --key (the device key, e.g. rpi4)")
            sess = rpc.connect_tracker(host, port).request(key, session_timeout=timeout)
        else:
            sess = rpc.connect(host, port, session_timeout=timeout)
        configure_threads(sess)
        return sess
    except DeviceError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM raises TVMError/RuntimeError variants
        raise DeviceError(f"RPC session with {addr} failed: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The line of a (TVM, multi-line) exception that says what failed."""
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
