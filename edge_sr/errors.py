"""The base of edge-sr's one-line errors: CLIs print a subclass as one line, no traceback."""

from __future__ import annotations


class EdgeSRError(Exception):
    """Base of edge-sr's own one-line errors (build, device, artifact problems)."""
