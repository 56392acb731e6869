"""edge-sr: lightweight super-resolution from PyTorch to edge devices through Apache TVM."""

import runtime as _runtime  # noqa: F401  (sets TVM's thread count to the physical cores)

__version__ = "0.1.0"
