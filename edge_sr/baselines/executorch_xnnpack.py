"""ExecuTorch with its XNNPACK backend as a peer: PyTorch's own edge runtime.

The model is exported with ``torch.export`` at one input shape, every node lowered to
XNNPACK (``XnnpackPartitioner``), written as a ``.pte`` program and run by ExecuTorch's
Python runtime with one XNNPACK thread per physical core.

Transposed convolutions are exported in their exact sub-pixel form (``subpixel_deconv``,
the rewrite TVM builds get too): XNNPACK's deconvolution runs FSRCNN's 9x9 stride-2
one-channel layer slowly, fsrcnn_x2 at 360x640 taking 626 ms as exported against 73 ms in
the sub-pixel form (host x86, 2 threads).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.torch_passes import subpixel_deconv


def available() -> bool:
    """Whether ExecuTorch (with its XNNPACK backend) is installed."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: F401
            XnnpackPartitioner,
        )
        from executorch.runtime import Runtime  # noqa: F401
    except ImportError:
        return False
    return True


# Graph plumbing around the delegate, not operators.
_GLUE = {"executorch_call_delegate", "getitem"}


def _op_name(target) -> str:
    """``aten.cat.default`` -> ``cat``."""
    parts = getattr(target, "__name__", str(target)).split(".")
    return parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[-1]


def exported(model: nn.Module, shape: tuple[int, ...]) -> torch.export.ExportedProgram:
    """The graph handed to XNNPACK: the deploy form with deconvolutions in sub-pixel form."""
    with torch.no_grad():
        return torch.export.export(subpixel_deconv(model.eval()), (torch.rand(*shape),))


def quantized(model: nn.Module, shape: tuple[int, ...],
              calib: np.ndarray) -> torch.export.ExportedProgram:
    """The int8 graph: XNNPACK's own PT2E quantizer (8-bit activations, per-channel
    symmetric weights), calibrated on ``calib`` images of ``shape``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(exported(model, shape).module(), quantizer)
    with torch.no_grad():
        for image in calib:
            prepared(torch.from_numpy(np.ascontiguousarray(image[None], np.float32)))
        return torch.export.export(convert_pt2e(prepared), (torch.rand(*shape),))


def tile_to(crops: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Calibration crops (N, C, c, c) repeated to fill images of ``shape`` (1, C, H, W): a
    static program is calibrated at its own shape, and training images are smaller."""
    _, _, h, w = shape
    reps = (1, 1, -(-h // crops.shape[2]), -(-w // crops.shape[3]))
    return np.tile(crops, reps)[:, :, :h, :w]


def export_pte(model: nn.Module, shape: tuple[int, ...], path: str | Path,
               calib: np.ndarray | None = None) -> list[str]:
    """Lower a deploy-form model to an XNNPACK ``.pte`` program for one input shape.

    Args:
        model: Deploy-form model.
        shape: Its input shape.
        path: Where the program goes.
        calib: Calibration images of ``shape`` for an int8 program (None: float32).

    Returns:
        The operators XNNPACK did not take (e.g. GhostSR's channel concat): they run on
        ExecuTorch's portable kernels, and the report names them.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = exported(model, shape) if calib is None else quantized(model, shape, calib)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    left = sorted({_op_name(n.target) for n in edge.exported_program().graph.nodes
                   if n.op == "call_function" and _op_name(n.target) not in _GLUE})
    Path(path).write_bytes(edge.to_executorch().buffer)
    return left


def session(path: str | Path, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A ``.pte`` program's ``forward`` as a function (1,C,H,W) float32 -> output.

    Args:
        path: The program.
        threads: XNNPACK threads (0: one per physical core).
    """
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    from runtime.threads import physical_cores

    # ExecuTorch's pool defaults to its own count of cores, which reads sysfs files that
    # VMs and containers often lack; set it as the other peers are set.
    portable_lib._unsafe_reset_threadpool(threads or physical_cores())
    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(np.ascontiguousarray(x, np.float32))])[0].numpy()

    return run


def thread_count() -> int:
    """Threads in ExecuTorch's pool now."""
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())
