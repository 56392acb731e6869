"""Timing on the device: per-kernel times of a module (TVM runtime + numpy only), and
ONNX Runtime's latency where onnxruntime is installed (the benchmark's peer).

The Relax VM calls an instrument before and after every kernel; timing between the two
gives each kernel's share of one forward pass. Registered on the RPC server as
``edge_sr.profile`` so the host can profile a module on the device.
"""

from __future__ import annotations

import json
import time

import numpy as np


def sample_input(shape: list[int], dtype: str = "float32") -> np.ndarray:
    """A seeded random input of a module's shape and image dtype (float32 on [0, 1] or
    uint8 pixels, see ``--io``)."""
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


def profile_module(lib_path: str, shape: list[int], repeat: int = 5,
                   dtype: str = "float32") -> list[dict]:
    """Run ``main`` on a random input ``repeat`` times (after a warm-up) and time each call.

    Returns:
        One entry per kernel call in execution order: ``{"kernel", "args", "ms"}`` (the
        median over the repeats); ``vm.builtin.*`` bookkeeping calls are left out.
    """
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from .threads import configure_pool

    configure_pool()  # the pool load_local gives: created at its largest, one per core
    dev = tvm.cpu()
    vm = VirtualMachine(tvm.runtime.load_module(lib_path), dev)
    runs: list[list[tuple[str, list, float]]] = []
    start: dict[int, float] = {}

    def instrument(func, symbol, before, ret, *args):
        sym = str(symbol)
        if sym.startswith("vm.builtin"):
            return 0
        if before:
            start[0] = time.perf_counter()
        else:
            shapes = [list(a.shape) for a in args if hasattr(a, "shape")]
            runs[-1].append((sym, shapes, (time.perf_counter() - start[0]) * 1e3))
        return 0

    vm.set_instrument(instrument)
    x = tvm.runtime.tensor(sample_input(shape, dtype), dev)
    for _ in range(repeat + 1):
        runs.append([])
        vm["main"](x)
    timed = runs[1:]
    return [{"kernel": sym, "args": shapes,
             "ms": float(np.median([r[i][2] for r in timed]))}
            for i, (sym, shapes, _) in enumerate(timed[0])]


def register() -> None:
    """Register ``edge_sr.profile(file, input_json, repeat) -> json`` (file: an upload;
    input_json: the input shape, or ``{"shape", "dtype"}``)."""
    import tvm

    def remote(name: str, input_json: str, repeat: int) -> str:
        path = tvm.get_global_func("tvm.rpc.server.workpath")(name)
        spec = json.loads(input_json)
        shape, dtype = (spec["shape"], spec["dtype"]) if isinstance(spec, dict) else (
            spec, "float32")
        return json.dumps(profile_module(path, shape, int(repeat), dtype))

    tvm.register_global_func("edge_sr.profile", remote, override=True)


def ort_bench(model_path: str, shape: list[int], repeat: int = 10) -> dict:
    """Median/p90/min latency (ms) of an ONNX model under ONNX Runtime on this machine.

    ORT runs one thread per physical core, set explicitly: its own count comes from the
    cpuinfo library, which fails where ``/sys`` is missing (the emulated Pi's chroot) and
    then leaves ORT on one thread, half its speed on two cores.
    """
    import onnxruntime as ort

    from .threads import physical_cores

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = physical_cores()
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        ms.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "runs": repeat, "onnxruntime": ort.__version__,
            "threads": opts.intra_op_num_threads}


def register_ort() -> None:
    """Register ``edge_sr.ort_bench(file, shape_json, repeat) -> json`` (file: an upload);
    it answers with an error object when onnxruntime is not installed on the device."""
    import tvm

    def remote(name: str, shape_json: str, repeat: int) -> str:
        try:
            path = tvm.get_global_func("tvm.rpc.server.workpath")(name)
            return json.dumps(ort_bench(path, json.loads(shape_json), int(repeat)))
        except ImportError:
            return json.dumps({"error": "onnxruntime is not installed on the device"})

    tvm.register_global_func("edge_sr.ort_bench", remote, override=True)
