"""The serial console against a PTY with a login prompt (socat + bash on this host)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edge_sr.device import ConsoleConfig, ConsoleError, SerialConsole

pytestmark = pytest.mark.skipif(shutil.which("socat") is None,
                                reason="socat missing (scripts/emulated-pi setup installs it)")

LOGIN = r"""
for try in 1 2 3; do
  user=
  while [ -z "$user" ]; do printf '\nboard login: '; read -r user || exit 0; done
  printf 'Password: '; stty -echo; read -r pass; stty echo; printf '\n'
  if [ "$user" = pi ] && [ "$pass" = s3cret ]; then exec bash --norc --noprofile -i; fi
  printf 'Login incorrect\n'
done
"""


class Board:
    """A getty-like PTY: socat respawned in a loop, a login script, then bash."""

    def __init__(self, root: Path):
        self.tty, self.script = root / "tty", root / "login.sh"
        self.script.write_text(LOGIN)
        self.proc = None

    def start(self) -> None:
        loop = (f"while true; do socat PTY,link={self.tty},raw,echo=0,wait-slave "
                f"EXEC:'bash {self.script}',pty,setsid,ctty,stderr; sleep 0.1; done")
        self.proc = subprocess.Popen(["bash", "-c", loop], start_new_session=True)
        for _ in range(100):
            if self.tty.exists():
                return
            time.sleep(0.05)
        raise RuntimeError("socat did not create the PTY")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.tty.unlink(missing_ok=True)


@pytest.fixture
def board(tmp_path):
    b = Board(tmp_path)
    b.start()
    yield b
    b.stop()


def _console(board, **kw) -> SerialConsole:
    return SerialConsole(ConsoleConfig(str(board.tty), **{"user": "pi", "password": "s3cret",
                                                          "timeout": 10, **kw}))


def test_run_returns_output_and_exit_status(board):
    with _console(board) as con:
        res = con.run("echo one; echo 'two words' >&2; printf 'x%sy\\n' 1")
        assert res.output.splitlines() == ["one", "two words", "x1y"] and res.ok
        assert con.run("exit 3").status == 3
        assert con.run("true").output == ""
        assert con.run("echo ESRE_fake_0").output == "ESRE_fake_0"  # a marker look-alike


def test_password_never_reaches_the_transcript(board):
    with _console(board) as con:
        con.run("echo hi")
        assert b"s3cret" not in bytes(con.transcript)
        assert b"<password sent>" in bytes(con.transcript)


def test_wrong_password_is_refused(board):
    with pytest.raises(ConsoleError, match="refused for user 'pi'"):
        _console(board, password="wrong").open()


def test_missing_credentials_are_asked_for(board, monkeypatch):
    monkeypatch.delenv("EDGE_SR_SERIAL_USER", raising=False)
    with pytest.raises(ConsoleError, match="asks for a login"):
        _console(board, user=None).open()


def test_a_hanging_command_times_out_and_the_console_recovers(board):
    with _console(board) as con:
        with pytest.raises(ConsoleError, match="timed out after 1 s"):
            con.run("sleep 30", timeout=1)
        assert con.run("echo back").output.splitlines()[-1] == "back"


@pytest.mark.slow
def test_reconnect_after_the_board_reboots(board):
    with _console(board) as con:
        assert con.run("echo before").output == "before"
        board.stop()
        threading_start = time.monotonic()
        import threading

        threading.Timer(1.5, board.start).start()  # the board comes back 1.5 s later
        con.reconnect(wait=30)
        assert time.monotonic() - threading_start >= 1.0
        assert con.run("echo after").output == "after"


def test_missing_port_is_a_one_line_error(tmp_path):
    with pytest.raises(ConsoleError, match="cannot open serial port") as err:
        SerialConsole(ConsoleConfig(str(tmp_path / "nope"), open_wait=0.5)).open()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("size", [0, 1, 2999, 3000, 3001, 70_000])
def test_put_writes_the_exact_bytes(board, tmp_path, size):
    data = os.urandom(size)
    dst = tmp_path / "sent" / "lib.so"
    with _console(board) as con:
        digest = con.put(data, str(dst))
    assert dst.read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["lib.so"]  # no part files left


def test_put_that_fails_leaves_the_old_file(board, tmp_path):
    dst = tmp_path / "lib.so"
    dst.write_bytes(b"old")
    (tmp_path / "lib.so.part").mkdir()  # the decoded copy cannot be written (even by root)
    with _console(board) as con, pytest.raises(ConsoleError, match="failed on the board"):
        con.put(b"new bytes", str(dst))
    assert dst.read_bytes() == b"old"


def test_put_refuses_a_quote_in_the_path(board, tmp_path):
    with _console(board) as con, pytest.raises(ConsoleError, match="single quote"):
        con.put(b"x", str(tmp_path / "it's.so"))
