"""The base of edge-sr's one-line errors: CLIs print a subclass as one line, no traceback."""

from __future__ import annotations


class EdgeSRError(Exception):
    """Base of edge-sr's own one-line errors (build, device, artifact problems)."""


def last_line(exc: BaseException) -> str:
    """The last line of an exception's message (its type's name when it has none): where
    TVM's multi-line errors say what failed."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
