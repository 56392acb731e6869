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
    timeout: float = 300.0  # RPC session seconds (the session every device runtime shares)
    _reference: np.ndarray | None = field(default=None, init=False, repr=False)
    _session: object = field(default=None, init=False, repr=False)

    def max_abs_diff(self, out: np.ndarray) -> float:
        """Largest difference of a runtime's output from PyTorch's on this input."""
        if self._reference is None:
            with torch.no_grad():
                self._reference = self.model(torch.from_numpy(self.x)).numpy()
        return float(np.abs(np.asarray(out, np.float32) - self._reference).max())

    def session(self):
        """The device's RPC session, opened once: an RPC server serves one session at a
        time, and the runtimes' timings alternate within it."""
        if self._session is None:
            from ..device.rpc import connect

            self._session = connect(self.device, timeout=self.timeout)
        return self._session


@dataclass
class Timed:
    """A runtime ready to be timed: built, loaded, its output checked.

    Attributes:
        timer: Times ``case.repeat`` calls after a warm-up; returns ``stats``' layout.
        info: Fields reported beside the timings (``max_abs_diff``, ``threads``...).
        settle: Runs before each ``timer()``: a runtime that adapts to the machine's load
            looks at it there (an int it returns is recorded as that run's ``threads``).
    """

    timer: Callable[[], dict]
    info: dict = field(default_factory=dict)
    settle: Callable[[], object] | None = None

    def run(self) -> dict:
        """One timed batch of calls."""
        threads = self.settle() if self.settle else None
        out = self.timer()
        return {**out, "threads": threads} if isinstance(threads, int) else out


def torch_eager(case: Case) -> Timed | dict:
    if case.device:
        return {"error": "not on the device: the device runtime has no torch"}
    x = torch.from_numpy(case.x)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def run():
        with torch.no_grad():
            case.model(x)

    return Timed(lambda: time_calls(run, case.repeat), {"threads": torch.get_num_threads()})


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


def onnxruntime(case: Case, int8: bool) -> Timed:
    from ..baselines.onnxrt import session

    path = _ort_model(case, int8)
    if case.device:  # ONNX Runtime on the device, through our RPC server's edge_sr.ort_bench
        import json

        sess = case.session()
        sess.upload(str(path), target=path.name)
        remote = sess.get_function("edge_sr.ort_bench")
        return Timed(lambda: json.loads(remote(path.name, json.dumps(list(case.x.shape)),
                                               case.repeat)))
    run = session(path)
    return Timed(lambda: time_calls(lambda: run(case.x), case.repeat),
                 {"max_abs_diff": case.max_abs_diff(run(case.x))})


def openvino(case: Case) -> Timed | dict:
    """OpenVINO's CPU plugin on the exported ONNX model, in float32 (see baselines)."""
    if case.device:
        return {"error": "not on the device: the emulated Pi has no OpenVINO"}
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {"error": "openvino is not installed (pip install -e '.[openvino]')"}
    from ..baselines.openvino import default_precision, session

    run = session(_ort_model(case, int8=False), precision="f32")
    return Timed(lambda: time_calls(lambda: run(case.x), case.repeat),
                 {"max_abs_diff": case.max_abs_diff(run(case.x)),
                  "default_precision": default_precision()})


def _calibration(case: Case) -> np.ndarray:
    """The crops our quantizer and ONNX Runtime's calibrate on."""
    from ..quant import QuantConfig, calibration_crops

    q = QuantConfig()
    crops, _ = calibration_crops(tuple(q.datasets), case.spec.scale, case.spec.colour, q.crop,
                                 q.calib_images, q.seed)
    return np.ascontiguousarray(crops)


def executorch(case: Case, int8: bool) -> Timed | dict:
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
    info = {"max_abs_diff": case.max_abs_diff(run(case.x)), "threads": et.thread_count()}
    if portable:
        info["portable_ops"] = portable
    return Timed(lambda: time_calls(lambda: run(case.x), case.repeat), info)


def ncnn(case: Case) -> Timed | dict:
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

        sess = case.session()
        for f in (param, weights):
            sess.upload(str(f), target=f.name)
        remote = sess.get_function("edge_sr.ncnn_bench")
        return Timed(lambda: json.loads(remote(param.name, weights.name,
                                               json.dumps(list(shape)), case.repeat)))
    from runtime.profile import ncnn_default_precision, ncnn_net

    run, opt = ncnn_net(str(param), str(weights))
    return Timed(lambda: time_calls(lambda: run(case.x), case.repeat),
                 {"max_abs_diff": case.max_abs_diff(run(case.x)), "threads": opt.num_threads,
                  "default_precision": ncnn_default_precision()})


def tvm_module(case: Case, dtype: str, tuned: bool, scheduled: bool = True) -> Timed:
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
    # the artifact lives as long as the bench's scratch folder: the module is timed in
    # rounds after every runtime is ready
    tmp = tempfile.mkdtemp(dir=case.work, prefix=f"tvm-{dtype}-")
    art = build(BuildConfig(model=case.name, target=case.target, size=(h, w), dtype=dtype,
                            out=tmp, reference_dataset="set5" if dtype == "int8" else "",
                            use_tuning=tuned, default_schedule=scheduled,
                            enforce_guard=False, fallback=False))
    manifest = json.loads((art / "manifest.json").read_text())
    sess = None
    if case.device:
        from ..harness.remote import remote_engine

        sess = case.session()
        engine = remote_engine(sess, art, manifest)
    else:
        engine = load_local(art)
    x = tvm.runtime.tensor(case.x, engine.device)
    info = {"max_abs_diff": case.max_abs_diff(engine.func(x).numpy()),
            "tuning": manifest["tuning"]["state"],
            "kernels_tuned": f"{manifest['tuning']['tuned']}/{manifest['tuning']['kernels']}"}
    if dtype == "int8":
        q = manifest["quality"]
        info.update(set5_psnr=q["psnr_int8"], set5_drop=q["drop"],
                    float_layers=q["float_layers"])
    repeat = case.repeat if scheduled else min(case.repeat, 3)  # unscheduled: seconds
    timer = engine.vm.time_evaluator("main", engine.device, number=1, repeat=repeat)
    # TVM's pool sized to the load, as an Engine keeps it between calls
    settle = (lambda: configure_threads(sess)) if sess else (lambda: configure_pool(probe=True))
    return Timed(lambda: stats([t * 1e3 for t in timer(x).results]), info, settle)


# Each prepares its runtime for timing, or says in one line why it cannot run here.
RUNNERS: dict[str, Callable[[Case], Timed | dict]] = {
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
