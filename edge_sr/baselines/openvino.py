"""OpenVINO as a peer on x86 (and Arm) CPUs: the exported ONNX model, compiled for latency.

OpenVINO's CPU plugin runs in bfloat16 by default on CPUs that compute it (AVX512-BF16,
AMX; on this project's Xeon too: its fp32 ONNX model then differs from PyTorch by about
0.02, against 2e-6 in float32). The fp32 row asks for float32 (``INFERENCE_PRECISION_HINT``)
and records what OpenVINO would have chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def cpu_model(path: str | Path, threads: int = 0, precision: str = "f32"):
    """An OpenVINO ``CompiledModel`` on the CPU, latency mode.

    Args:
        path: ONNX (or OpenVINO IR) file.
        threads: Inference threads (0: OpenVINO's choice, its physical cores).
        precision: ``f32``, ``bf16`` or ``f16`` (``""``: the plugin's default).
    """
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), "CPU", config)


def default_precision() -> str:
    """The precision OpenVINO's CPU plugin picks by itself on this machine."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def session(path: str | Path, threads: int = 0,
            precision: str = "f32") -> Callable[[np.ndarray], np.ndarray]:
    """An OpenVINO CPU model as a function (1,C,H,W) float32 -> output."""
    request = cpu_model(path, threads, precision).create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: np.ascontiguousarray(x, np.float32)})
        return request.get_output_tensor(0).data

    return run
