"""Background CPU load: N processes that spin, for measuring latency on a busy machine.

A board running a camera pipeline, an encoder and a network stack next to the model
has cores that are not free; ``edge-sr bench --load N`` measures every runtime with N
such spinners running (here, or on the device over RPC). Each spinner stops itself
after ``seconds`` even if whoever started it dies without stopping it.
"""

from __future__ import annotations

import subprocess
import sys

# Pure Python, no imports beyond the standard library: one busy core each.
SPIN = ("import sys, time\n"
        "end = time.monotonic() + float(sys.argv[1])\n"
        "while time.monotonic() < end:\n"
        "    pass\n")
MAX_SECONDS = 3600.0

_running: list[subprocess.Popen] = []


def start(n: int, seconds: float) -> list[subprocess.Popen]:
    """Start ``n`` spinning processes that end by themselves after ``seconds``."""
    if n < 0 or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"load: {n} processes for {seconds:g} s is out of range "
                         f"(n >= 0, 0 < seconds <= {MAX_SECONDS:g})")
    procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    _running.extend(procs)
    return procs


def stop(procs: list[subprocess.Popen] | None = None) -> int:
    """Kill spinners (default: every one this process started); returns how many."""
    procs = list(_running) if procs is None else procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p in _running:
            _running.remove(p)
    return len(procs)


def register() -> None:
    """Register ``edge_sr.load_start(n, seconds) -> n`` and ``edge_sr.load_stop() -> n``
    for the host to load the device over RPC."""
    import tvm

    tvm.register_global_func("edge_sr.load_start",
                             lambda n, seconds: len(start(int(n), float(seconds))),
                             override=True)
    tvm.register_global_func("edge_sr.load_stop", lambda: stop(), override=True)
