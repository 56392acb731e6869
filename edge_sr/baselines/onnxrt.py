"""ONNX Runtime as the peer: fp32 export and static QDQ int8 quantization.

ORT's ``quantize_static`` (QDQ format, per-channel int8 weights, uint8 activations, MinMax
calibration: its defaults) is calibrated on the same training crops our quantizer uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models import ModelSpec


def export_onnx(model: nn.Module, spec: ModelSpec, path: str | Path, opset: int = 17) -> Path:
    """Export a deploy-form model with dynamic H/W (TorchScript exporter, no onnxscript)."""
    path = Path(path)
    x = torch.rand(1, spec.channels, 32, 32)
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], opset_version=opset,
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "H", 3: "W"}})
    return path


def quantize_onnx(fp32: str | Path, int8: str | Path, calib: np.ndarray,
                  per_channel: bool = True) -> Path:
    """Static QDQ quantization of an fp32 ONNX model on calibration inputs (N,C,H,W)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calib[i : i + 1] for i in range(len(calib)))

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"x": item.astype(np.float32)}

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel)
    return Path(int8)


def cpu_session(path: str | Path, threads: int = 0, profile_prefix: str | None = None):
    """An ORT CPU ``InferenceSession`` (``threads`` 0: ORT's choice); with
    ``profile_prefix`` it records ORT's per-node trace (``end_profiling()`` writes it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def session(path: str | Path, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """An ORT CPU session as a function (1,C,H,W) float32 -> output."""
    sess = cpu_session(path, threads)
    return lambda x: sess.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]
