"""CUDA kernels: compile them at build time, so that a kernel that does not compile fails
the build on the host instead of the load on the device.

TVM 0.27 keeps a CUDA module's kernels as CUDA source inside the exported library and
compiles them with NVRTC when the module is loaded (``CUDAModuleNode::JitCompileFromSource``;
``runtime/engine.py`` registers that hook on a runtime-only TVM). The build compiles the
same source once with the toolkit's ``nvcc`` for the target's architecture and records it.
"""

from __future__ import annotations

import subprocess
import time

import tvm

from ..errors import EdgeSRError


class CudaCompileError(EdgeSRError):
    """The toolkit rejected the generated CUDA kernels (one line)."""


def cuda_sources(ex) -> list[str]:
    """The CUDA source of every CUDA module inside a built executable."""
    out, stack = [], [ex.mod]
    while stack:
        mod = stack.pop()
        if mod.kind == "cuda":
            out.append(mod.inspect_source())
        stack.extend(mod.imports)
    return out


def check_cuda_kernels(ex, target: tvm.target.Target) -> dict:
    """Compile the executable's CUDA kernels with ``nvcc`` for ``target``'s arch.

    Returns:
        The manifest's ``cuda`` entry: arch, kernel count, fatbin size, nvcc version.

    Raises:
        CudaCompileError: No CUDA module in it, or nvcc rejected the kernels (first error line).
    """
    from tvm.support import nvcc

    sources = cuda_sources(ex)
    if not sources:
        raise CudaCompileError("the CUDA build holds no CUDA kernels (did dlight_gpu run?)")
    arch = str(target.attrs["arch"])
    t0, size = time.time(), 0
    for src in sources:
        try:
            with target:
                size += len(nvcc.compile_cuda(src, "fatbin", arch=arch, compiler="nvcc"))
        except Exception as exc:  # nvcc's log: keep the first line that says error
            lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()]
            raise CudaCompileError(f"nvcc could not compile the CUDA kernels for {arch}: "
                                   f"{(lines or [type(exc).__name__])[0].strip()}") from None
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    return {"arch": arch, "kernels": sum(s.count("__global__") for s in sources),
            "fatbin_bytes": size, "compile_seconds": round(time.time() - t0, 1),
            "nvcc": (version.strip().splitlines() or ["?"])[-1],
            "in_library": "CUDA source, compiled by NVRTC when the module loads (TVM 0.27)"}
