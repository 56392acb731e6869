"""edge-sr: lightweight super-resolution from PyTorch to edge devices through Apache TVM."""

__version__ = "0.1.0"
