"""A board's serial console over pyserial: log in, run a command, get output and status.

Works over any pyserial URL: ``/dev/ttyUSB0``, ``/dev/ttyAMA0``, a PTY path,
``socket://HOST:PORT`` (QEMU's ``-serial tcp::PORT,server``), ``loop://`` in tests.

Commands are framed by sentinel lines that the echoed command text cannot contain
(``printf '%s_%s' ESRB NONCE`` prints ``ESRB_NONCE``; its echo shows the format string),
so output and exit status are found by matching, never by sleeping. Passwords are sent
but never written to the transcript.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass, field

from ..errors import EdgeSRError

LOGIN_RE = re.compile(rb"login:\s*$")
PASSWORD_RE = re.compile(rb"[Pp]assword:\s*$")
PROMPT_RE = re.compile(rb"[#$>]\s*$")
INCORRECT_RE = re.compile(rb"Login incorrect|Authentication failure", re.I)
# base64 characters per command line when writing a file: a terminal in canonical mode
# keeps at most 4095 characters of one line.
PUT_CHUNK = 3000


class ConsoleError(EdgeSRError):
    """A serial console failure (no port, login refused, timeout), in one line."""


class LoginRefused(ConsoleError):
    """Wrong or missing credentials: retrying would not help."""


@dataclass
class CommandResult:
    """What a command printed (stdout and stderr, merged) and its exit status."""

    output: str
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass
class ConsoleConfig:
    """How to reach and log in to a board's console.

    Attributes:
        port: A pyserial URL or device path.
        baudrate: Line speed (ignored by PTYs and sockets).
        user: Login name, if the console asks (default ``$EDGE_SR_SERIAL_USER``).
        password: Password (default ``$EDGE_SR_SERIAL_PASSWORD``); never logged.
        timeout: Default seconds to wait for a prompt or a command.
        open_wait: Seconds to keep retrying a port that is not there yet (a USB serial
            adapter re-enumerating, a console PTY being respawned).
    """

    port: str
    baudrate: int = 115200
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    open_wait: float = 5.0

    def __post_init__(self):
        self.user = self.user or os.environ.get("EDGE_SR_SERIAL_USER")
        self.password = self.password or os.environ.get("EDGE_SR_SERIAL_PASSWORD")


class SerialConsole:
    """A logged-in shell on a board's serial console.

    Use as a context manager: ``with SerialConsole(ConsoleConfig("/dev/ttyUSB0")) as c:
    print(c.run("uname -a").output)``.
    """

    def __init__(self, cfg: ConsoleConfig):
        self.cfg = cfg
        self.port = None
        self.transcript = bytearray()  # what the board printed (for error reports)

    def __enter__(self) -> SerialConsole:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------
    def open(self, wait: float | None = None) -> None:
        """Open the port (retrying up to ``wait`` seconds, default ``cfg.open_wait``) and
        log in."""
        import serial

        deadline = time.monotonic() + (self.cfg.open_wait if wait is None else wait)
        while True:
            try:
                self.port = serial.serial_for_url(self.cfg.port, baudrate=self.cfg.baudrate,
                                                  timeout=0.1)
                self.login()
                return
            except LoginRefused:
                self.close()
                raise
            except (serial.SerialException, OSError, ValueError, ConsoleError) as exc:
                # A port that is not there yet, or one torn down under us (EIO while a
                # getty respawns or a USB adapter re-enumerates): try again until the
                # deadline.
                self.close()
                if time.monotonic() >= deadline:
                    if isinstance(exc, ConsoleError):
                        raise
                    raise ConsoleError(f"cannot open serial port {self.cfg.port}: "
                                       f"{_reason(exc)}") from None
                time.sleep(0.5)

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except OSError:
                pass
            self.port = None

    def reconnect(self, wait: float = 120.0) -> None:
        """Close and open again, waiting for the board (e.g. after a reboot)."""
        self.close()
        self.open(wait=wait)

    # -- low level ------------------------------------------------------------------
    def _write(self, text: str, secret: bool = False) -> None:
        if self.port is None:
            raise ConsoleError(f"serial console {self.cfg.port} is not open")
        try:
            self.port.write(text.encode())
            self.port.flush()
        except OSError as exc:
            raise ConsoleError(f"writing to {self.cfg.port} failed: {_reason(exc)}") from None
        if secret:
            self.transcript += b"<password sent>\n"

    def _read_until(self, patterns: list[re.Pattern], timeout: float) -> tuple[int, bytes]:
        """Read until one of ``patterns`` matches the text read so far; (index, text)."""
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.port.read(4096)
            except OSError as exc:
                raise ConsoleError(f"reading {self.cfg.port} failed: {_reason(exc)}") from None
            if chunk:
                buf += chunk
                self.transcript += chunk
                del self.transcript[:-65536]
                for i, pat in enumerate(patterns):
                    if pat.search(bytes(buf)):
                        return i, bytes(buf)
        tail = bytes(buf[-120:]).decode(errors="replace").strip().replace("\n", " | ")
        raise ConsoleError(f"timed out after {timeout:.0f} s on {self.cfg.port} "
                           f"(last output: {tail or 'nothing'})")

    # -- login and commands ---------------------------------------------------------
    def login(self) -> None:
        """Get to a shell: answer login/password prompts, then make the shell quiet."""
        patterns = [INCORRECT_RE, LOGIN_RE, PASSWORD_RE, PROMPT_RE]
        try:  # a fresh console prints its prompt; an idle one needs a newline to show it
            which, _ = self._read_until(patterns, 1.5)
        except ConsoleError:
            self._write("\n")
            which, _ = self._read_until(patterns, self.cfg.timeout)
        sent_user = sent_password = False
        while which != 3:
            if which == 0 or (which == 1 and sent_user):
                raise LoginRefused(f"login on {self.cfg.port} refused for user "
                                   f"{self.cfg.user!r}")
            if which == 1:
                if not self.cfg.user:
                    raise LoginRefused(f"{self.cfg.port} asks for a login: give --user "
                                       "(or EDGE_SR_SERIAL_USER)")
                self._write(self.cfg.user + "\n")
                sent_user = True
            else:
                if sent_password or self.cfg.password is None:
                    raise LoginRefused(f"{self.cfg.port} asks for a password: give "
                                       "EDGE_SR_SERIAL_PASSWORD (or --password)")
                self._write(self.cfg.password + "\n", secret=True)
                sent_password = True
            which, _ = self._read_until(patterns, self.cfg.timeout)
        # No echo, a plain prompt, no pager: command output is then only output.
        self.run("stty -echo 2>/dev/null; export PS1='$ ' PAGER=cat TERM=dumb", timeout=30)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` in the board's shell; stdin is /dev/null, stderr is merged.

        Raises:
            ConsoleError: when the command does not finish within ``timeout`` (the
                console is then interrupted with Ctrl-C so the next command can run).
        """
        nonce = secrets.token_hex(4)
        begin, end = f"ESRB_{nonce}", f"ESRE_{nonce}"
        line = (f"printf '\\n%s_%s\\n' ESRB {nonce}; ( {command} ) </dev/null 2>&1; "
                f"printf '\\n%s_%s_%s\\n' ESRE {nonce} $?\n")
        self._write(line)
        done = re.compile(rf"{end}_(\d+)\r?\n".encode())
        try:
            _, text = self._read_until([done], timeout or self.cfg.timeout)
        except ConsoleError:
            self._write("\x03\n")  # interrupt whatever still runs
            raise ConsoleError(f"command timed out after {timeout or self.cfg.timeout:.0f} s "
                               f"on {self.cfg.port}: {command[:80]}") from None
        decoded = text.decode(errors="replace").replace("\r", "")
        start = decoded.rfind(begin + "\n")
        body = decoded[start + len(begin) + 1 : decoded.rfind(end)] if start >= 0 else ""
        status = int(done.search(text).group(1))
        return CommandResult(body.rstrip("\n"), status)

    def check(self, command: str, timeout: float | None = None) -> str:
        """Run a command that must succeed; its output."""
        res = self.run(command, timeout)
        if not res.ok:
            last = res.output.strip().splitlines()[-1:] or ["no output"]
            raise ConsoleError(f"`{command[:60]}` failed on the board (exit {res.status}): "
                               f"{last[0][:200]}")
        return res.output


    def put(self, data: bytes, remote: str, timeout: float | None = None) -> str:
        """Write ``data`` to the file ``remote`` on the board, through the console alone
        (no network): base64 lines appended to a part file, decoded, checked against the
        sha256 of ``data``, then renamed, so ``remote`` is never left half-written.

        Needs ``base64`` and ``sha256sum`` (coreutils) on the board.

        Returns:
            The sha256 of what was written.

        Raises:
            ConsoleError: a command failed or the board's copy differs.
        """
        if "'" in remote:
            raise ConsoleError(f"{remote!r}: a board path cannot contain a single quote")
        digest = hashlib.sha256(data).hexdigest()
        part = f"{remote}.part"
        text = base64.b64encode(data).decode()
        self.check(f"mkdir -p \"$(dirname '{remote}')\" && : > '{part}.b64'", timeout)
        for i in range(0, len(text), PUT_CHUNK):
            self.check(f"printf '%s' '{text[i:i + PUT_CHUNK]}' >> '{part}.b64'", timeout)
        got = self.check(f"base64 -d '{part}.b64' > '{part}' && rm -f '{part}.b64' && "
                         f"sha256sum '{part}'", timeout).split()
        if not got or got[0] != digest:
            self.run(f"rm -f '{part}'")
            raise ConsoleError(f"{remote}: the board's copy differs from the file sent "
                               f"(sha256 {(got or ['nothing'])[0][:12]}... != {digest[:12]}...)")
        self.check(f"mv -f '{part}' '{remote}'", timeout)
        return digest


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]
