"""Load a verified artifact and run it: locally on the device, or through an RPC session.

TVM runtime + numpy only (``tvm.runtime.vm``; the compiler-side ``tvm.relax`` is not
available in the runtime-only TVM the device uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .artifact import check_machine, read_manifest, verified_library
from .tiling import upscale_tiled


class Engine:
    """A loaded module with its manifest; calling it maps one input tensor to one output.

    Args:
        vm: A ``tvm.runtime.vm.VirtualMachine`` (local or remote).
        device: The TVM device the VM runs on.
        manifest: The artifact's manifest.
    """

    def __init__(self, vm, device, manifest: dict):
        self.vm, self.device, self.manifest = vm, device, manifest
        self.func = vm["main"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import tvm

        return self.func(tvm.runtime.tensor(np.ascontiguousarray(x), self.device)).numpy()

    @property
    def tile(self) -> tuple[int, int]:
        """The fixed input (H, W) of the module."""
        shape = self.manifest["input"]["shape"]
        return int(shape[2]), int(shape[3])

    def upscale(self, planes: np.ndarray,
                progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
        """CxHxW float32 model input (any size) -> C x sH x sW output, tiled seamlessly."""
        m = self.manifest
        tile = self.tile
        if m["input"].get("dynamic"):  # run whole images (up to the bound) without padding
            tile = (min(tile[0], planes.shape[1]), min(tile[1], planes.shape[2]))
        return upscale_tiled(planes, self, tile, int(m["scale"]),
                             int(m["receptive_radius"]), progress=progress)


def load_local(artifact: str | Path, which: str = "library") -> Engine:
    """Verify (sha256, CPU architecture) and load an artifact on this machine."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    manifest = read_manifest(artifact)
    if which == "library":
        check_machine(manifest)
    lib = tvm.runtime.load_module(str(verified_library(artifact, manifest, which)))
    gpu = which == "library" and manifest["target"].get("kind") == "cuda"
    dev = tvm.cuda() if gpu else tvm.cpu()
    return Engine(VirtualMachine(lib, dev), dev, manifest)
