"""The device side of edge-sr: RPC server launcher and the CLI upscaler.

Runs on the board (or the emulated one) with only the TVM runtime, numpy and pillow:
nothing here may import torch or the ``edge_sr`` package.
"""

from .threads import prepare

# Before anything starts TVM's thread pool: TVM would halve the cores on x86 and spin its
# idle workers (see threads).
prepare()
