"""The runtimes compared by ``edge-sr bench``: each one is prepared, then timed on the same
input. A runtime that cannot run here (a missing package) is reported, not fatal."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runtime.profile import stats, time_calls

from ..models import ModelSpec

RUNTIMES = ("torch_eager", "onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32",
            "executorch_fp32", "executorch_int8", "ncnn_fp32", "tvm_untuned_fp32",
            "tvm_default_fp32", "tvm_tuned_fp32", "tvm_tuned_int8")


@dataclass
class Case:
    """What every runtime gets: the model, its spec, the input and a scratch folder."""

    name: str
    spec: ModelSpec
    model: torch.nn.Module
    x: np.ndarray
    work: Path
    repeat: int
    target: str = "host"
    device: str | None = None  # RPC HOST:PORT when the target is another machine
    timeout: float = 300.0  # RPC session seconds per device runtime
    load: int = 0  # spinning processes for the loaded run (0: quiet run only)
    _reference: np.ndarray | None = field(default=None, init=False, repr=False)

    def max_abs_diff(self, out: np.ndarray) -> float:
        """Largest difference of a runtime's output from PyTorch's on this input."""
        if self._reference is None:
            with torch.no_grad():
                self._reference = self.model(torch.from_numpy(self.x)).numpy()
        return float(np.abs(np.asarray(out, np.float32) - self._reference).max())


def measure(case: Case, timer: Callable[[], dict], session=None,
            settle: Callable[[], object] | None = None) -> dict:
    """``timer()`` quiet, then (``case.load`` > 0) again with that many spinning
    processes on the machine that runs it (``session``: the device's RPC session).
    ``settle()`` runs before each: a runtime that adapts to the load looks at it there
    (an int it returns is recorded as that run's ``threads``).

    Returns:
        The quiet figures, with ``loaded`` (figures under load and ``slowdown``, the
        loaded median over the quiet one) when a load was asked for.
    """
    from .load import background_load

    def run() -> dict:
        threads = settle() if settle else None
        out = timer()
        return {**out, "threads": threads} if isinstance(threads, int) else out

    quiet = run()
    if not case.load or "median_ms" not in quiet:
        return quiet
    with background_load(case.load, session=session):
        loaded = run()
    if "median_ms" in loaded:
        loaded["slowdown"] = loaded["median_ms"] / quiet["median_ms"]
    return {**quiet, "loaded": {"processes": case.load, **loaded}}


def torch_eager(case: Case) -> dict:
    if case.device:
        return {"error": "not on the device: the device runtime has no torch"}
    x = torch.from_numpy(case.x)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def run():
        with torch.no_grad():
            case.model(x)

    return {**measure(case, lambda: time_calls(run, case.repeat)),
            "threads": torch.get_num_threads()}


def _ort_model(case: Case, int8: bool) -> Path:
    from ..baselines.onnxrt import export_onnx, quantize_onnx

    fp32 = case.work / f"{case.name}.fp32.onnx"
    if not fp32.exists():
        export_onnx(case.model, case.spec, fp32)
    if not int8:
        return fp32
    out = case.work / f"{case.name}.int8.onnx"
    if not out.exists():
        quantize_onnx(fp32, out, _calibration(case))
    return out


def onnxruntime(case: Case, int8: bool) -> dict:
    from ..baselines.onnxrt import session

    path = _ort_model(case, int8)
    if case.device:  # ONNX Runtime on the device, through our RPC server's edge_sr.ort_bench
        import json

        from ..device.rpc import connect

        sess = connect(case.device, timeout=case.timeout)
        sess.upload(str(path), target=path.name)
        remote = sess.get_function("edge_sr.ort_bench")
        return measure(case, lambda: json.loads(remote(
            path.name, json.dumps(list(case.x.shape)), case.repeat)), session=sess)
    run = session(path)
    return {**measure(case, lambda: time_calls(lambda: run(case.x), case.repeat)),
            "max_abs_diff": case.max_abs_diff(run(case.x))}


def openvino(case: Case) -> dict:
    """OpenVINO's CPU plugin on the exported ONNX model, in float32 (see baselines)."""
    if case.device:
        return {"error": "not on the device: the emulated Pi has no OpenVINO"}
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {"error": "openvino is not installed (pip install -e '.[openvino]')"}
    from ..baselines.openvino import default_precision, session

    run = session(_ort_model(case, int8=False), precision="f32")
    return {**measure(case, lambda: time_calls(lambda: run(case.x), case.repeat)),
            "max_abs_diff": case.max_abs_diff(run(case.x)),
            "default_precision": default_precision()}


def _calibration(case: Case) -> np.ndarray:
    """The crops our quantizer and ONNX Runtime's calibrate on."""
    from ..quant import QuantConfig, calibration_crops

    q = QuantConfig()
    crops, _ = calibration_crops(tuple(q.datasets), case.spec.scale, case.spec.colour, q.crop,
                                 q.calib_images, q.seed)
    return np.ascontiguousarray(crops)


def executorch(case: Case, int8: bool) -> dict:
    """ExecuTorch's XNNPACK backend (``baselines.executorch_xnnpack``), on this machine;
    int8: XNNPACK's PT2E quantizer on our calibration crops, tiled to the input's size."""
    from ..baselines import executorch_xnnpack as et

    if case.device:
        return {"error": "not on the device: its runtime has no torch, which ExecuTorch's "
                         "Python runtime needs"}
    if not et.available():
        return {"error": "executorch is not installed (pip install -e '.[executorch]')"}
    shape = case.x.shape
    path = case.work / f"{case.name}.{'x'.join(map(str, shape))}.{'int8' if int8 else 'fp32'}.pte"
    calib = et.tile_to(_calibration(case), shape) if int8 else None
    portable = et.export_pte(case.model, shape, path, calib=calib)
    run = et.session(path)
    out = {**measure(case, lambda: time_calls(lambda: run(case.x), case.repeat)),
           "max_abs_diff": case.max_abs_diff(run(case.x)), "threads": et.thread_count()}
    return {**out, "portable_ops": portable} if portable else out


def ncnn(case: Case) -> dict:
    """ncnn in float32 (``baselines.ncnn_pnnx``), converted by pnnx at the input's shape;
    on this machine, or on the device over RPC (``edge_sr.ncnn_bench``)."""
    from ..baselines import ncnn_pnnx

    if not ncnn_pnnx.available():
        return {"error": "ncnn is not installed (pip install -e '.[ncnn]')"}
    shape = case.x.shape
    param = ncnn_pnnx.export_ncnn(
        case.model, shape, case.work / f"{case.name}.{'x'.join(map(str, shape))}.ncnn")
    weights = param.with_suffix(".bin")
    if case.device:
        import json

        from ..device.rpc import connect

        sess = connect(case.device, timeout=case.timeout)
        for f in (param, weights):
            sess.upload(str(f), target=f.name)
        remote = sess.get_function("edge_sr.ncnn_bench")
        return measure(case, lambda: json.loads(remote(
            param.name, weights.name, json.dumps(list(shape)), case.repeat)), session=sess)
    from runtime.profile import ncnn_default_precision, ncnn_net

    run, opt = ncnn_net(str(param), str(weights))
    return {**measure(case, lambda: time_calls(lambda: run(case.x), case.repeat)),
            "max_abs_diff": case.max_abs_diff(run(case.x)), "threads": opt.num_threads,
            "default_precision": ncnn_default_precision()}


def tvm_module(case: Case, dtype: str, tuned: bool, scheduled: bool = True) -> dict:
    """Build for the target at the input's size and time the VM with ``time_evaluator``
    (locally, or on the device over RPC).

    ``tuned``: apply the committed tuning database; ``scheduled``: default schedules for
    the kernels it does not cover (neither: TVM's unscheduled kernels)."""
    import json

    import tvm

    from runtime.engine import load_local
    from runtime.threads import configure_pool

    from ..device.rpc import configure_threads
    from ..pipeline import BuildConfig, build

    h, w = case.x.shape[2:]
    with tempfile.TemporaryDirectory(dir=case.work) as tmp:
        art = build(BuildConfig(model=case.name, target=case.target, size=(h, w), dtype=dtype,
                                out=tmp, reference_dataset="set5" if dtype == "int8" else "",
                                use_tuning=tuned, default_schedule=scheduled,
                                enforce_guard=False, fallback=False))
        manifest = json.loads((art / "manifest.json").read_text())
        sess = None
        if case.device:
            from ..device.rpc import connect
            from ..harness.remote import remote_engine

            sess = connect(case.device, timeout=case.timeout)
            engine = remote_engine(sess, art, manifest)
        else:
            engine = load_local(art)
        x = tvm.runtime.tensor(case.x, engine.device)
        diff = case.max_abs_diff(engine.func(x).numpy())
        repeat = case.repeat if scheduled else min(case.repeat, 3)  # unscheduled: seconds
        timer = engine.vm.time_evaluator("main", engine.device, number=1, repeat=repeat)
        # TVM's pool sized to the load, as an Engine keeps it between calls
        settle = (lambda: configure_threads(sess)) if sess else (
            lambda: configure_pool(probe=True))
        out = measure(case, lambda: stats([t * 1e3 for t in timer(x).results]), session=sess,
                      settle=settle)
    out = {**out, "max_abs_diff": diff, "tuning": manifest["tuning"]["state"],
           "kernels_tuned": f"{manifest['tuning']['tuned']}/{manifest['tuning']['kernels']}"}
    if dtype == "int8":
        q = manifest["quality"]
        out["set5_psnr"], out["set5_drop"] = q["psnr_int8"], q["drop"]
        out["float_layers"] = q["float_layers"]
    return out


RUNNERS: dict[str, Callable[[Case], dict]] = {
    "torch_eager": torch_eager,
    "onnxruntime_fp32": lambda c: onnxruntime(c, int8=False),
    "onnxruntime_int8": lambda c: onnxruntime(c, int8=True),
    "openvino_fp32": openvino,
    "executorch_fp32": lambda c: executorch(c, int8=False),
    "executorch_int8": lambda c: executorch(c, int8=True),
    "ncnn_fp32": ncnn,
    "tvm_untuned_fp32": lambda c: tvm_module(c, "float32", tuned=False, scheduled=False),
    "tvm_default_fp32": lambda c: tvm_module(c, "float32", tuned=False),
    "tvm_tuned_fp32": lambda c: tvm_module(c, "float32", tuned=True),
    "tvm_tuned_int8": lambda c: tvm_module(c, "int8", tuned=True),
}
