"""``background_load``: spinning processes around a timed run, here or on the device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from runtime import load

# Spinners end by themselves after this long, whatever happens to the bench: a loaded
# run of the largest default model (tens of seconds under emulation) fits many times.
LOAD_SECONDS = 900.0


@contextmanager
def background_load(n: int, session=None, seconds: float = LOAD_SECONDS) -> Iterator[int]:
    """``n`` processes that each keep one core busy while the block runs.

    Args:
        n: Spinning processes (0: none).
        session: RPC session of a device: the spinners run there (its
            ``edge_sr.load_start``/``load_stop``), else on this machine.
        seconds: Upper bound on their life if they are never stopped.

    Yields:
        ``n``. They are stopped when the block ends, by an exception too.
    """
    if session is None:
        procs = load.start(n, seconds)
        try:
            yield n
        finally:
            load.stop(procs)
        return
    session.get_function("edge_sr.load_start")(n, seconds)
    try:
        yield n
    finally:
        session.get_function("edge_sr.load_stop")()
