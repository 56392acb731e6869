"""Device targets: one registry, ``TARGETS``, from name to everything a build needs.

Each entry is data: the TVM target dict (TVM 0.27 refuses target strings), the host
target for GPU code, the cross compiler that links the exported library and the Debian
package that provides it, the CPU architecture of the library (checked before upload),
RPC defaults, and the default MetaSchedule tuning budget.
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

AARCH64_TRIPLE = "aarch64-linux-gnu"
NCHW = {"float32": "NCHW", "int8": "NCHW"}


@dataclass(frozen=True)
class TargetSpec:
    """One device.

    Attributes:
        name: Registry key.
        tvm: TVM target dict. ``"mcpu": "native"`` means this machine's CPU.
        host: Host target dict for GPU targets (the CPU side of the module).
        cross_compiler: Linker for ``export_library`` (``None``: this machine's ``cc``).
        cross_package: Debian package that provides ``cross_compiler``.
        arch: Machine architecture of the exported library (``uname -m`` of the device).
        rpc_key: Tracker key of such devices.
        rpc_port: Default RPC server port.
        tuning_trials: Default MetaSchedule trial budget for one model.
        layouts: Conv data layout per dtype (``NCHW`` or ``NHWC``; the ``layout_nhwc``
            pass converts conv2d, never conv2d_transpose: TVM 0.27 computes it wrongly
            in NHWC).
        signed_int8: Store int8 activations signed (uint8 shifted by -128, bit-identical
            output) so that every int8 conv is int8 x int8: the form Arm's ``sdot`` takes.
        description: One line for ``edge-sr targets``.
    """

    name: str
    tvm: dict[str, Any]
    description: str
    host: dict[str, Any] | None = None
    cross_compiler: str | None = None
    cross_package: str | None = None
    arch: str = "x86_64"
    rpc_key: str = ""
    rpc_port: int = 9090
    tuning_trials: int = 2000
    notes: list[str] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=lambda: dict(NCHW))
    signed_int8: bool = False

    def layout(self, dtype: str) -> str:
        """Conv data layout of a ``dtype`` build on this target."""
        return self.layouts.get(dtype, "NCHW")

    @property
    def kind(self) -> str:
        """TVM target kind (``llvm`` or ``cuda``)."""
        return self.tvm["kind"]

    @property
    def is_remote(self) -> bool:
        """True when the module runs on another machine (over RPC)."""
        return self.cross_compiler is not None


def _pi(mcpu: str, mattr: list[str], key: str, desc: str) -> TargetSpec:
    # dotprod cores: int8 convs in NHWC (channels innermost, so LLVM's vectorizer turns
    # the int8 x int8 -> int32 channel reduction into sdot: 1 instruction per 16 MACs);
    # NCHW reduces over kernel taps first, which it cannot.
    dot = "+dotprod" in mattr
    return TargetSpec(
        name=key, description=desc,
        tvm={"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mcpu": mcpu, "mattr": mattr,
             "num-cores": 4},
        cross_compiler=f"{AARCH64_TRIPLE}-gcc", cross_package=f"gcc-{AARCH64_TRIPLE}",
        arch="aarch64", rpc_key=key, tuning_trials=1000,
        layouts={**NCHW, "int8": "NHWC"} if dot else dict(NCHW), signed_int8=dot,
    )


TARGETS: dict[str, TargetSpec] = {
    "host": TargetSpec(
        "host", {"kind": "llvm", "mcpu": "native"}, "this machine's CPU (x86-64)",
        notes=["mcpu is detected at build time; the library runs on this CPU only"]),
    "rpi3": _pi("cortex-a53", ["+neon"], "rpi3", "Raspberry Pi 3, 4x Cortex-A53 (aarch64)"),
    "rpi4": _pi("cortex-a72", ["+neon"], "rpi4", "Raspberry Pi 4, 4x Cortex-A72 (aarch64)"),
    "rpi5": _pi("cortex-a76", ["+neon", "+dotprod"], "rpi5",
                "Raspberry Pi 5, 4x Cortex-A76 with sdot/udot (aarch64)"),
    "qemu-aarch64": TargetSpec(
        **{**_pi("cortex-a72", ["+neon"], "qemu-aarch64", "").__dict__,
           "name": "qemu-aarch64",
           "description": "the rpi4 target, run on the emulated Pi (scripts/emulated-pi)",
           "notes": ["emulated timings are ratios, not a Pi's milliseconds"]}),
    "cuda": TargetSpec(
        "cuda", {"kind": "cuda", "arch": "sm_90"}, "NVIDIA Hopper GPU (H100/H200), x86 host",
        host={"kind": "llvm"}, tuning_trials=2000),
    "jetson-orin": TargetSpec(
        "jetson-orin", {"kind": "cuda", "arch": "sm_87"},
        "NVIDIA Jetson Orin (sm_87), aarch64 host",
        host={"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mcpu": "cortex-a78"},
        cross_compiler=f"{AARCH64_TRIPLE}-gcc", cross_package=f"gcc-{AARCH64_TRIPLE}",
        arch="aarch64", rpc_key="jetson-orin"),
}

ALIASES: dict[str, str] = {"arm": "rpi4", "gpu": "cuda", "x86": "host"}


class TargetError(ValueError):
    """An unknown target or a missing toolchain, with a one-line message."""


def get_target(name: str) -> TargetSpec:
    """Look up a target by name or alias, listing the valid ones when unknown."""
    key = ALIASES.get(name, name)
    if key not in TARGETS:
        names = sorted(TARGETS) + [f"{a} (={t})" for a, t in sorted(ALIASES.items())]
        raise TargetError(f"unknown target {name!r}; valid targets: {', '.join(names)}")
    return TARGETS[key]


def _resolve(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    if d.get("mcpu") == "native":
        from tvm.target import codegen

        d["mcpu"] = codegen.llvm_get_system_cpu()
        d.setdefault("num-cores", os.cpu_count() or 1)
    return d


def tvm_target(spec: TargetSpec):
    """The ``tvm.target.Target`` of a spec (host CPU detected where asked)."""
    import tvm

    if spec.host is not None:
        return tvm.target.Target(_resolve(spec.tvm), host=_resolve(spec.host))
    return tvm.target.Target(_resolve(spec.tvm))


def check_toolchain(spec: TargetSpec) -> None:
    """Raise ``TargetError`` naming the package to install when the linker is missing."""
    if spec.cross_compiler and shutil.which(spec.cross_compiler) is None:
        raise TargetError(f"target {spec.name} needs the cross compiler {spec.cross_compiler}: "
                          f"apt-get install {spec.cross_package}")
    if spec.kind == "cuda":
        use_cuda_toolkit(spec)


def find_cuda_toolkit() -> str | None:
    """Root of a CUDA toolkit that has ``nvcc``: ``$CUDA_PATH``, ``$CUDA_HOME``, the
    ``nvcc`` on PATH, ``/usr/local/cuda``, then the newest ``/usr/local/cuda-*``
    (images often install one there without putting it on PATH)."""
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    versioned = sorted(glob.glob("/usr/local/cuda-*"), key=_cuda_version, reverse=True)
    for root in [*roots, "/usr/local/cuda", *versioned]:
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return root
    return None


def _cuda_version(path: str) -> tuple[int, ...]:
    tail = path.rsplit("-", 1)[-1]
    return tuple(int(p) for p in tail.split(".") if p.isdigit())


def use_cuda_toolkit(spec: TargetSpec) -> str:
    """Put a CUDA toolkit where the build's kernel compile (``nvcc``, see
    ``edge_sr/pipeline/cuda.py``) finds it: ``$CUDA_PATH`` and PATH; returns its root.

    Raises:
        TargetError: No toolkit found.
    """
    root = find_cuda_toolkit()
    if root is None:
        raise TargetError(f"target {spec.name} needs the CUDA toolkit (nvcc) to compile "
                          "kernels: none on PATH, $CUDA_PATH or /usr/local/cuda*")
    os.environ["CUDA_PATH"] = root
    bindir = os.path.join(root, "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return root
