"""The side-by-side benchmark: every runtime measured on one input, in the JSON layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_sr.benchmark import BenchSpec, bench, default_size
from edge_sr.benchmark.peak import cpu_peak
from edge_sr.benchmark.runtimes import RUNTIMES
from edge_sr.pipeline.builder import BuildError

ROOT = Path(__file__).resolve().parents[2]
ORT = pytest.importorskip("onnxruntime", reason="needs the bench extra (onnxruntime)")


def test_cpu_peak_is_cores_units_lanes_clock():
    p = cpu_peak(cores=4, ghz=2.0)
    assert p["peak_gflops"] == pytest.approx(4 * p["fma_units"] * p["lanes"] * 2 * 2.0)


@pytest.mark.parametrize("dot,factor", [(True, 4), (False, 2)])
def test_int8_peak_counts_the_multiply_adds_per_lane(dot, factor):
    # Cortex-A76 (sdot) and A72 (widening multiply-adds) in a Pi 5 / Pi 4
    p = cpu_peak(4, 2.4, "aarch64", int8_dot=dot)
    assert p["peak_gflops"] == pytest.approx(4 * 2 * 4 * 2 * 2.4, rel=1e-3)
    assert p["int8_peak_gops"] == pytest.approx(factor * p["peak_gflops"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("model, size", [("fsrcnn_tiny_x2", (360, 640)),
                                         ("xlsr_x3", (360, 640)), ("srresnet_b4_x4", (180, 320))])
def test_default_input_gives_a_720p_or_larger_output(tmp_path, model, size):
    from edge_sr.models import get_spec

    scale = get_spec(model).scale
    assert default_size(scale) == size and size[0] * scale >= 720
    res = bench(BenchSpec(model=model, repeat=1, runtimes=("torch_eager",),
                          work=str(tmp_path)))
    assert res["input"] == [1, get_spec(model).channels, *size]
    torch.set_num_threads(torch.get_num_threads())


@pytest.mark.slow
def test_bench_json_has_every_runtime(tmp_path):
    res = bench(BenchSpec(model="fsrcnn_tiny_x2", size=(32, 32), repeat=2, work=str(tmp_path)))
    assert set(res) >= {"model", "target", "input", "runtimes", "peak_gflops", "gmac"}
    assert set(res["runtimes"]) == set(RUNTIMES)
    for name, r in res["runtimes"].items():
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"], (name, r)
        assert r["gmacs_per_s"] > 0 and 0 < r["peak_fraction"] < 1
    assert res["runtimes"]["onnxruntime_fp32"]["vs_onnxruntime_fp32"] == pytest.approx(1.0)
    assert "set5_drop" in res["runtimes"]["tvm_tuned_int8"]
    # every fp32 row computes what PyTorch does (OpenVINO asked for f32, not its bf16)
    for name in ("onnxruntime_fp32", "openvino_fp32", "executorch_fp32", "ncnn_fp32",
                 "tvm_default_fp32", "tvm_tuned_fp32"):
        assert res["runtimes"][name]["max_abs_diff"] < 1e-4, name
    assert res["runtimes"]["openvino_fp32"]["default_precision"] in ("f32", "bf16", "f16")
    torch.set_num_threads(torch.get_num_threads())


@pytest.mark.parametrize("package, runtime", [("openvino", "openvino_fp32"),
                                              ("executorch", "executorch_fp32"),
                                              ("ncnn", "ncnn_fp32")])
def test_a_missing_peer_is_a_one_line_row(tmp_path, monkeypatch, package, runtime):
    import builtins

    real_import = builtins.__import__

    def missing(name, *args, **kw):
        if name.split(".")[0] == package:
            raise ImportError(f"No module named {package!r}")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", missing)
    res = bench(BenchSpec(model="fsrcnn_tiny_x2", size=(16, 16), repeat=1, work=str(tmp_path),
                          runtimes=("onnxruntime_fp32", runtime)))
    assert res["runtimes"][runtime] == {
        "error": f"{package} is not installed (pip install -e '.[{package}]')"}
    assert res["runtimes"]["onnxruntime_fp32"]["median_ms"] > 0


@pytest.mark.slow
def test_cli_writes_json_markdown_and_plots(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge_sr", "bench", "--model", "fsrcnn_tiny_x2",
                           "--size", "32x32", "--repeat", "2", "--out", str(tmp_path), "--json",
                           "--runtimes", "onnxruntime_fp32", "tvm_tuned_fp32"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert set(out["runtimes"]) == {"onnxruntime_fp32", "tvm_tuned_fp32"}
    for name in ("bench.json", "bench.md", "latency.png", "pareto.png"):
        assert (tmp_path / name).stat().st_size > 100, name
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.device
def test_bench_on_the_emulated_pi(tmp_path):
    res = bench(BenchSpec(model="fsrcnn_tiny_x2", target="qemu-aarch64", size=(32, 32),
                          repeat=2, device="127.0.0.1:9090", work=str(tmp_path),
                          runtimes=("torch_eager", "onnxruntime_fp32", "ncnn_fp32",
                                    "tvm_tuned_fp32")))
    rt = res["runtimes"]
    assert "no torch" in rt["torch_eager"]["error"]
    for name in ("onnxruntime_fp32", "ncnn_fp32", "tvm_tuned_fp32"):
        assert rt[name]["median_ms"] > 0, (name, rt[name])
    # ncnn's own choice on QEMU's Arm CPU (asimdhp) is float16; the row asks for float32
    assert rt["ncnn_fp32"]["default_precision"] == "f16"
    assert rt["ncnn_fp32"]["threads"] == res["cpu"]["cores"]
    assert res["cpu"]["machine"] == "aarch64"


@pytest.mark.slow
def test_device_runtimes_open_sessions_with_the_bench_timeout(tmp_path, monkeypatch):
    # SRResNet-16 under emulation: one ORT session (warm-up + timed calls) outlasts 300 s.
    import edge_sr.benchmark as benchmark
    import edge_sr.device.rpc as rpc

    seen = []

    def fake_connect(device, tracker=None, key="", timeout=300):
        seen.append(timeout)
        raise RuntimeError(f"no session (timeout {timeout:g})")

    monkeypatch.setattr(rpc, "connect", fake_connect)
    monkeypatch.setattr(benchmark, "_device_peak",
                        lambda device, tspec: cpu_peak(4, 1.8, "aarch64"))
    res = bench(BenchSpec(model="fsrcnn_tiny_x2", target="qemu-aarch64", size=(32, 32),
                          repeat=1, device="127.0.0.1:1", work=str(tmp_path), timeout=1234,
                          runtimes=("onnxruntime_fp32", "tvm_tuned_fp32")))
    # the runtimes share one session (an RPC server serves one at a time): it lasts the
    # per-runtime timeout times the runtimes; each runtime that needs it tries to open it
    assert seen == [2 * 1234, 2 * 1234]
    assert all("timeout 2468" in r["error"] for r in res["runtimes"].values())
    with pytest.raises(BuildError, match="--timeout must be positive"):
        bench(BenchSpec(model="fsrcnn_tiny_x2", timeout=0))


def test_load_times_each_runtime_quiet_then_loaded_and_stops_its_helpers(tmp_path):
    from runtime import load

    res = bench(BenchSpec(model="fsrcnn_tiny_x2", size=(32, 32), repeat=3, work=str(tmp_path),
                          load=1, runtimes=("onnxruntime_fp32", "tvm_default_fp32")))
    assert res["load"] == 1
    for name, r in res["runtimes"].items():
        loaded = r["loaded"]
        assert loaded["processes"] == 1 and loaded["median_ms"] > 0, name
        assert loaded["slowdown"] == pytest.approx(loaded["median_ms"] / r["median_ms"])
    assert not load._running  # every spinner stopped
    from edge_sr.benchmark.report import markdown

    assert "| slowdown |" in markdown([res])


def test_load_stops_its_helpers_when_the_timed_run_fails():
    from edge_sr.benchmark.load import background_load

    with pytest.raises(RuntimeError, match="boom"):
        with background_load(2) as n:
            from runtime import load

            procs = list(load._running)
            assert n == 2 and len(procs) == 2
            raise RuntimeError("boom")
    assert all(p.returncode is not None for p in procs)


def test_load_out_of_range_is_a_one_line_error():
    with pytest.raises(BuildError, match="--load must be 0..64"):
        bench(BenchSpec(model="fsrcnn_tiny_x2", load=-1))


@pytest.mark.device
def test_load_on_the_emulated_pi(tmp_path):
    res = bench(BenchSpec(model="fsrcnn_tiny_x2", target="qemu-aarch64", size=(32, 32),
                          repeat=2, device="127.0.0.1:9090", work=str(tmp_path), load=1,
                          runtimes=("tvm_default_fp32",)))
    r = res["runtimes"]["tvm_default_fp32"]
    assert r["loaded"]["slowdown"] > 0


def test_latency_chart_of_failed_runtimes_is_written(tmp_path):
    from edge_sr.benchmark.report import plot_latency

    results = [{"model": "srresnet_b16_x4", "target": "rpi4", "input": [1, 3, 32, 32],
                "runtimes": {"tvm_default_fp32": {"error": "--size 32x32 is too small"}}}]
    assert plot_latency(results, tmp_path / "latency.png").stat().st_size > 0


def test_rounds_alternate_the_runtimes_and_take_the_median_of_medians():
    from edge_sr.benchmark.rounds import speedup, time_rounds
    from edge_sr.benchmark.runtimes import Timed

    calls = []

    def timer(name, ms):
        it = iter(ms)

        def run():
            calls.append(name)
            m = next(it)
            if m is None:
                raise RuntimeError("device went away\nRPC session closed")
            return {"median_ms": m, "p90_ms": m + 1, "min_ms": m - 1, "runs": 2}
        return Timed(run)

    ready = {"a": timer("a", [10.0, 30.0, 11.0]), "b": timer("b", [50.0, 20.0, 40.0]),
             "c": timer("c", [5.0, None])}
    res = time_rounds(ready, 3)
    # each round starts one runtime later; a runtime that fails is not timed again
    assert calls == ["a", "b", "c", "b", "c", "a", "a", "b"]
    assert res["a"]["median_ms"] == 11.0 and res["a"]["rounds_ms"] == [10.0, 30.0, 11.0]
    assert res["a"]["min_ms"] == 9.0 and res["a"]["p90_ms"] == 12.0 and res["a"]["runs"] == 6
    assert res["b"]["median_ms"] == 40.0
    assert res["c"] == {"error": "RPC session closed"}
    single = time_rounds({"a": timer("a", [7.0])}, 1)["a"]
    assert single["median_ms"] == 7.0 and "rounds_ms" not in single
    # the ratio pairs each round's timings: b ran 5x, 0.67x, 3.6x a's time
    assert speedup(res["b"], res["a"]) == pytest.approx(40 / 11)
    assert speedup(res["b"], single) == pytest.approx(40 / 7)  # no common rounds: medians


@pytest.mark.slow
def test_bench_rounds_time_each_runtime_per_round_quiet_and_loaded(tmp_path):
    from runtime import load

    res = bench(BenchSpec(model="fsrcnn_tiny_x2", size=(32, 32), repeat=2, work=str(tmp_path),
                          rounds=2, load=1, runtimes=("onnxruntime_fp32", "tvm_default_fp32")))
    for name, r in res["runtimes"].items():
        assert len(r["rounds_ms"]) == 2 and r["runs"] == 4, name
        assert len(r["loaded"]["rounds_ms"]) == 2, name
        assert r["max_abs_diff"] < 1e-4, name
    assert not load._running
    from edge_sr.benchmark.report import markdown

    table = markdown([res])
    assert "median of 2 alternated rounds" in table
    rows = [ln for ln in table.splitlines() if ln.startswith(("| onnx", "| tvm"))]
    assert len(rows) == 2 and all(" ms; " in ln.split("rounds ")[1] for ln in rows)
    with pytest.raises(BuildError, match="--rounds must be at least 1"):
        bench(BenchSpec(model="fsrcnn_tiny_x2", rounds=0))
