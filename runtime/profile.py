"""Timing on the device: per-kernel times of a module (TVM runtime + numpy only), and the
latency of the benchmark's peers where they are installed: ONNX Runtime and ncnn.

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


def stats(ms: list[float]) -> dict:
    """Median, p90, min (ms) of repeated calls: the layout of every latency in
    ``edge-sr bench``."""
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "runs": len(a)}


def time_calls(run, repeat: int, warmup: int = 1) -> dict:
    """``stats`` of the wall time of ``run()`` over ``repeat`` calls after ``warmup``
    calls."""
    for _ in range(warmup):
        run()
    ms = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        ms.append((time.perf_counter() - t0) * 1e3)
    return stats(ms)


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
    x = sample_input(shape)
    name = sess.get_inputs()[0].name
    return {**time_calls(lambda: sess.run(None, {name: x}), repeat),
            "onnxruntime": ort.__version__, "threads": opts.intra_op_num_threads}


def ncnn_net(param: str, weights: str, threads: int = 0):
    """An ncnn network computing in float32, as a function (1,C,H,W) -> (1,C',H',W').

    ncnn's defaults compute in float16 where the Arm CPU has it (and store activations in
    it); the fp32 row turns that off. ``threads`` 0: one per physical core.

    Returns:
        ``(run, opt)``: the function and the network's ``ncnn.Option``.
    """
    import ncnn

    from .threads import physical_cores

    net = ncnn.Net()
    opt = net.opt
    opt.num_threads = threads or physical_cores()
    opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = False
    net.load_param(param)
    net.load_model(weights)

    def run(x: np.ndarray) -> np.ndarray:
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(np.ascontiguousarray(x[0], np.float32)))
        _, out = ex.extract("out0")
        return np.array(out)[None]

    run.net = net  # for ``ncnn_profile``, which extracts inner blobs
    return run, opt


def ncnn_default_precision() -> str:
    """What ncnn computes in by default here: ``f16`` on an Arm CPU with half-precision
    arithmetic (``asimdhp``), else ``f32``."""
    import ncnn

    return "f16" if ncnn.cpu_support_arm_asimdhp() else "f32"


def ncnn_bench(param: str, weights: str, shape: list[int], repeat: int = 10) -> dict:
    """Median/p90/min latency (ms) of an ncnn model (float32, one thread per physical
    core) on this machine."""
    import ncnn

    run, opt = ncnn_net(param, weights)
    x = sample_input(shape)
    return {**time_calls(lambda: run(x), repeat), "ncnn": ncnn.__version__,
            "threads": opt.num_threads, "default_precision": ncnn_default_precision()}


def ncnn_layers(param: str) -> list[dict]:
    """The layers of an ncnn text ``.param`` file in order: ``{"name", "type",
    "bottoms", "tops"}``."""
    with open(param) as f:
        lines = f.read().split("\n")
    layers = []
    for line in lines[2:]:  # magic number, then the layer and blob counts
        parts = line.split()
        if len(parts) < 4:
            continue
        nb, nt = int(parts[2]), int(parts[3])
        layers.append({"name": parts[1], "type": parts[0],
                       "bottoms": parts[4:4 + nb], "tops": parts[4 + nb:4 + nb + nt]})
    return layers


def ncnn_profile(param: str, weights: str, shape: list[int], repeat: int = 5) -> dict:
    """Per-layer times of an ncnn network (float32, one thread per physical core).

    ncnn's Python API has no per-layer timer, so each layer is timed through the network
    itself: a fresh extractor computes only what a blob needs, so extracting a layer's
    output costs the layer plus its ancestors. A layer's time is that cost less the
    largest cost of its inputs (the median over ``repeat`` rounds of every layer), which
    is exact when the ancestors of one input contain the others' (chains, residual adds,
    ghost concats of one producer). Each cost includes unpacking the extracted blob from
    ncnn's 4-channel packing, so a layer's time carries the difference of two unpackings.

    Returns:
        ``{"total_ms", "rows": [{"layer", "type", "output", "ms", "cumulative_ms"}],
        "ncnn", "threads"}``; ``total_ms`` is the whole network's median time.
    """
    import ncnn

    run, opt = ncnn_net(param, weights)
    net = run.net
    inp = sample_input(shape)
    x = ncnn.Mat(np.ascontiguousarray(inp[0], np.float32))
    run(inp)  # warm-up: packing and workspaces

    def cost(blob: str) -> tuple[float, list]:
        t0 = time.perf_counter()
        ex = net.create_extractor()
        ex.input("in0", x)
        _, out = ex.extract(blob)
        return (time.perf_counter() - t0) * 1e3, list(np.array(out).shape)

    layers = [la for la in ncnn_layers(param) if la["type"] != "Input"]
    rounds, outputs = [], {}
    for _ in range(repeat):  # every layer once per round: a drifting machine drifts
        cum, own = {"in0": 0.0}, {}  # less within a round than across the layers
        for la in layers:
            ms, outputs[la["name"]] = cost(la["tops"][0])
            own[la["name"]] = ms - max((cum.get(b, 0.0) for b in la["bottoms"]), default=0.0)
            cum.update(dict.fromkeys(la["tops"], ms))
        rounds.append((cum, own))
    rows = [{"layer": la["name"], "type": la["type"],
             "output": [int(d) for d in outputs[la["name"]]],
             "ms": max(float(np.median([own[la["name"]] for _, own in rounds])), 0.0),
             "cumulative_ms": float(np.median([cum[la["tops"][0]] for cum, _ in rounds]))}
            for la in layers]
    total = time_calls(lambda: run(inp), repeat)["median_ms"]
    return {"total_ms": total, "rows": rows, "ncnn": ncnn.__version__,
            "threads": opt.num_threads}


def register_peers() -> None:
    """Register ``edge_sr.ort_bench(file, shape_json, repeat) -> json``,
    ``edge_sr.ncnn_bench(param_file, bin_file, shape_json, repeat) -> json`` and
    ``edge_sr.ncnn_profile`` (same arguments; files: uploads); each answers with an error
    object when its peer is not installed there."""
    import tvm

    def path(name: str) -> str:
        return tvm.get_global_func("tvm.rpc.server.workpath")(name)

    def ort(name: str, shape_json: str, repeat: int) -> str:
        try:
            return json.dumps(ort_bench(path(name), json.loads(shape_json), int(repeat)))
        except ImportError:
            return json.dumps({"error": "onnxruntime is not installed on the device"})

    def ncnn_remote(fn):  # edge_sr.ncnn_bench and edge_sr.ncnn_profile: the same arguments
        def remote(param: str, weights: str, shape_json: str, repeat: int) -> str:
            try:
                return json.dumps(fn(path(param), path(weights), json.loads(shape_json),
                                     int(repeat)))
            except ImportError:
                return json.dumps({"error": "ncnn is not installed on the device"})
        return remote

    tvm.register_global_func("edge_sr.ort_bench", ort, override=True)
    tvm.register_global_func("edge_sr.ncnn_bench", ncnn_remote(ncnn_bench), override=True)
    tvm.register_global_func("edge_sr.ncnn_profile", ncnn_remote(ncnn_profile), override=True)
