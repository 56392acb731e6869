"""Load a verified artifact and run it: locally on the device, or through an RPC session.

TVM runtime + numpy only (``tvm.runtime.vm``; the compiler-side ``tvm.relax`` is not
available in the runtime-only TVM the device uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .artifact import ArtifactError, check_machine, read_manifest, verified_library
from .threads import AdaptivePool, configure_pool
from .tiling import upscale_tiled


class Engine:
    """A loaded module with its manifest; calling it maps one input tensor to one output.

    Args:
        vm: A ``tvm.runtime.vm.VirtualMachine`` (local or remote).
        device: The TVM device the VM runs on.
        manifest: The artifact's manifest.
        pool: The local CPU pool to keep sized to the machine's load between calls
            (``load_local`` gives one; None for remote and GPU modules).
    """

    def __init__(self, vm, device, manifest: dict, pool: AdaptivePool | None = None):
        self.vm, self.device, self.manifest, self.pool = vm, device, manifest, pool
        self.func = vm["main"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.func, x)

    def _run(self, func, x: np.ndarray) -> np.ndarray:
        import tvm

        if self.pool is not None:
            self.pool.update()
        return func(tvm.runtime.tensor(np.ascontiguousarray(x), self.device)).numpy()

    @property
    def frame_format(self) -> dict | None:
        """The module's ``frame`` function (pix_fmt, width, height, bytes in and out), or
        None when it was built without one."""
        return self.manifest.get("frame")

    def frame(self, raw: np.ndarray) -> np.ndarray:
        """One raw frame (flat uint8, ``frame_format``'s size and pixel format) -> the
        upscaled raw frame, its colour work done in the module."""
        return self._run(self.vm["frame"], raw)

    @property
    def io(self) -> str:
        """The module's image dtype: ``float32`` ([0, 1]) or ``uint8`` ([0, 255])."""
        return self.manifest["input"].get("dtype", "float32")

    @property
    def tile(self) -> tuple[int, int]:
        """The fixed input (H, W) of the module."""
        shape = self.manifest["input"]["shape"]
        return int(shape[2]), int(shape[3])

    def upscale(self, planes: np.ndarray,
                progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
        """CxHxW model input (any size) -> C x sH x sW output, tiled seamlessly.

        ``planes`` in the module's own dtype (float32 on [0, 1], or uint8) come back in
        it; float32 planes given to a uint8 module are rounded to pixels on the way in
        and the output is returned as float32 on [0, 1] again.
        """
        m = self.manifest
        tile = self.tile
        if m["input"].get("dynamic"):  # run whole images (up to the bound) without padding
            tile = (min(tile[0], planes.shape[1]), min(tile[1], planes.shape[2]))
        convert = self.io == "uint8" and planes.dtype != np.uint8
        if convert:
            planes = np.floor(np.clip(planes, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        out = upscale_tiled(planes, self, tile, int(m["scale"]),
                            int(m["receptive_radius"]), progress=progress)
        return out.astype(np.float32) / np.float32(255.0) if convert else out


def load_local(artifact: str | Path, which: str = "library") -> Engine:
    """Verify (sha256, CPU architecture) and load an artifact on this machine."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    manifest = read_manifest(artifact)
    if which == "library":
        check_machine(manifest)
    gpu = which == "library" and manifest["target"].get("kind") == "cuda"
    pool = None
    if gpu:
        ensure_cuda_runtime()
    else:
        configure_pool()
        pool = AdaptivePool()
    lib = tvm.runtime.load_module(str(verified_library(artifact, manifest, which)))
    dev = tvm.cuda() if gpu else tvm.cpu()
    if gpu and not dev.exist:
        raise ArtifactError(f"{artifact} is a CUDA module and this machine has no CUDA GPU")
    return Engine(VirtualMachine(lib, dev), dev, manifest, pool)


def ensure_cuda_runtime() -> None:
    """Register TVM's CUDA module loader.

    A runtime-only TVM (``TVM_USE_RUNTIME_LIB=1``, or a package without the compiler
    library: what a device gets) skips the backend autoload, so ``libtvm_runtime_cuda``
    must be loaded by hand before a CUDA library can be.

    Raises:
        ArtifactError: This TVM has no CUDA runtime, or CUDA's libraries are missing.
    """
    import tvm

    if not tvm.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True):
        _load_cuda_sidecar()
    from tvm.base import _RUNTIME_ONLY

    if _RUNTIME_ONLY or not tvm.get_global_func("tvm_callback_cuda_compile", allow_missing=True):
        _register_nvrtc()


def _load_cuda_sidecar() -> None:
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[runtime_dir],
            mode="RTLD_LOCAL")
    except (OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"this TVM cannot load CUDA modules: {first}") from None


def _register_nvrtc() -> None:
    # TVM 0.27 libraries carry their CUDA kernels as source, compiled with NVRTC when
    # the module loads. TVM's own hook asks the compiler library for the current target,
    # which a runtime-only TVM lacks: compile for this GPU's own architecture instead.
    import os

    import tvm
    import tvm_ffi

    try:
        import cuda.bindings.nvrtc  # noqa: F401
    except ImportError:
        raise ArtifactError("CUDA modules are compiled with NVRTC when loaded: "
                            "pip install cuda-bindings (matching the CUDA driver)") from None
    from tvm.support.nvcc import compile_cuda

    if "CUDA_PATH" not in os.environ and os.path.isdir("/usr/local/cuda/include"):
        os.environ["CUDA_PATH"] = "/usr/local/cuda"  # NVRTC needs the CUDA headers
    arch = "sm_" + tvm.cuda().compute_version.replace(".", "")
    tvm_ffi.register_global_func(
        "tvm_callback_cuda_compile",
        lambda code: compile_cuda(code, target_format="cubin", arch=arch, compiler="nvrtc"),
        override=True)
