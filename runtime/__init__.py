"""The device side of edge-sr: RPC server launcher and the CLI upscaler.

Runs on the board (or the emulated one) with only the TVM runtime, numpy and pillow:
nothing here may import torch or the ``edge_sr`` package.

Importing it changes nothing: the entry points (``runtime.server``, ``runtime.upscale``
through ``engine.load_local``) call ``threads.prepare()`` before TVM starts its thread pool.
"""
