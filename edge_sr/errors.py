"""The exceptions that mean "the user gave bad input": CLIs print them as one line."""

from __future__ import annotations

from runtime.artifact import ArtifactError
from runtime.upscale import ImageError
from targets import TargetError

from .data.datasets import DatasetError
from .models import ModelError


class EdgeSRError(Exception):
    """Base of edge-sr's own one-line errors (build, device, artifact problems)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    EdgeSRError, DatasetError, ModelError, TargetError, ArtifactError, ImageError,
    FileNotFoundError)
