"""The TVM compile pipeline: export -> Relax -> named passes -> tuning -> build -> artifact."""

from .builder import BuildConfig, BuildError, build
from .passes import DEFAULT_PASSES, PASSES, run_passes

__all__ = ["BuildConfig", "BuildError", "DEFAULT_PASSES", "PASSES", "build", "run_passes"]
