"""The zoo's PSNR-latency trade-off: one output size for every scale, a frontier per scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_sr.benchmark.pareto import (
    blocks,
    format_pareto,
    format_pruning,
    frontier,
    input_size,
)
from edge_sr.models import MODELS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_delivers_the_whole_output_frame(name):
    scale = MODELS[name].scale
    h, w = input_size(scale)
    assert h * scale >= 720 and w * scale >= 1280
    assert (h - 1) * scale < 720 and (w - 8) * scale < 1280  # a row, 8 columns extra at most
    assert w % 8 == 0


def test_blocks_read_from_pruned_names():
    assert blocks("srresnet_b8_x4") == 8 and blocks("srresnet_b16_x4") == 16
    assert blocks("fsrcnn_x2") is None


def _p(model, scale, ms, psnr):
    return {"model": model, "scale": scale, "input": [1, 1, 10, 10], "gmac": 1.0,
            "runtime": "tvm_default_fp32", "latency_ms": ms, "psnr": {"set5": psnr}}


def test_frontier_is_per_scale_and_drops_dominated_models():
    points = [_p("a", 2, 10, 36.0), _p("b", 2, 20, 35.0),   # b: slower and worse
              _p("c", 2, 30, 37.0), _p("d", 4, 50, 30.0),   # d: alone at x4
              {**_p("e", 2, 0, 40.0), "latency_ms": None}]
    del points[-1]["latency_ms"]
    points[-1]["error"] = "failed"                           # untimed: never on it
    assert frontier(points, "set5") == {"a", "c", "d"}
    table = format_pareto(points)
    assert "| b | x2 |" in table and table.count("| yes |") == 3
    assert "error: failed" in table


def test_pruning_table_compares_each_depth_with_the_deepest():
    points = [{**_p(f"srresnet_b{b}_x4", 4, ms, psnr), "blocks": b}
              for b, ms, psnr in ((4, 25.0, 30.0), (16, 100.0, 31.0), (8, 50.0, 30.75))]
    points.append(_p("fsrcnn_x4", 4, 5.0, 30.5))  # not pruned: not a row
    rows = format_pruning(points).splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| 16", "| 8", "| 4"]
    assert "30.75 (-0.25)" in rows[1] and "| 50.0 | 2.00x |" in rows[1]
    assert "| 25.0 | 4.00x |" in rows[2]
    assert format_pruning(points[:1]) == ""


@pytest.mark.slow
def test_pareto_cli_times_and_scores_each_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edge_sr", "pareto", "--model", "fsrcnn_tiny_x2",
         "fsrcnn_s_x2", "--output", "64x96", "--dataset", "set5", "--repeat", "2",
         "--out", str(tmp_path), "--json"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    points = json.loads(proc.stdout)
    assert [p["model"] for p in points] == ["fsrcnn_tiny_x2", "fsrcnn_s_x2"]
    for p in points:
        assert p["input"][-2:] == [32, 48] and p["latency_ms"] > 0
        assert 30 < p["psnr"]["set5"] < 40
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_rounds_alternate_the_models_and_take_the_median(monkeypatch):
    from edge_sr.benchmark import pareto

    calls, ms = [], iter([10.0, 50.0, 30.0, 20.0, 11.0, 40.0])  # a, b, a, b, a, b

    def fake_bench(spec):
        calls.append(spec.model)
        return {"scale": 2, "input": [1, 1, 4, 4], "gmac": 1.0,
                "runtimes": {"tvm_default_fp32": {"median_ms": next(ms)}}}

    monkeypatch.setattr(pareto, "bench", fake_bench)
    monkeypatch.setattr(pareto, "evaluate", lambda cfg: {"mean": {"psnr": 30.0}})
    points = pareto.zoo_points(pareto.ParetoConfig(models=["fsrcnn_x2", "fsrcnn_s_x2"],
                                                   datasets=["set5"], rounds=3))
    assert calls == ["fsrcnn_x2", "fsrcnn_s_x2"] * 3
    assert [p["latency_ms"] for p in points] == [11.0, 40.0]
    assert points[0]["rounds_ms"] == [10.0, 30.0, 11.0]
