"""docs/results: measurements stored with machine, date and commit, rendered into tables."""

from __future__ import annotations

import json

from edge_sr.benchmark import results

BENCH = [{"model": "fsrcnn_x2", "target": "host", "scale": 2, "input": [1, 1, 36, 64],
          "gmac": 0.03, "cpu": {"cores": 2, "isa": "avx512"}, "peak_gflops": 100.0,
          "runtimes": {"onnxruntime_fp32": {"median_ms": 10.0, "p90_ms": 11.0,
                                            "gmacs_per_s": 3.0, "peak_fraction": 0.06,
                                            "vs_onnxruntime_fp32": 1.0},
                       "tvm_tuned_fp32": {"median_ms": 4.0, "p90_ms": 4.5, "gmacs_per_s": 7.5,
                                          "peak_fraction": 0.15, "vs_onnxruntime_fp32": 2.5}}}]
ZOO = [{"model": "fsrcnn_x2", "dataset": d, "scale": 2, "psnr": p, "ssim": 0.95,
        "bicubic_psnr": 33.6, "bicubic_ssim": 0.93, "published_psnr": pub,
        "published_ssim": None, "training": {"steps": 1000, "hours": 0.5, "device": "cpu"}}
       for d, p, pub in (("set5", 36.5, 37.0), ("set14", 32.1, None))]


def test_a_loaded_bench_adds_the_slowdown_table():
    loaded = json.loads(json.dumps(BENCH))
    loaded[0]["load"] = 2
    loaded[0]["runtimes"]["tvm_tuned_fp32"]["loaded"] = {"median_ms": 9.0, "slowdown": 2.25}
    text = results.bench_summary(loaded)
    assert "Slowdown with 2 busy processes" in text
    assert "| fsrcnn_x2 | 36x64 | - | 2.25x |" in text


def test_add_then_render_fills_the_marked_readme_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    path = results.add("bench-host", "bench", BENCH, machine="host x86: test CPU")
    rec = json.loads(path.read_text())
    assert rec["machine"] == "host x86: test CPU" and rec["date"] and rec["commit"]
    results.add("zoo", "zoo", ZOO, machine="host x86: test CPU")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:zoo -->\nold\n<!-- /results:zoo -->\n"
                      "<!-- results:bench-host -->\n<!-- /results:bench-host -->\nend\n")
    out = tmp_path / "results.md"
    records = results.load(tmp_path / "results")
    text = results.render_readme(readme.read_text(), records)
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "| fsrcnn_x2 | x2 | 36.50 / 0.9500 (37.00) | 32.10 / 0.9500 | 1,000 steps" in text
    assert "| model | input | onnxruntime_fp32 | tvm_tuned_fp32 |" in text
    assert "| fsrcnn_x2 | 36x64 | 10.0 (1.00x) | 4.0 (2.50x) |" in text
    assert "Slowdown" not in text  # no --load: no slowdown table
    assert text.count("host x86: test CPU") == 2  # every table says where it was measured
    out.write_text(results.render_markdown(records))
    assert "## bench-host" in out.read_text() and "## zoo" in out.read_text()
    # rendering twice changes nothing: the sections are replaced, not appended to
    assert results.render_readme(text, records) == text
