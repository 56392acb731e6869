"""A device session that survives faults: every remote call has a deadline, a dead or
hung server is reconnected with backoff (restarted first, when a restart hook is given,
e.g. over the board's serial console), and the engine is loaded again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..device.rpc import DeviceError, connect, device_info, first_line
from .remote import remote_engine


class DeviceFault(DeviceError):
    """The device stopped answering (server died, connection lost, call timed out)."""


def timed(fn: Callable[..., Any], *args, timeout: float, what: str = "call") -> Any:
    """Run ``fn(*args)`` with a deadline.

    TVM's RPC client blocks in a socket read with no timeout of its own, so the call runs
    in a daemon thread; past the deadline it is abandoned (with its session) and
    ``DeviceFault`` is raised. Exceptions of ``fn`` are re-raised as they are.
    """
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name=f"edge-sr {what}")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DeviceFault(f"device did not answer the {what} within {timeout:.0f} s (hung?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@dataclass
class Resilience:
    """How hard the harness tries before giving up on a device.

    Attributes:
        call_timeout: Seconds one remote call (an image, the latency run) may take.
        connect_timeout: Seconds to open a session (a tracker queue waits longer:
            ``queue_timeout``).
        queue_timeout: Seconds to wait for a tracker to grant the device.
        retries: Reconnection attempts after a fault.
        backoff: First wait before reconnecting (seconds); doubles per attempt.
    """

    call_timeout: float = 300.0
    connect_timeout: float = 60.0
    queue_timeout: float = 3600.0
    retries: int = 3
    backoff: float = 1.0


class DeviceSession:
    """RPC session + loaded engine for one artifact, reopened after faults.

    Args:
        device, tracker, key, session_timeout: As for ``device.rpc.connect``.
        artifact, manifest: What to load on the device.
        policy: Timeouts and retries.
        restart: Called before each reconnection attempt to bring the server back
            (e.g. ``start_rpc`` over the serial console); None to just reconnect.
        log: Receives one line per fault and recovery step.
    """

    def __init__(self, device, tracker, key, session_timeout, artifact, manifest,
                 policy: Resilience, restart: Callable[[], None] | None = None,
                 log: Callable[[str], None] = lambda _: None):
        self.addr = (device, tracker, key, session_timeout)
        self.artifact, self.manifest, self.policy = artifact, manifest, policy
        self.restart, self.log = restart, log
        self.sess = self.engine = self.info = None
        self.reconnects = 0

    def open(self) -> None:
        """Connect, read the device's info and load the artifact (each with a deadline)."""
        device, tracker, key, session_timeout = self.addr
        wait = self.policy.queue_timeout if tracker else self.policy.connect_timeout
        error = None
        try:
            self.sess = timed(connect, device, tracker, key, session_timeout, timeout=wait,
                              what="connection")
            self.info = timed(device_info, self.sess, timeout=self.policy.connect_timeout,
                              what="device info")
            self.engine = timed(remote_engine, self.sess, self.artifact, self.manifest,
                                self.info, timeout=self.policy.call_timeout, what="upload")
        except Exception as exc:  # noqa: BLE001 - re-raised below, without its frames
            error = exc.with_traceback(None)
        if error is not None:
            # The traceback's frames hold the session; a TVM RPC server serves one session
            # at a time, so a refused artifact would keep the board busy for whoever
            # holds on to the exception (a test's pytest.raises, for one).
            self.sess = self.engine = None
            raise error

    def call(self, fn: Callable[..., Any], *args, what: str = "call") -> Any:
        """``fn(*args)`` on the device; any failure of the device becomes ``DeviceFault``."""
        try:
            return timed(fn, *args, timeout=self.policy.call_timeout, what=what)
        except DeviceFault:
            raise
        except Exception as exc:  # noqa: BLE001 - TVM's RPC errors have many types
            raise DeviceFault(f"{what} failed on the device: {first_line(exc)}") from None

    def recover(self) -> str | None:
        """Reconnect with backoff; None on success, else why it could not."""
        self.sess = self.engine = None
        reason = "no attempt made"
        for attempt in range(self.policy.retries):
            time.sleep(self.policy.backoff * 2**attempt)
            try:
                if self.restart is not None:
                    self.log(f"restarting the RPC server (attempt {attempt + 1})")
                    self.restart()
                self.open()
                self.reconnects += 1
                self.log(f"reconnected (attempt {attempt + 1})")
                return None
            except Exception as exc:  # noqa: BLE001 - every failure is a retry reason
                reason = first_line(exc)
                self.log(f"reconnect attempt {attempt + 1} failed: {reason}")
        return f"device lost after {self.policy.retries} reconnection attempts: {reason}"

    def final_info(self) -> dict | None:
        """The device's info at the end of a run (None if the session is gone)."""
        if self.sess is None:
            return None
        try:
            return timed(device_info, self.sess, timeout=self.policy.connect_timeout,
                         what="device info")
        except Exception:  # noqa: BLE001 - health is best effort at the end
            return None
